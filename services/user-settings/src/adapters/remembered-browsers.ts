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
 * when. users.get lists them, users.remembered.revoke forgets one, or all of them and the time of
 * the last MFA that legacy clients rely on (as users.reset does).
 */
export class RememberedBrowsers {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaForgetRemembered', { numberOfKeys: 2, lua: FORGET_SCRIPT });
  }

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

  /**
   * Forgets one browser (1 if it was remembered), or, when no id is given, all of them (how many)
   * and the last MFA: no device of the user is trusted any more, legacy clients included.
   */
  async revoke(tag: string, rememberId?: string): Promise<number> {
    if (rememberId !== undefined) return this.redis.hdel(RedisKeys.remembered(tag), rememberId);
    const replies = await this.redis.multi().hlen(RedisKeys.remembered(tag)).del(RedisKeys.remembered(tag), RedisKeys.lastMfa(tag)).exec();
    const [error, count] = replies?.[0] ?? [new Error('users.remembered.revoke: the transaction was not run'), 0];
    if (error) throw error;
    return Number(count);
  }

  /** users.reset: no browser remembered, no past MFA for legacy clients (one slot, one DEL). */
  async clear(tag: string): Promise<void> {
    await this.redis.del(RedisKeys.remembered(tag), RedisKeys.lastMfa(tag));
  }

  /**
   * The projector's part of a reset: no browser remembered at or before `upToMs`, and no MFA
   * completed by then for legacy clients (one slot, one script). What came after (the user
   * registered again and signed in) stays, so an old reset handled late or in a replay leaves it.
   */
  async forgetUpTo(tag: string, upToMs: number): Promise<void> {
    await (this.redis as unknown as ForgetScript).mfaForgetRemembered(RedisKeys.remembered(tag), RedisKeys.lastMfa(tag), upToMs);
  }
}

type ForgetScript = { mfaForgetRemembered: (remembered: string, lastMfa: string, upToMs: number) => Promise<number> };

/** KEYS: the user's remembered browsers (`<until ms>:<created ms>` each), the last MFA (ms). ARGV: up to when (ms). */
const FORGET_SCRIPT = `
local upTo = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(string.match(all[i + 1], ':(%d+)$') or '0') <= upTo then redis.call('HDEL', KEYS[1], all[i]) end
end
if tonumber(redis.call('GET', KEYS[2]) or '0') <= upTo then redis.call('DEL', KEYS[2]) end
return 1
`;
