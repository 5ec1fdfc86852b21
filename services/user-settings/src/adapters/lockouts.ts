import type { Redis } from 'ioredis';
import { userTag, type Keyring } from '@mfa/crypto';
import { RedisKeys } from '@mfa/projection';

/** The lockout counters auth-challenge keeps per user in Redis (libs/projection keys). */
export class Lockouts {
  constructor(
    private readonly redis: Redis,
    private readonly keyring: Keyring,
  ) {}

  /** One DEL of keys of one slot (the user's hash tag). */
  async clear(tenantId: string, userId: string): Promise<void> {
    const tag = userTag(this.keyring, tenantId, userId);
    await this.redis.del(RedisKeys.failures(tag), RedisKeys.consecutiveFailures(tag));
  }
}
