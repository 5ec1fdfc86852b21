import { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, type AuthConfig, RedisConfig, type KeyringConfig, unsetWhenEmpty } from '@mfa/service-kit';
import { DEFAULT_OUTBOX_MAX_PER_SLOT } from './adapters/scripts.js';
import { DEFAULT_SOURCE_FAILURE_LIMITS } from './adapters/source-failures.js';
import { DEFAULT_TRUSTED_PROXIES, FORWARDED_HEADERS } from './api/device-api.source.js';

/** A comma-separated list of addresses and CIDR ranges, IPv4 or IPv6, or `none`. */
const AddressList = z
  .string()
  .transform((text) => (text.trim() === 'none' ? [] : text.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')))
  .pipe(z.array(z.union([z.ipv4(), z.ipv6(), z.cidrv4(), z.cidrv6()], { error: 'must be IPv4 or IPv6 addresses or CIDR ranges, comma-separated, or none' })));

const AuthChallengeEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3001),
  /** How long a finished or expired challenge stays answerable (status, conflict) after it expires. */
  CHALLENGE_RETENTION_SECONDS: z.coerce.number().int().min(60).max(7 * 24 * 3600).default(900),
  /** SMS codes sent per user per window (as Twilio Verify: 5 sends; by default 5 in 5 minutes). */
  SMS_MAX_SENDS_PER_WINDOW: z.coerce.number().int().min(1).max(1000).default(5),
  SMS_SEND_WINDOW_SECONDS: z.coerce.number().int().min(10).max(86_400).default(300),
  /** Sends of one SMS challenge's code in all, the start's and challenge.resend's (Twilio Verify: 5); 1 turns resends off. */
  SMS_MAX_SENDS_PER_CHALLENGE: z.coerce.number().int().min(1).max(10).default(5),
  /** The least time between two sends of one challenge's code (Okta: one SMS per 30 s). */
  SMS_RESEND_MIN_INTERVAL_SECONDS: z.coerce.number().int().min(0).max(600).default(30),
  /** Push challenges per user per window (MFA fatigue), and the window, which also counts denied and ignored pushes. */
  PUSH_MAX_PER_WINDOW: z.coerce.number().int().min(1).max(100).default(5),
  PUSH_WINDOW_SECONDS: z.coerce.number().int().min(60).max(86_400).default(900),
  /** Denied or ignored pushes within the window that suspend push for the user (the IdP must use another method). */
  PUSH_REFUSALS_TO_SUSPEND: z.coerce.number().int().min(1).max(100).default(3),
  PUSH_SUSPEND_SECONDS: z.coerce.number().int().min(60).max(7 * 86_400).default(3600),
  // The lockout across challenges (threshold, counter window, lockout duration) is a tenant
  // setting (`lockout`); the cap below stays one for the whole service.
  /**
   * Cap on wrong codes in a row for one user, whatever the window (NIST SP 800-63B §5.2.2: at
   * most 100). Once reached, start and verify answer rate_limited until a success by another
   * route or an administrator unlocks the user; waiting does not end it.
   */
  MFA_MAX_CONSECUTIVE_FAILURES: z.coerce.number().int().min(1).max(100).default(100),
  /**
   * Failed device API requests from one source address (an IPv6 /64) in a window: refused
   * activations (invalid_request, not_found) and signed requests refused 401 or 403 not_activated.
   * Beyond it, until the window ends, the source's activations answer 429 rate_limited before
   * user-settings is asked, and its failing requests 429 instead of their 401 or 403; a request a
   * device signed is served. 0 turns the throttle off.
   */
  DEVICE_API_MAX_FAILURES_PER_WINDOW: z.coerce.number().int().min(0).max(1_000_000).default(DEFAULT_SOURCE_FAILURE_LIMITS.maxPerWindow),
  DEVICE_API_FAILURE_WINDOW_SECONDS: z.coerce.number().int().min(10).max(86_400).default(DEFAULT_SOURCE_FAILURE_LIMITS.windowSeconds),
  /**
   * The reverse proxies in front of the device API, whose X-Forwarded-For (or Forwarded) names the client
   * (sourceAddress); `none`: the address that connects is the client. Default: this host only.
   */
  DEVICE_API_TRUSTED_PROXIES: unsetWhenEmpty(AddressList.default([...DEFAULT_TRUSTED_PROXIES])),
  /**
   * The most decisions a hash slot's outbox holds whose events JetStream has not acknowledged: at
   * that many, the slot's starts, verifies, resends and answers decide nothing and answer
   * `unavailable` until JetStream takes events again, so that a long JetStream outage cannot fill
   * Redis. 16,384 slots: the default bounds the outboxes to about a million decisions.
   */
  OUTBOX_MAX_PER_SLOT: z.coerce.number().int().min(1).max(100_000).default(DEFAULT_OUTBOX_MAX_PER_SLOT),
  /**
   * The header those proxies name the client in: `x-forwarded-for` or RFC 7239's `forwarded`. One,
   * not both: a proxy appends to one and passes the other on as the client wrote it.
   */
  DEVICE_API_FORWARDED_HEADER: unsetWhenEmpty(
    z.string().trim().toLowerCase().pipe(z.enum(FORWARDED_HEADERS, { error: 'must be x-forwarded-for or forwarded' })).default('x-forwarded-for'),
  ),
});
export type AuthChallengeConfig = z.infer<typeof AuthChallengeEnv> & KeyringConfig & { auth: AuthConfig };

export const loadAuthChallengeConfig = (env: NodeJS.ProcessEnv = process.env): AuthChallengeConfig => ({
  ...loadConfig(AuthChallengeEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
