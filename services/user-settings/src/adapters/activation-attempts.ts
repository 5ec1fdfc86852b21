import type { RedisClient } from '@mfa/projection';
import { userTag, type Keyring } from '@mfa/crypto';
import { RedisKeys } from '@mfa/projection';

/** Codes one pending token may be tried with before it must be enrolled again. */
export const MAX_ACTIVATION_ATTEMPTS = 5;

// KEYS: the token's attempt counter. ARGV: window seconds. Counts the attempt and answers the count.
const RESERVE = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
`;

/**
 * Limits activation attempts per pending token in Redis (the counter expires with the enrolment),
 * so activation cannot be used to guess codes without limit. An attempt is counted atomically
 * before its code is checked: concurrent requests cannot pass the limit together.
 */
export class ActivationAttempts {
  private readonly reserveScript: (key: string, windowSeconds: number) => Promise<number>;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
    private readonly windowSeconds: number,
  ) {
    redis.defineCommand('mfaReserveActivationAttempt', { numberOfKeys: 1, lua: RESERVE });
    const r = redis as unknown as { mfaReserveActivationAttempt: (key: string, window: number) => Promise<number> };
    this.reserveScript = r.mfaReserveActivationAttempt.bind(redis);
  }

  private key(tenantId: string, userId: string, tokenId: string): string {
    return RedisKeys.activationFailures(userTag(this.keyring, tenantId, userId), tokenId);
  }

  /** Counts one attempt; false when the token has had its MAX_ACTIVATION_ATTEMPTS already. */
  async reserve(tenantId: string, userId: string, tokenId: string): Promise<boolean> {
    const n = await this.reserveScript(this.key(tenantId, userId, tokenId), this.windowSeconds);
    return n <= MAX_ACTIVATION_ATTEMPTS;
  }

  /** After a successful activation the counter has no use left. */
  async clear(tenantId: string, userId: string, tokenId: string): Promise<void> {
    await this.redis.del(this.key(tenantId, userId, tokenId));
  }
}
