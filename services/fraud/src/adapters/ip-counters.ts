import type { RedisClient } from '@mfa/projection';
import { execAll } from '@mfa/service-kit';
import { subjectToken } from '@mfa/contracts';
import type { IpWindow } from '../domain/ip-lockout.js';

/**
 * Entries kept per window at most: more than any threshold (10,000), so an attack cannot grow a key
 * without bound. The starts' window keeps more when the operator's limit is higher (IpCounters).
 */
const MAX_ENTRIES = 10_001;
/** How long an unlock's time is kept: the longest window a tenant may set (ipLockout.windowMinutes, 1440), past which no denial from before it counts anyway. */
const UNLOCK_MARK_MS = 1440 * 60_000;

/**
 * The sliding window of denials from one client address, per tenant, and the distinct users
 * among them. All keys of an address share its hash tag `{ip:<tenant>:<address>}` (one slot on
 * Redis Cluster). Each denial is an event id (ZADD NX: a redelivered event counts once) scored by
 * when it happened; what is older than the window, or than the address's last unlock (`reset`),
 * is dropped on every count: a denial from before an unlock, counted late (a consumer catching up,
 * another instance), never counts towards a new lock.
 * KEYS: denials, users, unlocked. ARGV: event id, user tag, event time ms, now ms, window ms.
 * Returns {denials, distinct users} in the window.
 */
const COUNT_SCRIPT = `
local since = tonumber(ARGV[4]) - tonumber(ARGV[5])
local unlocked = tonumber(redis.call('GET', KEYS[3]) or '0')
if unlocked > since then since = unlocked end
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[2])
local counts = {}
for n = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[n], '-inf', '(' .. since)
  local size = redis.call('ZCARD', KEYS[n])
  if size > ${MAX_ENTRIES} then redis.call('ZREMRANGEBYRANK', KEYS[n], 0, size - ${MAX_ENTRIES} - 1); size = ${MAX_ENTRIES} end
  redis.call('PEXPIRE', KEYS[n], ARGV[5])
  counts[n] = size
end
return counts
`;

/**
 * The sliding window of starts that send something from one client address (per-IP throttling):
 * each start is its event id (ZADD NX: a redelivered event counts once) scored by its time; beyond
 * the most kept, the oldest go.
 * KEYS: starts. ARGV: event id, event time ms, now ms, window ms, most kept.
 * Returns {starts in the window, time of the oldest (ms)}.
 */
const COUNT_START_SCRIPT = `
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(ARGV[3]) - tonumber(ARGV[4])))
local size = redis.call('ZCARD', KEYS[1])
local most = tonumber(ARGV[5])
if size > most then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - most - 1); size = most end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ARGV[2]
return {size, oldest}
`;

const tagOf = (tenantId: string, ip: string) => `{ip:${subjectToken(tenantId)}:${subjectToken(ip)}}`;
export const IpCounterKeys = {
  denials: (tenantId: string, ip: string) => `mfa:${tagOf(tenantId, ip)}:denials`,
  users: (tenantId: string, ip: string) => `mfa:${tagOf(tenantId, ip)}:users`,
  unlocked: (tenantId: string, ip: string) => `mfa:${tagOf(tenantId, ip)}:unlocked`,
  starts: (tenantId: string, ip: string) => `mfa:${tagOf(tenantId, ip)}:starts`,
};

export class IpCounters {
  private readonly count: (...args: Array<string | number>) => Promise<[number, number]>;
  /** Starts kept per window: more than the throttle's limit (IP_MAX_STARTS_PER_WINDOW, up to 100,000), or it could never be reached. */
  private readonly mostStarts: number;

  constructor(private readonly redis: RedisClient, maxStartsPerWindow = 0) {
    this.mostStarts = Math.max(MAX_ENTRIES, maxStartsPerWindow + 1);
    redis.defineCommand('mfaFraudCountIpDenial', { numberOfKeys: 3, lua: COUNT_SCRIPT });
    redis.defineCommand('mfaFraudCountIpStart', { numberOfKeys: 1, lua: COUNT_START_SCRIPT });
    const r = redis as unknown as Record<'mfaFraudCountIpDenial' | 'mfaFraudCountIpStart', (...a: Array<string | number>) => Promise<[number, number]>>;
    this.count = r.mfaFraudCountIpDenial.bind(redis);
    this.countStartScript = r.mfaFraudCountIpStart.bind(redis);
  }

  private readonly countStartScript: (...args: Array<string | number>) => Promise<[number, number | string]>;

  /** Counts one start that sends something (idempotent per event id): the starts in the window and when the oldest of them happened. */
  async countStart(tenantId: string, ip: string, eventId: string, at: Date, now: Date, windowSeconds: number): Promise<{ starts: number; oldestMs: number }> {
    const [starts, oldest] = await this.countStartScript(IpCounterKeys.starts(tenantId, ip), eventId, at.getTime(), now.getTime(), windowSeconds * 1000, this.mostStarts);
    return { starts, oldestMs: Number(oldest) };
  }

  /** Counts one denial (idempotent per event id) and answers the window after it. */
  async countDenial(tenantId: string, ip: string, eventId: string, userTag: string, at: Date, now: Date, windowMinutes: number): Promise<IpWindow> {
    const [failures, users] = await this.count(
      IpCounterKeys.denials(tenantId, ip),
      IpCounterKeys.users(tenantId, ip),
      IpCounterKeys.unlocked(tenantId, ip),
      eventId,
      userTag,
      at.getTime(),
      now.getTime(),
      windowMinutes * 60_000,
    );
    return { failures, users };
  }

  /**
   * An unlock at `at` starts the address's window over: its denials go, and its time is kept so
   * that none from before it counts again (COUNT_SCRIPT), such as one counted late by a consumer
   * catching up. One transaction, one slot; run again by a retried unlock.
   */
  async reset(tenantId: string, ip: string, at: Date = new Date()): Promise<void> {
    await execAll(
      this.redis
        .multi()
        .del(IpCounterKeys.denials(tenantId, ip), IpCounterKeys.users(tenantId, ip))
        .set(IpCounterKeys.unlocked(tenantId, ip), at.getTime(), 'PX', UNLOCK_MARK_MS),
      "the address's count was not reset",
    );
  }
}
