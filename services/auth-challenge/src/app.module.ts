import { Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { networkInterfaces } from 'node:os';
import { Redis } from 'ioredis';
import type { Keyring } from '@mfa/crypto';
import { ensureStreams, type NatsClients } from '@mfa/messaging';
import { Streams } from '@mfa/contracts';
import { HEALTH_CHECKS, LOGGER, MessagingModule, NATS, NatsHealth, OpsController, type HealthCheck } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { ChallengeStore } from './adapters/challenge.store.js';
import { TenantSettingsCache } from './adapters/tenant-settings.cache.js';
import { ChallengeHandlers } from './api/challenge.handlers.js';
import type { AuthChallengeConfig } from './config.js';
import { AUTH_CONFIG, KEYRING, REDIS, SERVER_IDENTITY } from './tokens.js';

class RedisHealth implements HealthCheck {
  readonly name = 'redis';
  constructor(private readonly redis: Redis) {}
  async check(): Promise<void> {
    await this.redis.ping();
  }
}

/** Streams first (the tenant cache reads one, the handlers publish to another), then the cache. */
@Injectable()
class Startup implements OnModuleInit, OnApplicationShutdown {
  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(AUTH_CONFIG) private readonly config: AuthChallengeConfig,
    private readonly tenants: TenantSettingsCache,
  ) {}
  async onModuleInit(): Promise<void> {
    await ensureStreams(this.nats.jsm, [Streams.userSettings, Streams.challenges, Streams.deadLetters], this.config.STREAM_REPLICAS);
    await this.tenants.start();
  }
  async onApplicationShutdown(): Promise<void> {
    await this.tenants.stop();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

function serverIp(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (i.family === 'IPv4' && !i.internal) return i.address;
  }
  return '127.0.0.1';
}

@Module({})
export class AppModule {
  static forRoot(config: AuthChallengeConfig, keyring: Keyring, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [MessagingModule.forRoot({ serviceName: 'auth-challenge', natsUrl: config.NATS_URL, log })],
      controllers: [OpsController],
      providers: [
        { provide: AUTH_CONFIG, useValue: config },
        { provide: KEYRING, useValue: keyring },
        { provide: SERVER_IDENTITY, useValue: { name: config.INSTANCE_NAME, ip: serverIp() } },
        {
          provide: REDIS,
          // Auto-pipelining batches concurrent requests' scripts into one write: the hot path.
          useFactory: () => new Redis(config.REDIS_URL, { enableAutoPipelining: true, maxRetriesPerRequest: 2, lazyConnect: false }),
        },
        { provide: ChallengeStore, useFactory: (redis: Redis) => new ChallengeStore(redis), inject: [REDIS] },
        {
          provide: TenantSettingsCache,
          useFactory: (nats: NatsClients, logger: Logger) => new TenantSettingsCache(nats.js, logger),
          inject: [NATS, LOGGER],
        },
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, redis: Redis) => [nats, new RedisHealth(redis)],
          inject: [NatsHealth, REDIS],
        },
        Startup,
        ChallengeHandlers,
      ],
    };
  }
}
