import type { RedisClient } from '@mfa/projection';
import { RedisKeys } from '@mfa/projection';

/** Wrong app passwords of one user within APP_PASSWORD_WINDOW_SECONDS before apppasswords.verify answers rate_limited. */
export const APP_PASSWORD_FAILURES = 10;
export const APP_PASSWORD_WINDOW_SECONDS = 900;

// KEYS: the user's failure counter, the user's block (one slot). ARGV: limit, window seconds.
// A blocked user is not counted; otherwise the check is counted as a failure before it runs.
const RESERVE = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 'blocked' end
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2], 'NX')
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 'limited'
end
return 'ok'
`;

// KEYS: the user's failure counter. A check that was not a wrong password gives its count back.
const RELEASE = `
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 1
`;

/**
 * The guard of apppasswords.verify, per user in Redis: a check is counted as a failure atomically
 * before the password is hashed, and given back when it was not a wrong password, so that
 * concurrent guesses cannot pass the limit together (a count read first, then written after the
 * slow hash, let every guess in flight through). A blocked user's password is not checked at all.
 */
export class AppPasswordFailures {
  private readonly reserveScript: (failures: string, blocked: string, limit: number, windowSeconds: number) => Promise<string>;
  private readonly releaseScript: (failures: string) => Promise<number>;

  constructor(redis: RedisClient) {
    redis.defineCommand('mfaReserveAppPasswordCheck', { numberOfKeys: 2, lua: RESERVE });
    redis.defineCommand('mfaReleaseAppPasswordCheck', { numberOfKeys: 1, lua: RELEASE });
    const r = redis as unknown as {
      mfaReserveAppPasswordCheck: AppPasswordFailures['reserveScript'];
      mfaReleaseAppPasswordCheck: AppPasswordFailures['releaseScript'];
    };
    this.reserveScript = r.mfaReserveAppPasswordCheck.bind(redis);
    this.releaseScript = r.mfaReleaseAppPasswordCheck.bind(redis);
  }

  /** Counts a check of the user (tag) as a failure: `limited` past the limit, `blocked` for a blocked user (neither counted). */
  async reserve(tag: string): Promise<'ok' | 'limited' | 'blocked'> {
    const answer = await this.reserveScript(RedisKeys.appPasswordFailures(tag), RedisKeys.blocked(tag), APP_PASSWORD_FAILURES, APP_PASSWORD_WINDOW_SECONDS);
    return answer === 'blocked' || answer === 'limited' ? answer : 'ok';
  }

  /** The reserved check matched (or failed for another reason than a wrong password): not a failure. */
  async release(tag: string): Promise<void> {
    await this.releaseScript(RedisKeys.appPasswordFailures(tag));
  }
}
