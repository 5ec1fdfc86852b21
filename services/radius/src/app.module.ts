import { Inject, Injectable, Module, type BeforeApplicationShutdown, type DynamicModule, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import type { Keyring } from '@mfa/crypto';
import type { NatsClients } from '@mfa/messaging';
import { HEALTH_CHECKS, KEYRING, LOGGER, MessagingModule, NATS, NatsHealth, OpsController, REDIS, RedisHealth, RedisModule } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { ChallengeApi } from './adapters/challenge-api.js';
import { SeenRequests } from './adapters/seen-requests.js';
import { StateStore } from './adapters/state-store.js';
import { RadiusListener } from './api/radius.listener.js';
import { DuplicateCache } from './application/duplicate-cache.js';
import { RadiusService } from './application/radius.service.js';
import { ClientDirectory } from './domain/clients.js';
import { redisOf, type RadiusConfig } from './config.js';

/** How often a push or call being waited for is asked about. */
const POLL_MS = 500;
/**
 * How long a shutdown gives the answers under way: the longest one can take (RADIUS_WAIT_SECONDS
 * and 1 s for a push or a call), and a second more for the Redis calls of States and the send.
 */
export const drainMsOf = (service: RadiusService): number => service.longestAnswerMs + 1_000;

/**
 * Opens the RADIUS socket once everything it needs is up, and closes it first on the way down:
 * before Nest closes HTTP (beforeApplicationShutdown), so that during the drain /health answers
 * 503 and /metrics still counts the answers under way; NATS and Redis close after it
 * (onApplicationShutdown).
 */
@Injectable()
class ListenerLifecycle implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown {
  constructor(
    @Inject(RadiusListener) private readonly listener: RadiusListener,
    @Inject(DuplicateCache) private readonly cache: DuplicateCache,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(ClientDirectory) private readonly clients: ClientDirectory,
    @Inject(RadiusService) private readonly service: RadiusService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const bound = await this.listener.start();
    if (this.clients.size === 0) this.log.warn('no RADIUS_CLIENTS: the RADIUS port is open but every datagram is dropped');
    this.log.info('radius listening', { ...bound, clients: this.clients.size });
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.listener.stop(drainMsOf(this.service));
  }

  onApplicationShutdown(): void {
    this.cache.close();
  }
}

/**
 * radius: the RADIUS front (RFC 2865 over UDP). VPNs, Wi-Fi controllers and RADIUS servers ask it
 * to sign users in; it answers through the public challenge API over NATS as each client's
 * tenant, and keeps the States of its Access-Challenges in Redis.
 */
@Module({})
export class AppModule {
  static forRoot(config: RadiusConfig, log: Logger): DynamicModule {
    const clients = new ClientDirectory(config.RADIUS_CLIENTS, config.RADIUS_PASSWORD_MODE);
    return {
      module: AppModule,
      imports: [
        // A client of the API: no streams of its own.
        MessagingModule.forRoot({ serviceName: 'radius', nats: config, log, streams: [], replicas: config.STREAM_REPLICAS }),
        RedisModule.forRoot({ ...redisOf(config), log }),
      ],
      controllers: [OpsController],
      providers: [
        { provide: ClientDirectory, useValue: clients },
        { provide: DuplicateCache, useFactory: () => new DuplicateCache({ clients: clients.size }) },
        {
          provide: RadiusService,
          useFactory: (nats: NatsClients, redis: RedisClient, keyring: Keyring, cache: DuplicateCache) =>
            new RadiusService(
              clients,
              new ChallengeApi(nats.nc, config.auth.platformKey),
              new StateStore(redis, keyring),
              cache,
              { waitMs: config.RADIUS_WAIT_SECONDS * 1000, pollMs: POLL_MS },
              log,
              new SeenRequests(redis, config.RADIUS_REPLAY_WINDOW_SECONDS * 1000),
            ),
          inject: [NATS, REDIS, KEYRING, DuplicateCache],
        },
        {
          provide: RadiusListener,
          useFactory: (service: RadiusService) => new RadiusListener(service, { address: config.RADIUS_BIND, port: config.RADIUS_PORT, receiveBufferBytes: config.RADIUS_RECEIVE_BUFFER_BYTES }, log),
          inject: [RadiusService],
        },
        ListenerLifecycle,
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, redis: RedisHealth, listener: RadiusListener) => [nats, redis, listener],
          inject: [NatsHealth, RedisHealth, RadiusListener],
        },
      ],
    };
  }
}
