import { Redis } from 'ioredis';
import type { Logger } from '@mfa/telemetry';
import type { HealthCheck } from '@mfa/service-kit';

/**
 * The Redis client of the service. Auto-pipelining batches the commands issued in one event-loop
 * tick into one round trip (ioredis: about +35 % throughput).
 */
export function createRedis(url: string, log: Logger): Redis {
  const redis = new Redis(url, {
    enableAutoPipelining: true,
    connectionName: 'user-settings',
    // Fail a command after a few reconnect attempts instead of queueing it for long: the request
    // answers `unavailable` and the projector consumer naks and retries.
    maxRetriesPerRequest: 3,
  });
  let lastLogged = 0;
  redis.on('error', (error: Error) => {
    // ioredis emits one error per reconnect attempt; one line every 10 s is enough.
    if (Date.now() - lastLogged < 10_000) return;
    lastLogged = Date.now();
    log.warn('redis connection error', { error });
  });
  return redis;
}

export async function closeRedis(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

export class RedisHealth implements HealthCheck {
  readonly name = 'redis';
  constructor(private readonly redis: Redis) {}
  async check(): Promise<void> {
    const answer = await this.redis.ping();
    if (answer !== 'PONG') throw new Error(`unexpected PING answer ${answer}`);
  }
}
