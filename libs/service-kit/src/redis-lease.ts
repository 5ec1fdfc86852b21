import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { RedisClient } from '@mfa/projection';

// Renew and release touch the lease only while this owner holds it (one key: Cluster too).
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/** Why a held function's signal aborted: the lease is (or may be) someone else's now. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError';
}

/**
 * A lease in Redis that lets one instance at a time do a piece of work (rebuild the projection,
 * relay the outbox): `SET NX PX` to take it, renewed while the work lasts, released only by its
 * holder. When the holder dies, the lease lapses and another instance takes over.
 *
 * A holder can lose the lease while it lives: a pause longer than the lease (GC, a stopped
 * container), a Redis failover that lost the key, Redis unreachable for that long. Another
 * instance may then take it, so the work is told (its AbortSignal) and must stop at its next step.
 */
export class RedisLease {
  private readonly instance = `${hostname()}:${process.pid}`;
  /** The value of the key taken by the last acquire() and not held yet, and when it was asked for. */
  private taken: { owner: string; at: number } | undefined;

  constructor(
    private readonly redis: RedisClient,
    private readonly key: string,
    private readonly ttlMs: number,
  ) {}

  /** True if taken; false if another instance holds it or Redis cannot be reached. */
  async acquire(): Promise<boolean> {
    // Unique per acquisition: a holder that lost the lease must not renew or release the one that
    // another lease object of the same process (or an instance with the same host name and pid,
    // e.g. pid 1 in containers sharing the host's name) took after it.
    const owner = `${this.instance}:${randomUUID()}`;
    const at = Date.now();
    try {
      if ((await this.redis.set(this.key, owner, 'PX', this.ttlMs, 'NX')) !== 'OK') return false;
    } catch {
      return false;
    }
    this.taken = { owner, at };
    return true;
  }

  /**
   * Keeps the lease taken by acquire() while `work` runs (renewed every third of its lifetime),
   * then releases it. `work`'s signal aborts (a LeaseLostError) as soon as the lease is known lost
   * (a renewal finds another owner or none) or may have lapsed (no renewal succeeded within its
   * lifetime, counted from when the last successful one was sent): it must then stop.
   */
  async hold<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const taken = this.taken;
    if (!taken) throw new Error(`lease ${this.key}: hold() without acquire()`);
    this.taken = undefined;
    const lost = new AbortController();
    let lapse: NodeJS.Timeout | undefined;
    let renewing = false;
    const lose = (why: string) => {
      if (lost.signal.aborted) return;
      clearInterval(renew);
      clearTimeout(lapse);
      lost.abort(new LeaseLostError(`lease ${this.key} lost: ${why}`));
    };
    // The key expires ttlMs after the last PEXPIRE that reached Redis, at the latest ttlMs after it was sent.
    const lapsesIn = (sentAt: number) => {
      clearTimeout(lapse);
      lapse = setTimeout(() => lose(`not renewed within ${this.ttlMs} ms`), Math.max(0, sentAt + this.ttlMs - Date.now()));
    };
    const renew = setInterval(() => {
      if (renewing) return; // A slow Redis: one renewal at a time (the lapse timer still runs).
      renewing = true;
      const sentAt = Date.now();
      this.redis
        .eval(RENEW, 1, this.key, taken.owner, this.ttlMs)
        .then(
          (kept) => {
            if (kept === 1) lapsesIn(sentAt);
            else lose('another instance holds it, or it lapsed');
          },
          () => undefined, // Redis unreachable: the lapse timer decides.
        )
        .finally(() => (renewing = false));
    }, this.ttlMs / 3);
    lapsesIn(taken.at);
    try {
      return await work(lost.signal);
    } finally {
      clearInterval(renew);
      clearTimeout(lapse);
      await this.redis.eval(RELEASE, 1, this.key, taken.owner).catch(() => undefined);
    }
  }
}
