import type { IncomingMessage } from 'node:http';
import { Inject, Injectable, Module, type DynamicModule, type MiddlewareConsumer, type NestModule, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { Streams } from '@mfa/contracts';
import type { NatsClients } from '@mfa/messaging';
import { PROJECTION_MISSING_SUBJECT } from '@mfa/projection';
import { admitHttpRequests, HEALTH_CHECKS, InternalRequests, MessagingModule, NATS, NatsHealth, OpsController, REDIS, RedisHealth, RedisModule, REDIS_DECISION_COMMAND_TIMEOUT_MS, redisConnectionFrom, replicatedWritesOf, AuthModule, serverIp } from '@mfa/service-kit';
import type { RedisClient } from '@mfa/projection';
import { DeviceApiController } from './api/device-api.controller.js';
import { DeviceApiService } from './application/device-api.service.js';
import type { Logger } from '@mfa/telemetry';
import { ChallengeStore } from './adapters/challenge.store.js';
import { CsprngCodeGenerator } from './adapters/csprng-code-generator.js';
import { IpLocks } from './adapters/ip-locks.js';
import { Outbox } from './adapters/outbox.js';
import { TenantSettingsCache } from './adapters/tenant-settings.cache.js';
import { ChallengeController } from './api/challenge.controller.js';
import { ChallengeService } from './application/challenge.service.js';
import { OutboxRelay } from './application/outbox-relay.js';
import type { AuthChallengeConfig } from './config.js';
import { CODE_GENERATOR, CONFIG, OUTBOX_MAX_PER_SLOT, PROJECTION_SIGNAL, SERVER_IDENTITY } from './tokens.js';

/** The tenant cache and the per-IP locks are filled before the transport takes the first request, and stopped after the last. */
@Injectable()
class TenantCacheLifecycle implements OnModuleInit, OnApplicationShutdown {
  constructor(
    @Inject(TenantSettingsCache) private readonly tenants: TenantSettingsCache,
    @Inject(IpLocks) private readonly ipLocks: IpLocks,
  ) {}
  async onModuleInit(): Promise<void> {
    await Promise.all([this.tenants.start(), this.ipLocks.start()]);
  }
  async onApplicationShutdown(): Promise<void> {
    await Promise.all([this.tenants.stop(), this.ipLocks.stop()]);
  }
}

/**
 * How long a phone's request to the device API may wait for a slot when the process is saturated:
 * half the reference app's 10 s timeout, so a 503 (with Retry-After) still reaches it in time.
 */
const DEVICE_API_WAIT_MS = 5_000;

/** auth-challenge: challenge.start / verify / status on Redis (one script each) and MFA_CHALLENGES. */
@Module({})
export class AppModule implements NestModule {
  /**
   * The device API's requests take slots of the process's gate (admission.ts) with the verifies
   * and status polls, and like them a phone's pending poll and answer are served before new
   * sign-ins: they finish a push sign-in already started. An activation is no such thing: it
   * waits its turn with the starts, so that activations (which anyone may send) cannot take the
   * lane of the requests that finish sign-ins.
   */
  configure(consumer: MiddlewareConsumer): void {
    const finishesSignIn = (req: IncomingMessage & { originalUrl?: string }) => /^\/device\/v1\/challenges\//.test((req.originalUrl ?? req.url ?? '').split('?')[0]!);
    consumer.apply(admitHttpRequests({ route: 'device-api', first: finishesSignIn, waitMs: DEVICE_API_WAIT_MS })).forRoutes(DeviceApiController);
  }

  static forRoot(config: AuthChallengeConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [
        MessagingModule.forRoot({
          serviceName: 'auth-challenge',
          nats: config,
          log,
          // The tenant cache reads the first, the decisions are recorded on the second, the per-IP
          // locks are read from MFA_FRAUD, its per-IP throttles from MFA_THROTTLES.
          streams: [Streams.userSettings, Streams.challenges, Streams.fraud, Streams.throttles, Streams.state, Streams.deadLetters],
          replicas: config.STREAM_REPLICAS,
        }),
        // Its scripts decide (an SMS, a call, an attempt): a timed-out command may still run, so it
        // is given past any IdP's deadline rather than answered `unavailable` (REDIS_DECISION_COMMAND_TIMEOUT_MS).
        RedisModule.forRoot({
          connection: redisConnectionFrom(config),
          connectionName: 'auth-challenge',
          log,
          wait: replicatedWritesOf(config),
          commandTimeoutMs: REDIS_DECISION_COMMAND_TIMEOUT_MS,
        }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, ChallengeController, DeviceApiController],
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: SERVER_IDENTITY, useValue: { name: config.INSTANCE_NAME, ip: serverIp() } },
        { provide: CODE_GENERATOR, useClass: CsprngCodeGenerator },
        {
          provide: PROJECTION_SIGNAL,
          // Fire and forget on core NATS: the caller is answered `unavailable` either way.
          useFactory: (nats: NatsClients) => (tenantId: string, userId: string) =>
            nats.nc.publish(PROJECTION_MISSING_SUBJECT, JSON.stringify({ tenantId, userId })),
          inject: [NATS],
        },
        { provide: OUTBOX_MAX_PER_SLOT, useValue: config.OUTBOX_MAX_PER_SLOT },
        ChallengeStore,
        Outbox,
        OutboxRelay,
        TenantSettingsCache,
        IpLocks,
        TenantCacheLifecycle,
        ChallengeService,
        {
          provide: DeviceApiService,
          useFactory: (redis: RedisClient, nats: NatsClients, challenges: ChallengeService) =>
            new DeviceApiService(redis, new InternalRequests(nats.nc, config.keyring), challenges, log, undefined, {
              maxPerWindow: config.DEVICE_API_MAX_FAILURES_PER_WINDOW,
              windowSeconds: config.DEVICE_API_FAILURE_WINDOW_SECONDS,
            }),
          inject: [REDIS, NATS, ChallengeService],
        },
        { provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth, redis: RedisHealth) => [nats, redis], inject: [NatsHealth, RedisHealth] },
      ],
    };
  }
}
