import type { Redis } from 'ioredis';
import { userTag, type Keyring } from '@mfa/crypto';
import { RedisKeys } from '@mfa/projection';

/** Wrong codes one pending token may take before it must be enrolled again. */
const MAX_ACTIVATION_FAILURES = 5;

/**
 * Counts wrong activation codes per pending token in Redis (it expires with the enrolment), so
 * activation cannot be used to guess codes without limit.
 */
export class ActivationAttempts {
  constructor(
    private readonly redis: Redis,
    private readonly keyring: Keyring,
    private readonly windowSeconds: number,
  ) {}

  private key(tenantId: string, userId: string, tokenId: string): string {
    return RedisKeys.activationFailures(userTag(this.keyring, tenantId, userId), tokenId);
  }

  async exhausted(tenantId: string, userId: string, tokenId: string): Promise<boolean> {
    return Number((await this.redis.get(this.key(tenantId, userId, tokenId))) ?? 0) >= MAX_ACTIVATION_FAILURES;
  }

  async recordFailure(tenantId: string, userId: string, tokenId: string): Promise<void> {
    const key = this.key(tenantId, userId, tokenId);
    await this.redis.multi().incr(key).expire(key, this.windowSeconds).exec();
  }
}
