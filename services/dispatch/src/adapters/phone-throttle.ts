import type { RedisClient } from '@mfa/projection';
import { phoneTag, userTag, type Keyring } from '@mfa/crypto';
import { RedisKeys, UserIndex } from '@mfa/projection';
import { counter } from '@mfa/telemetry';

/**
 * The sliding window of sends to one phone number of a tenant: admits a send unless the window
 * is full. Each send is its challenge id (ZADD NX: a redelivered request is admitted again
 * without counting twice), scored by when it was admitted.
 * KEYS: sends. ARGV: challenge id, now ms, window ms, max.
 * Returns {admitted 1/0, sends in the window (this one included), the oldest's time ms}.
 */
const ADMIT = `
local now, window, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - window))
local admitted = 1
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  if redis.call('ZCARD', KEYS[1]) >= max then admitted = 0 else redis.call('ZADD', KEYS[1], now, ARGV[1]) end
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ARGV[2]
return {admitted, redis.call('ZCARD', KEYS[1]), oldest}
`;

/** Users of one number whose slots receive its throttle, at most (a number shared by more is an abuse pattern of its own). */
const MAX_USERS_PER_NUMBER = 1_000;

export interface PhoneThrottlePolicy {
  /** Sends (SMS, calls) to one number of a tenant in any window, across its users; 0: off. */
  maxSends: number;
  windowSeconds: number;
  /**
   * Sends to one block of numbers (the number without its last 4 digits: 10,000 numbers), per
   * tenant and across tenants, in any `prefixWindowSeconds`; 0: off. SMS pumping spreads its sends
   * over many numbers of a few premium or foreign ranges: each number stays under its own limit,
   * the range does not.
   */
  prefixMaxSends?: number;
  prefixGlobalMaxSends?: number;
  prefixWindowSeconds?: number;
}

export type ThrottleScope = 'number' | 'prefix' | 'prefix_global';
export type Admission = { admitted: true } | { admitted: false; untilMs: number; scope: ThrottleScope };

const throttled = counter('mfa_send_throttled_total', 'SMS and calls not sent: a number or a block of numbers reached its limit (scope number, prefix per tenant, prefix_global)', ['scope']);

/** The block of 10,000 numbers a number belongs to (what SMS pumping sprays). */
export const numberBlock = (e164: string): string => e164.slice(0, -4);

/**
 * Per-phone-number throttling across users (SMS pumping, a number shared to harass its owner):
 * dispatch admits every send to a number against the tenant's window for that number, so no more
 * than the maximum ever leaves, whatever the starts. When a send fills the window (or one is
 * refused), the end of the throttle is copied into the slot of every user of the tenant with that
 * number (`mfa:{tag}:throttle:phone`), so that their next SMS or voice start answers rate_limited
 * at once, with the time to wait, in the start script's one round trip.
 */
export class PhoneThrottle {
  private readonly admitScript: (...args: Array<string | number>) => Promise<[number, number, string]>;
  private readonly index: UserIndex;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
    private readonly policy: PhoneThrottlePolicy,
  ) {
    redis.defineCommand('mfaPhoneSendAdmit', { numberOfKeys: 1, lua: ADMIT });
    this.admitScript = (redis as unknown as { mfaPhoneSendAdmit: (...a: Array<string | number>) => Promise<[number, number, string]> }).mfaPhoneSendAdmit.bind(redis);
    this.index = new UserIndex(redis, keyring);
    Object.defineProperty(this, 'keyring', { enumerable: false });
  }

  /**
   * One send to `phoneNumber`: admitted against the number's window, then its block's (the
   * tenant's, then every tenant's). A refusal by any of them sends nothing.
   */
  async admit(tenantId: string, phoneNumber: string, challengeId: string, now: number): Promise<Admission> {
    const { maxSends, windowSeconds, prefixMaxSends = 0, prefixGlobalMaxSends = 0, prefixWindowSeconds = 3600 } = this.policy;
    if (maxSends > 0) {
      const windowMs = windowSeconds * 1000;
      const key = RedisKeys.phoneSends(tenantId, phoneTag(this.keyring, tenantId, phoneNumber));
      const [admitted, sends, oldest] = await this.admitScript(key, challengeId, now, windowMs, maxSends);
      const untilMs = Number(oldest) + windowMs;
      if (sends >= maxSends) await this.project(tenantId, phoneNumber, untilMs, now);
      if (admitted !== 1) return this.refused('number', untilMs);
    }
    const block = phoneTag(this.keyring, '*', numberBlock(phoneNumber));
    for (const [scope, max, key] of [
      ['prefix', prefixMaxSends, RedisKeys.prefixSends(tenantId, block)],
      ['prefix_global', prefixGlobalMaxSends, RedisKeys.prefixSends('*', block)],
    ] as const) {
      if (max === 0) continue;
      const windowMs = prefixWindowSeconds * 1000;
      const [admitted, , oldest] = await this.admitScript(key, challengeId, now, windowMs, max);
      if (admitted !== 1) return this.refused(scope, Number(oldest) + windowMs);
    }
    return { admitted: true };
  }

  private refused(scope: ThrottleScope, untilMs: number): Admission {
    throttled.inc({ scope });
    return { admitted: false, untilMs, scope };
  }

  /** The throttle's end, into the slot of every user with this number (each key in its own slot). */
  private async project(tenantId: string, phoneNumber: string, untilMs: number, now: number): Promise<void> {
    const ttl = untilMs - now;
    if (ttl <= 0) return;
    const users = await this.index.usersWithPhone(tenantId, phoneNumber, MAX_USERS_PER_NUMBER);
    await Promise.all(users.map((userId) => this.redis.set(RedisKeys.phoneThrottle(userTag(this.keyring, tenantId, userId)), String(untilMs), 'PX', ttl)));
  }
}
