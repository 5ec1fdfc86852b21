import type { RedisClient } from '@mfa/projection';
import { challengeId, parseDeviceId, projectedDeviceId, RedisKeys } from '@mfa/projection';

/**
 * How long the user's refused pushes are kept at least once a fraud report adds one: the longest
 * window auth-challenge may count them in (PUSH_WINDOW_SECONDS, at most 86,400 s). Its start script
 * drops those older than its own window before counting, so only the key's life depends on this.
 */
const PUSH_REFUSALS_KEPT_MS = 86_400_000;

/**
 * Denies a pending challenge that its user reported as fraud, in Redis where auth-challenge keeps
 * it: atomically, and only a pending challenge of that tenant and user that had not expired when
 * the report was made (keys of the challenge's slot). KEYS: the challenge, the user's pending push,
 * the user's refused pushes. ARGV: tenantId, userId, the report's time ms, the challenge id, the
 * alert's MFA_FRAUD sequence ('' for none), how long refused pushes are kept at least (ms).
 * The challenge keeps the first alert recorded for it (`fraudAlert`), whatever its status: a
 * report sent again finds that alert instead of recording another. A report denies first, before
 * its alert is recorded (no alert named yet): the challenge then notes `fraudPending`, so that the
 * alert's completion, or the report sent again after its alert failed to be recorded, still
 * publishes its ChallengeFraudReported. A push denied here is no longer
 * the push its user waits on (the next push may start), and counts towards MFA fatigue as a push
 * the user denied (auth-challenge's pushAnswerScript), never as ignored.
 * Returns {'denied', method, ip, app, '0'} | {'already', method, ip, app, recorded} (denied for
 * fraud before; recorded: its ChallengeFraudReported is published, always so for a challenge
 * denied before alerts named their challenge) | {'completed', status, ip, app} (decided, or
 * 'expired': its outcome stays what it was) | {'not_found'}; ip and app are the challenge's client
 * IP and application ('' when the start named none).
 */
const DENY_SCRIPT = `
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'method', 'status', 'reason', 'ip', 'app', 'expiresAt', 'fraudAlert', 'fraudRecorded', 'fraudPending')
if not ch[1] or ch[1] ~= ARGV[1] or ch[2] ~= ARGV[2] then return {'not_found'} end
local ip, app = ch[6] or '', ch[7] or ''
if ARGV[5] ~= '' and not ch[9] then redis.call('HSET', KEYS[1], 'fraudAlert', ARGV[5]) end
if ch[4] == 'denied' and ch[5] == 'fraud_reported' then
  if ch[10] == '1' then return {'already', ch[3], ip, app, '1'} end
  if ch[9] or ch[11] == '1' then return {'already', ch[3], ip, app, '0'} end
  -- Denied by a report that named no alert on it (before alerts were recorded first): that report published its outcome.
  redis.call('HSET', KEYS[1], 'fraudRecorded', '1')
  return {'already', ch[3], ip, app, '1'}
end
if ch[4] ~= 'pending' then return {'completed', ch[4], ip, app} end
if tonumber(ch[8] or '0') <= tonumber(ARGV[3]) then return {'completed', 'expired', ip, app} end
redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'fraud_reported', 'completedAt', ARGV[3])
if ARGV[5] == '' then redis.call('HSET', KEYS[1], 'fraudPending', '1') end
local pending = redis.call('GET', KEYS[2])
if pending and string.sub(pending, 1, #ARGV[4] + 1) == ARGV[4] .. '|' then redis.call('DEL', KEYS[2]) end
if ch[3] == 'push' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[3], ARGV[6]) end
end
return {'denied', ch[3], ip, app, '0'}
`;

