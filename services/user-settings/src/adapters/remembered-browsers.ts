import type { RedisClient } from '@mfa/projection';
import { RedisKeys } from '@mfa/projection';

export interface RememberedBrowser {
  rememberId: string;
  createdAt: string;
  until: string;
}

/**
 * The browsers a user asked to remember (rememberMfa), as auth-challenge keeps them in the user's
 * hash slot: by the id of their token (never the token), with when they were remembered and until
 * when. users.get lists them, users.remembered.revoke forgets one or all, users.reset forgets all
 * and the time of the last MFA that legacy clients rely on.
 */
export class RememberedBrowsers {
  constructor(private readonly redis: RedisClient) {}

  async list(tag: string, now: Date): Promise<RememberedBrowser[]> {
    const all = await this.redis.hgetall(RedisKeys.remembered(tag));
    return Object.entries(all)
      .map(([rememberId, value]) => {
        const [until, created] = value.split(':').map(Number);
        return { rememberId, until: until ?? 0, created: created ?? 0 };
      })
      .filter((b) => b.until > now.getTime())
      .sort((a, b) => b.created - a.created)
      .map((b) => ({ rememberId: b.rememberId, createdAt: new Date(b.created).toISOString(), until: new Date(b.until).toISOString() }));
  }

  /** Forgets one browser (true if it was remembered), or all of them when no id is given (how many). */
  async revoke(tag: string, rememberId?: string): Promise<number> {
    if (rememberId === undefined) return this.redis.del(RedisKeys.remembered(tag));
    return this.redis.hdel(RedisKeys.remembered(tag), rememberId);
  }

  /** users.reset: no browser remembered, no past MFA for legacy clients (one slot, one DEL). */
  async clear(tag: string): Promise<void> {
    await this.redis.del(RedisKeys.remembered(tag), RedisKeys.lastMfa(tag));
  }
}
