import { ipLockKey } from '@mfa/contracts';
import type { RedisClient } from '@mfa/projection';

/** The device API's failures from one source (an IPv4 address, an IPv6 /64): one key each, its own slot. */
export const SourceFailureKeys = {
  failures: (source: string) => `mfa:{devsrc:${source}}:failures`,
};

export interface SourceFailureLimits {
  /** Failures from one source per window; 0 counts nothing and refuses nothing. */
  maxPerWindow: number;
  windowSeconds: number;
}

/**
 * 1,000 failures in 10 minutes: about one every 0.6 s, kept up, is still refused nothing. A phone
 * fails a few times a day at most (a clock far off, a mistyped code), so a source reaches it only
 * with hundreds of failing phones behind one address (a carrier's NAT) or by flooding.
 */
export const DEFAULT_SOURCE_FAILURE_LIMITS: SourceFailureLimits = { maxPerWindow: 1000, windowSeconds: 600 };

/**
 * The device API's failures by source address (DEVICE_API_MAX_FAILURES_PER_WINDOW per window of
 * DEVICE_API_FAILURE_WINDOW_SECONDS): a fixed window, which the first failure opens, counted in one
 * key per source; a refusal is not a failure and does not prolong it. An IPv6 address counts by its /64 (ipLockKey, as per-IP lockout does), the block a
 * subscriber line or a cloud instance holds, so that rotating addresses inside it buys nothing.
 * Successes are never counted: a source over its limit is one that failed that often, and it is
 * refused until the window that it filled ends.
 */
export class SourceFailures {
  constructor(
    private readonly redis: RedisClient,
    private readonly limits: SourceFailureLimits,
  ) {}

  /** The seconds until a source over its limit may be served again; 0 when it may be now (or it is not an address). */
  async refusedFor(address: string | undefined): Promise<number> {
    const key = this.keyOf(address);
    if (!key) return 0;
    const failures = Number((await this.redis.get(key)) ?? '0');
    if (failures < this.limits.maxPerWindow) return 0;
    // Over the limit only: the window's end, read once more (it may just have ended).
    const ms = await this.redis.pttl(key);
    if (ms === -2) return 0;
    return Math.max(1, Math.ceil((ms < 0 ? this.limits.windowSeconds * 1000 : ms) / 1000));
  }

  /** Counts one failure of the source: the first opens its window (SET NX with the window's expiry, then INCR, one key). */
  async failed(address: string | undefined): Promise<void> {
    const key = this.keyOf(address);
    if (!key) return;
    const replies = await this.redis.multi().set(key, '0', 'EX', this.limits.windowSeconds, 'NX').incr(key).exec();
    for (const [error] of replies ?? []) if (error) throw error;
  }

  private keyOf(address: string | undefined): string | undefined {
    if (!address || this.limits.maxPerWindow <= 0) return undefined;
    const source = ipLockKey(address);
    return source ? SourceFailureKeys.failures(source) : undefined;
  }
}
