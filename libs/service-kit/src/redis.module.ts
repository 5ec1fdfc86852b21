import { Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import { Redis } from 'ioredis';
import type { Logger } from '@mfa/telemetry';
import type { HealthCheck } from './health.js';
import { REDIS } from './tokens.js';

interface RedisOptions {
  url: string;
  /** Shown by CLIENT LIST: which service holds the connection. */
  connectionName: string;
  log: Logger;
}

/**
 * The Redis client of a service. Auto-pipelining sends the commands of one event-loop tick as one
 * write (ioredis: about +35 % throughput), which is what the hot path's one-script-per-request
 * relies on. A command fails after a few reconnect attempts instead of queueing for long: the
 * request answers `unavailable`, a consumer naks and retries.
 *
 * A command already written when the connection dropped is never sent again
 * (`autoResendUnfulfilledCommands: false`): Redis may have run it, and the state-changing scripts
 * (a verify counting an attempt, a start drawing a challenge) must not run twice for one request.
 * It fails instead, and the caller answers `unavailable`. Commands not yet written (the offline
 * queue) are sent once the connection is back.
 */
function createRedis(options: RedisOptions): Redis {
  const redis = new Redis(options.url, {
    enableAutoPipelining: true,
    connectionName: options.connectionName,
    maxRetriesPerRequest: 2,
    autoResendUnfulfilledCommands: false,
  });
  let lastLogged = 0;
  redis.on('error', (error: Error) => {
    // ioredis emits one error per reconnect attempt; one line every 10 s is enough.
    if (Date.now() - lastLogged < 10_000) return;
    lastLogged = Date.now();
    options.log.warn('redis connection error', { error });
  });
  return redis;
}

/**
 * Eviction policies under which Redis may drop keys that have no TTL: the user projection has
 * none, and a user evicted would look absent. `noeviction` and the `volatile-*` policies (which
 * evict only keys with a TTL: challenges, counters) are safe.
 */
const UNSAFE_EVICTION = /^allkeys-/;

/** Redis answers PING, and its eviction policy cannot drop projected users (docs/operations.md, Redis). */
@Injectable()
export class RedisHealth implements HealthCheck {
  readonly name = 'redis';
  constructor(@Inject(REDIS) private readonly redis: Redis) {}
  async check(): Promise<void> {
    const answer = await this.redis.ping();
    if (answer !== 'PONG') throw new Error(`unexpected PING answer ${answer}`);
    // INFO rather than CONFIG GET: managed Redis services often disable CONFIG.
    const policy = /^maxmemory_policy:(\S+)/m.exec(await this.redis.info('memory'))?.[1];
    if (policy && UNSAFE_EVICTION.test(policy)) {
      throw new Error(`maxmemory-policy ${policy} may evict projected users; use noeviction or a volatile-* policy`);
    }
  }
}

/** Closes the connection after the transport stopped taking requests and events. */
@Injectable()
class RedisLifecycle implements OnApplicationShutdown {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}
  async onApplicationShutdown(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/** Redis for the services that use it: the client under REDIS, its health check, its close. */
@Global()
@Module({})
export class RedisModule {
  static forRoot(options: RedisOptions): DynamicModule {
    return {
      module: RedisModule,
      providers: [{ provide: REDIS, useFactory: () => createRedis(options) }, RedisHealth, RedisLifecycle],
      exports: [REDIS, RedisHealth],
    };
  }
}
