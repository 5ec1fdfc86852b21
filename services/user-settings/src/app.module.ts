import { Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { Keyring } from '@mfa/crypto';
import { EventPublisher, type NatsClients } from '@mfa/messaging';
import { UserProjectionWriter } from '@mfa/projection';
import { HEALTH_CHECKS, MessagingModule, NATS, NatsHealth, OpsController } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { ActivationAttempts } from './adapters/activation-attempts.js';
import { EventStore } from './adapters/event-store.js';
import { JetStreamTopology } from './adapters/jetstream-topology.js';
import { closeRedis, createRedis, RedisHealth } from './adapters/redis.js';
import { UserSettingsHandlers } from './api/user-settings.handlers.js';
import { UserProjectorConsumer } from './api/user-projector.consumer.js';
import { UserProjector } from './application/user-projector.js';
import { UserSettingsService } from './application/user-settings.service.js';
import type { UserSettingsConfig } from './config.js';
import { PENDING_TOKEN_LIFETIME_MS } from './domain/user.js';
import { CONFIG, KEYRING, REDIS } from './tokens.js';

/** Closes Redis after handlers and the projector have stopped (onModuleDestroy comes first). */
@Injectable()
class RedisLifecycle implements OnApplicationShutdown {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}
  async onApplicationShutdown(): Promise<void> {
    await closeRedis(this.redis);
  }
}

/**
 * user-settings: the tenant and user aggregates (event-sourced on MFA_USER_SETTINGS), their public
 * API (users.register, users.totp.enroll/activate, tenants.configure) and the Redis user
 * projection that auth-challenge reads.
 */
@Module({})
export class AppModule {
  static forRoot(config: UserSettingsConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [MessagingModule.forRoot({ serviceName: 'user-settings', natsUrl: config.NATS_URL, log })],
      controllers: [OpsController],
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: KEYRING, useValue: config.keyring },
        { provide: REDIS, useFactory: () => createRedis(config.REDIS_URL, log) },
        RedisLifecycle,
        {
          provide: EventStore,
          useFactory: (nats: NatsClients, publisher: EventPublisher) => new EventStore(nats.jsm, publisher),
          inject: [NATS, EventPublisher],
        },
        {
          provide: UserProjectionWriter,
          useFactory: (redis: Redis, keyring: Keyring) => new UserProjectionWriter(redis, keyring),
          inject: [REDIS, KEYRING],
        },
        {
          provide: UserSettingsService,
          useFactory: (store: EventStore, projection: UserProjectionWriter, keyring: Keyring, redis: Redis) =>
            new UserSettingsService({
              store,
              projection,
              keyring,
              log,
              autoCreateTenants: config.MFA_TENANT_AUTO_CREATE,
              totpIssuer: config.MFA_TOTP_ISSUER,
              activationAttempts: new ActivationAttempts(redis, keyring, PENDING_TOKEN_LIFETIME_MS / 1000),
            }),
          inject: [EventStore, UserProjectionWriter, KEYRING, REDIS],
        },
        {
          provide: UserProjector,
          useFactory: (store: EventStore, writer: UserProjectionWriter, keyring: Keyring) => new UserProjector(store, writer, keyring),
          inject: [EventStore, UserProjectionWriter, KEYRING],
        },
        JetStreamTopology,
        UserSettingsHandlers,
        UserProjectorConsumer,
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, redis: Redis) => [nats, new RedisHealth(redis)],
          inject: [NatsHealth, REDIS],
        },
      ],
    };
  }
}