/** Notes on the challenge that its ChallengeFraudReported is published (a challenge gone stays gone). KEYS: the challenge. */
const RECORDED_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'fraudRecorded', '1')
return 1
`;

/**
 * Notes on the challenge, before a report's alert is published, where in MFA_FRAUD that alert will
 * be found: after the user's last alert then (`fraudAfter`). The first report's note stays (a
 * report sent again must find the copy recorded first), and a challenge gone stays gone. Past the
 * stream's de-duplication window (Nats-Msg-Id, 2 minutes), a report sent again for an alert whose
 * completion never named it on the challenge would otherwise record a second copy.
 * KEYS: the challenge. ARGV: tenantId, userId, the user's last alert's MFA_FRAUD sequence (0: none).
 */
const NOTE_SCRIPT = `
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId')
if not ch[1] or ch[1] ~= ARGV[1] or ch[2] ~= ARGV[2] then return 0 end
redis.call('HSETNX', KEYS[1], 'fraudAfter', ARGV[3])
return 1
`;

/**
 * The user's fraud alerts in a sliding window (fraud.report's limit per user). KEYS: the user's
 * alerts (alert id -> ms). ARGV: alert id, now ms, window ms, most alerts, '1' when the report
 * denies a challenge still waiting (refused only past ARGV[6] alerts: challenges started in bulk
 * and reported one by one must not mail the tenant's addresses without bound), most alerts then.
 * An alert already counted (the same report sent again) is admitted and counted once.
 * Returns {'admitted'} | {'full', ms when the oldest leaves the window}.
 */
const ADMIT_SCRIPT = `
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'admitted'} end
local most = tonumber(ARGV[4])
if ARGV[5] == '1' then most = tonumber(ARGV[6]) end
if redis.call('ZCARD', KEYS[1]) >= most then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'full', tostring(tonumber(oldest[2]) + window)}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return {'admitted'}
`;

/** The user's fraud alerts in the window of fraud.report's limit (alert id -> ms), in the user's slot. */
export const fraudReportsKey = (tag: string) => `mfa:{${tag}}:fraud:reports`;

/** Where the challenge came from (absent when its start named none). */
export interface ChallengeOrigin {
  clientIp?: string;
  application?: string;
}
export type Denial =
  | { kind: 'denied' | 'already'; method: string; origin: ChallengeOrigin; recorded: boolean }
  | { kind: 'completed'; status: string; origin: ChallengeOrigin }
  | { kind: 'not_found' };

/**
 * A challenge as a fraud report finds it, before anything is recorded (nothing is changed).
 * `alertSeq`: the MFA_FRAUD sequence of the alert recorded for it already, if any (the report is a
 * repeat). `alertAfter`: a report for it was about to record its alert, after this MFA_FRAUD
 * sequence (NOTE_SCRIPT): one not named yet may be recorded there.
 */
export type ChallengeSeen =
  | { kind: 'not_found' }
  | { kind: 'waiting'; method: string; origin: ChallengeOrigin; alertSeq?: number; alertAfter?: number }
  /** Denied for fraud already; `pending`: by a report whose alert may not be recorded (denied first, see DENY_SCRIPT). */
  | { kind: 'denied_for_fraud'; origin: ChallengeOrigin; alertSeq?: number; alertAfter?: number; pending?: boolean }
  /** Decided otherwise, or expired at the report's time. */
  | { kind: 'ended'; status: string; origin: ChallengeOrigin; alertSeq?: number; alertAfter?: number };

const originOf = (ip: string | null | undefined, app: string | null | undefined): ChallengeOrigin => ({ ...(ip ? { clientIp: ip } : {}), ...(app ? { application: app } : {}) });

/** A fraud report's side in Redis, every key in the user's slot: the challenge it names, and the user's alerts. */
export class ChallengeDenial {
  private readonly deny: (...args: Array<string | number>) => Promise<string[]>;
  private readonly recordedScript: (...args: Array<string | number>) => Promise<number>;
  private readonly admitScript: (...args: Array<string | number>) => Promise<string[]>;
  private readonly noteScript: (...args: Array<string | number>) => Promise<number>;

  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaFraudDenyChallenge', { numberOfKeys: 3, lua: DENY_SCRIPT });
    redis.defineCommand('mfaFraudChallengeRecorded', { numberOfKeys: 1, lua: RECORDED_SCRIPT });
    redis.defineCommand('mfaFraudAdmitReport', { numberOfKeys: 1, lua: ADMIT_SCRIPT });
    redis.defineCommand('mfaFraudNoteReport', { numberOfKeys: 1, lua: NOTE_SCRIPT });
    const r = redis as unknown as Record<'mfaFraudDenyChallenge' | 'mfaFraudChallengeRecorded' | 'mfaFraudAdmitReport' | 'mfaFraudNoteReport', (...a: Array<string | number>) => Promise<never>>;
    this.deny = r.mfaFraudDenyChallenge.bind(redis);
    this.recordedScript = r.mfaFraudChallengeRecorded.bind(redis);
    this.admitScript = r.mfaFraudAdmitReport.bind(redis);
    this.noteScript = r.mfaFraudNoteReport.bind(redis);
  }

  /**
   * Whether `deviceId` is one of the user's authenticator apps (user-settings' projection, the
   * user's slot): an app activated under an earlier master key is kept under the user's current tag
   * with the id it was given, which carries the tag of then (ProjectedDevice.id).
   */
  async isDeviceOf(tag: string, deviceId: string): Promise<boolean> {
    const nonce = parseDeviceId(deviceId)?.nonce;
    const stored = nonce === undefined ? null : await this.redis.hget(RedisKeys.devices(tag), nonce);
    if (stored === null) return false;
    let device: { id?: unknown };
    try {
      device = JSON.parse(stored) as { id?: unknown };
    } catch {
      return false;
    }
    return projectedDeviceId(tag, nonce!, device ?? {}) === deviceId;
  }

  /** How the challenge stands for a report made at `now` (one HMGET). */
  async look(tag: string, nonce: string, tenantId: string, userId: string, now: Date): Promise<ChallengeSeen> {
    const [tenant, user, method, status, reason, ip, app, expiresAt, alertSeq, pending, after] = await this.redis.hmget(
      RedisKeys.challenge(tag, nonce),
      'tenantId', 'userId', 'method', 'status', 'reason', 'ip', 'app', 'expiresAt', 'fraudAlert', 'fraudPending', 'fraudAfter',
    );
    if (tenant !== tenantId || user !== userId) return { kind: 'not_found' };
    const seen = { origin: originOf(ip, app), ...(alertSeq ? { alertSeq: Number(alertSeq) } : {}), ...(after ? { alertAfter: Number(after) } : {}) };
    if (status === 'denied' && reason === 'fraud_reported') return { kind: 'denied_for_fraud', ...seen, ...(pending === '1' ? { pending: true } : {}) };
    if (status === 'pending' && Number(expiresAt ?? 0) > now.getTime()) return { kind: 'waiting', method: method ?? '', ...seen };
    return { kind: 'ended', status: status === 'pending' ? 'expired' : (status ?? ''), ...seen };
  }

  /**
   * Denies the challenge if it was pending at `reportedAt`, and names the alert on it (`alert`: its
   * MFA_FRAUD sequence). The report's time, not the clock: a completion that runs late still
   * denies a challenge that was waiting when its user reported it.
   */
  async denyPending(tag: string, nonce: string, tenantId: string, userId: string, reportedAt: Date, alert?: { seq: number }): Promise<Denial> {
    const [kind, value, ip, app, recorded] = await this.deny(
      RedisKeys.challenge(tag, nonce),
      RedisKeys.pendingPush(tag),
      RedisKeys.pushRefusals(tag),
      tenantId,
      userId,
      reportedAt.getTime(),
      challengeId(tag, nonce),
      alert ? String(alert.seq) : '',
      PUSH_REFUSALS_KEPT_MS,
    );
    const origin = originOf(ip, app);
    if (kind === 'denied' || kind === 'already') return { kind, method: value ?? '', origin, recorded: recorded === '1' };
    if (kind === 'completed') return { kind, status: value ?? '', origin };
    return { kind: 'not_found' };
  }

  /**
   * Notes on the challenge, before its report's alert is published, that the alert will be recorded
   * after the user's alert at MFA_FRAUD sequence `afterSeq` (NOTE_SCRIPT); the first note stays.
   */
  async noteReport(tag: string, nonce: string, tenantId: string, userId: string, afterSeq: number): Promise<void> {
    await this.noteScript(RedisKeys.challenge(tag, nonce), tenantId, userId, afterSeq);
  }

  /** The challenge's ChallengeFraudReported is published: no completion of its alert publishes it again. */
  async markRecorded(tag: string, nonce: string): Promise<void> {
    await this.recordedScript(RedisKeys.challenge(tag, nonce));
  }

  /**
   * Counts a new alert of the user against fraud.report's limit: at most `max` in any `windowMs`,
   * except those that deny a challenge still waiting. Returns when a retry can pass, if refused.
   */
  async admitReport(tag: string, alertId: string, now: Date, limit: { max: number; windowMs: number; denies: boolean; maxDenying?: number }): Promise<{ retryAt?: number }> {
    const [kind, retryAt] = await this.admitScript(fraudReportsKey(tag), alertId, now.getTime(), limit.windowMs, limit.max, limit.denies ? '1' : '0', limit.maxDenying ?? limit.max * 5);
    return kind === 'full' ? { retryAt: Number(retryAt) } : {};
  }

  /** Takes back an alert counted by admitReport that was never recorded (its publish failed): a retry of it, under a new id, must not find the window full of nothing. */
  async forgetReport(tag: string, alertId: string): Promise<void> {
    await this.redis.zrem(fraudReportsKey(tag), alertId);
  }
}
