import { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, type AuthConfig, RedisConfig, type KeyringConfig } from '@mfa/service-kit';

const AuthChallengeEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3001),
  /** How long a finished or expired challenge stays answerable (status, conflict) after it expires. */
  CHALLENGE_RETENTION_SECONDS: z.coerce.number().int().min(60).max(7 * 24 * 3600).default(900),
  /** SMS codes sent per user per window (as Twilio Verify: 5 sends; by default 5 in 5 minutes). */
  SMS_MAX_SENDS_PER_WINDOW: z.coerce.number().int().min(1).max(1000).default(5),
  SMS_SEND_WINDOW_SECONDS: z.coerce.number().int().min(10).max(86_400).default(300),
  /**
   * Brute-force guard across challenges: after this many wrong codes for one user within the
   * counter window, no code of that user is checked (start and verify answer rate_limited) for
   * the lockout duration. NIST SP 800-63B allows at most 100; privacyIDEA uses 10.
   */
  MFA_LOCKOUT_THRESHOLD: z.coerce.number().int().min(1).max(100).default(10),
  MFA_LOCKOUT_COUNTER_RESET_SECONDS: z.coerce.number().int().min(10).max(86_400).default(900),
  MFA_LOCKOUT_SECONDS: z.coerce.number().int().min(10).max(86_400).default(900),
  /**
   * Cap on wrong codes in a row for one user, whatever the window (NIST SP 800-63B §5.2.2: at
   * most 100). Once reached, start and verify answer rate_limited until a success by another
   * route or an administrator unlocks the user; waiting does not end it.
   */
  MFA_MAX_CONSECUTIVE_FAILURES: z.coerce.number().int().min(1).max(100).default(100),
});
export type AuthChallengeConfig = z.infer<typeof AuthChallengeEnv> & KeyringConfig & { auth: AuthConfig };

export const loadAuthChallengeConfig = (env: NodeJS.ProcessEnv = process.env): AuthChallengeConfig => ({
  ...loadConfig(AuthChallengeEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
