import { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, RedisConfig, unsetWhenEmpty, type AuthConfig, type KeyringConfig } from '@mfa/service-kit';

const FraudEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3003),
  /**
   * The SMTP server fraud alerts' e-mails go through, e.g. smtp://127.0.0.1:2525 or
   * smtps://user:password@mail.example.com:465 (nodemailer's connection URL). Without it, in
   * development the e-mails are logged; in production a fraud report for a tenant with
   * notificationEmails is refused.
   */
  SMTP_URL: unsetWhenEmpty(
    z
      .string()
      .regex(/^smtps?:\/\/[^\s]+$/, 'must be an smtp:// or smtps:// URL such as smtp://127.0.0.1:2525')
      .optional(),
  ),
  /** The sender of fraud alerts: an address, or "Name <address>". */
  SMTP_FROM: unsetWhenEmpty(
    z
      .string()
      .regex(/^([^<>\r\n]*<[^<>\s@]+@[^<>\s@]+>|[^<>\s@]+@[^<>\s@]+)$/, 'must be an address or "Name <address>"')
      .default('MFA fraud alerts <mfa-alerts@localhost>'),
  ),
  /** Tries per address before the e-mail is recorded as failed (FraudNotificationFailed); back-off 0.25 s doubling, at most 30 s. */
  SMTP_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(40).default(10),
  /** Connection, greeting and socket timeout of one SMTP exchange: a server that hangs fails the try instead of holding it. */
  SMTP_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(120).default(10),
  /**
   * Per-IP throttling across users: starts that send something (SMS, voice,
   * push) from one client address of a tenant in any IP_START_WINDOW_SECONDS; the next answer
   * rate_limited until the oldest leaves the window. 0 turns it off. Trusted IPs bypass MFA before
   * any throttle; a tenant's ipLockout.neverBlock ranges are never throttled.
   */
  IP_MAX_STARTS_PER_WINDOW: z.coerce.number().int().min(0).max(100_000).default(300),
  IP_START_WINDOW_SECONDS: z.coerce.number().int().min(10).max(86_400).default(300),
});
export type FraudConfig = z.infer<typeof FraudEnv> & KeyringConfig & { auth: AuthConfig };

export const loadFraudConfig = (env: NodeJS.ProcessEnv = process.env): FraudConfig => ({
  ...loadConfig(FraudEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
