import type { RedisClient } from '@mfa/projection';
import { phoneTag, userTag, type Keyring } from '@mfa/crypto';
import { RedisKeys, UserIndex } from '@mfa/projection';
import { counter } from '@mfa/telemetry';

/**
 * The sliding window of sends to one phone number of a tenant (or to one block of numbers): admits
 * a send unless the window is full. Each send is its challenge id (ZADD NX: a redelivered request
 * is admitted again without counting twice), scored by when it was admitted.
 * KEYS: sends. ARGV: challenge id, now ms, window ms, max.
 * Returns {admitted 1/0, sends in the window (this one included), the oldest's time ms, 1 when
 * this call added the send (0: admitted before, or refused)}.
 */
const ADMIT = `
local now, window, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - window))
local admitted, added = 1, 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  if redis.call('ZCARD', KEYS[1]) >= max then admitted = 0 else redis.call('ZADD', KEYS[1], now, ARGV[1]); added = 1 end
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ARGV[2]
return {admitted, redis.call('ZCARD', KEYS[1]), oldest, added}
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
  private readonly admitScript: (...args: Array<string | number>) => Promise<[number, number, string, number]>;
  private readonly index: UserIndex;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
    private readonly policy: PhoneThrottlePolicy,
  ) {
    redis.defineCommand('mfaPhoneSendAdmit', { numberOfKeys: 1, lua: ADMIT });
    this.admitScript = (redis as unknown as { mfaPhoneSendAdmit: (...a: Array<string | number>) => Promise<[number, number, string, number]> }).mfaPhoneSendAdmit.bind(redis);
    this.index = new UserIndex(redis, keyring);
    Object.defineProperty(this, 'keyring', { enumerable: false });
  }

  /**
   * One send to `phoneNumber`: admitted against its block's windows (the tenant's, then every
   * tenant's), then the number's. A refusal by any of them sends nothing, so the send counts in
   * none: the windows that admitted it take it back (a pumped block does not fill its numbers'
   * windows). The windows are in different hash slots, so no one script can check them all: each
   * admits atomically (never past its limit), and a send taken back can at worst have made another
   * see a window full a moment too soon. The number's own window comes last, so a send is never
   * taken back from it: a number seen full is full (its users' starts are throttled for it), and
   * only a block's window can be seen full too soon, which refuses that one send and throttles no one.
   */
  async admit(tenantId: string, phoneNumber: string, challengeId: string, now: number): Promise<Admission> {
    const { maxSends, windowSeconds, prefixMaxSends = 0, prefixGlobalMaxSends = 0, prefixWindowSeconds = 3600 } = this.policy;
    const block = phoneTag(this.keyring, '*', numberBlock(phoneNumber));
    const windows: Array<{ scope: ThrottleScope; max: number; windowMs: number; key: string }> = [
      { scope: 'prefix', max: prefixMaxSends, windowMs: prefixWindowSeconds * 1000, key: RedisKeys.prefixSends(tenantId, block) },
      { scope: 'prefix_global', max: prefixGlobalMaxSends, windowMs: prefixWindowSeconds * 1000, key: RedisKeys.prefixSends('*', block) },
      { scope: 'number', max: maxSends, windowMs: windowSeconds * 1000, key: RedisKeys.phoneSends(tenantId, phoneTag(this.keyring, tenantId, phoneNumber)) },
    ];
    /** Windows this call added the send to. */
    const added: string[] = [];
    /** When the number's window, full with this send, lets the next one in. */
    let numberFullUntil: number | undefined;
    for (const { scope, max, windowMs, key } of windows) {
      if (max === 0) continue;
      const [admitted, sends, oldest, isNew] = await this.admitScript(key, challengeId, now, windowMs, max);
      const untilMs = Number(oldest) + windowMs;
      if (admitted !== 1) {
        await Promise.all(added.map((k) => this.redis.zrem(k, challengeId)));
        // A number refused is full: its users' starts learn it (not when only its block is).
        if (scope === 'number') await this.project(tenantId, phoneNumber, untilMs, now);
        return this.refused(scope, untilMs);
      }
      if (isNew === 1) added.push(key);
      if (scope === 'number' && sends >= max) numberFullUntil = untilMs;
    }
    if (numberFullUntil !== undefined) await this.project(tenantId, phoneNumber, numberFullUntil, now);
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
