import type { RedisClient } from '@mfa/projection';
import { challengeId, RedisKeys } from '@mfa/projection';

/**
 * Denies a pending challenge that its user reported as fraud, in Redis where auth-challenge keeps
 * it: atomically, and only a pending, unexpired challenge of that tenant and user (one key, the
 * challenge's slot). KEYS: the challenge, the user's pending push. ARGV: tenantId, userId, now ms,
 * the challenge id. A push denied here is no longer the push its user waits on: the next push may
 * start, and this one never counts as ignored (MFA fatigue).
 * Returns {'denied', method, ip, app} | {'already', method, ip, app} (denied for fraud before: a
 * retry) | {'completed', status, ip, app} (decided, or 'expired': its outcome stays what it was) |
 * {'not_found'}; ip and app are the challenge's client IP and application ('' when the start named
 * none).
 */
const DENY_SCRIPT = `
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'method', 'status', 'reason', 'ip', 'app', 'expiresAt')
if not ch[1] or ch[1] ~= ARGV[1] or ch[2] ~= ARGV[2] then return {'not_found'} end
local ip, app = ch[6] or '', ch[7] or ''
if ch[4] == 'denied' and ch[5] == 'fraud_reported' then return {'already', ch[3], ip, app} end
if ch[4] ~= 'pending' then return {'completed', ch[4], ip, app} end
if tonumber(ch[8] or '0') <= tonumber(ARGV[3]) then return {'completed', 'expired', ip, app} end
redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'fraud_reported', 'completedAt', ARGV[3])
local pending = redis.call('GET', KEYS[2])
if pending and string.sub(pending, 1, #ARGV[4] + 1) == ARGV[4] .. '|' then redis.call('DEL', KEYS[2]) end
return {'denied', ch[3], ip, app}
`;

/** Where the challenge came from (absent when its start named none). */
export interface ChallengeOrigin {
  clientIp?: string;
  application?: string;
}
export type Denial =
  | { kind: 'denied' | 'already'; method: string; origin: ChallengeOrigin }
  | { kind: 'completed'; status: string; origin: ChallengeOrigin }
  | { kind: 'not_found' };

export class ChallengeDenial {
  private readonly deny: (...args: Array<string | number>) => Promise<string[]>;

  constructor(redis: RedisClient) {
    redis.defineCommand('mfaFraudDenyChallenge', { numberOfKeys: 2, lua: DENY_SCRIPT });
    this.deny = (redis as unknown as { mfaFraudDenyChallenge: (...a: Array<string | number>) => Promise<string[]> }).mfaFraudDenyChallenge.bind(redis);
  }

  async denyPending(tag: string, nonce: string, tenantId: string, userId: string, now: Date): Promise<Denial> {
    const [kind, value, ip, app] = await this.deny(RedisKeys.challenge(tag, nonce), RedisKeys.pendingPush(tag), tenantId, userId, now.getTime(), challengeId(tag, nonce));
    const origin: ChallengeOrigin = { ...(ip ? { clientIp: ip } : {}), ...(app ? { application: app } : {}) };
    if (kind === 'denied' || kind === 'already') return { kind, method: value ?? '', origin };
    if (kind === 'completed') return { kind, status: value ?? '', origin };
    return { kind: 'not_found' };
  }
}
