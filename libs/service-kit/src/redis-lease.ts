import { hostname } from 'node:os';
import type { RedisClient } from '@mfa/projection';

// Renew and release touch the lease only while this owner holds it (one key: Cluster too).
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/**
 * A lease in Redis that lets one instance at a time do a piece of work (rebuild the projection,
 * relay the outbox): `SET NX PX` to take it, renewed while the work lasts, released only by its
 * holder. When the holder dies, the lease lapses and another instance takes over.
 */
export class RedisLease {
  private readonly owner = `${hostname()}:${process.pid}`;

  constructor(
    private readonly redis: RedisClient,
    private readonly key: string,
    private readonly ttlMs: number,
  ) {}

  /** True if taken; false if another instance holds it or Redis cannot be reached. */
  async acquire(): Promise<boolean> {
    try {
      return (await this.redis.set(this.key, this.owner, 'PX', this.ttlMs, 'NX')) === 'OK';
    } catch {
      return false;
    }
  }

  /** Keeps the lease while `work` runs (renewed every third of its lifetime), then releases it. */
  async hold<T>(work: () => Promise<T>): Promise<T> {
    const renew = setInterval(() => void this.redis.eval(RENEW, 1, this.key, this.owner, this.ttlMs).catch(() => undefined), this.ttlMs / 3);
    try {
      return await work();
    } finally {
      clearInterval(renew);
      await this.redis.eval(RELEASE, 1, this.key, this.owner).catch(() => undefined);
    }
  }
}
