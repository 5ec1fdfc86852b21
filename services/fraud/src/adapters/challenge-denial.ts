import type { Redis } from 'ioredis';
import { RedisKeys } from '@mfa/projection';

/**
 * Denies a pending challenge that its user reported as fraud, in Redis where auth-challenge keeps
 * it: atomically, and only a pending challenge of that tenant and user (one key, the challenge's
 * slot). KEYS: the challenge. ARGV: tenantId, userId, now ms.
 * Returns {'denied', method} | {'already', method} (denied for fraud before: a retry) |
 * {'completed', status} | {'not_found'}.
 */
const DENY_SCRIPT = `
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'method', 'status', 'reason')
if not ch[1] or ch[1] ~= ARGV[1] or ch[2] ~= ARGV[2] then return {'not_found'} end
if ch[4] == 'denied' and ch[5] == 'fraud_reported' then return {'already', ch[3]} end
if ch[4] ~= 'pending' then return {'completed', ch[4]} end
redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'fraud_reported', 'completedAt', ARGV[3])
return {'denied', ch[3]}
`;

export type Denial = { kind: 'denied' | 'already'; method: string } | { kind: 'completed'; status: string } | { kind: 'not_found' };

export class ChallengeDenial {
  private readonly deny: (...args: Array<string | number>) => Promise<string[]>;

  constructor(redis: Redis) {
    redis.defineCommand('mfaFraudDenyChallenge', { numberOfKeys: 1, lua: DENY_SCRIPT });
    this.deny = (redis as unknown as { mfaFraudDenyChallenge: (...a: Array<string | number>) => Promise<string[]> }).mfaFraudDenyChallenge.bind(redis);
  }

  async denyPending(tag: string, nonce: string, tenantId: string, userId: string, now: Date): Promise<Denial> {
    const [kind, value] = await this.deny(RedisKeys.challenge(tag, nonce), tenantId, userId, now.getTime());
    if (kind === 'denied' || kind === 'already') return { kind, method: value ?? '' };
    if (kind === 'completed') return { kind, status: value ?? '' };
    return { kind: 'not_found' };
  }
}
