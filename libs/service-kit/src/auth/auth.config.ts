import { z } from 'zod';
import { ConfigError } from '../config.js';

/**
 * Who may call (docs/api.md "Callers, keys and scopes"; docs/operations.md "Configuration"):
 * MFA_AUTH `required` (default when NODE_ENV=production) or `off` (default otherwise: a request
 * without a key acts with every scope on every tenant); MFA_PLATFORM_API_KEY, the operator's key
 * (every scope on every tenant, the only one that creates tenants), required in production.
 */
const AuthEnv = z.object({
  NODE_ENV: z.string().optional(),
  MFA_AUTH: z.enum(['required', 'off']).optional(),
  MFA_PLATFORM_API_KEY: z
    .string()
    .min(32, 'must be at least 32 characters (openssl rand -base64 32)')
    .max(512)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
    .optional(),
  /** How often each instance writes when API clients were last used (clients.list `lastUsedAt`). */
  MFA_CLIENT_USAGE_FLUSH_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  /**
   * `refuse` (default): an `mfa.int.` request without a valid signature is refused. `accept`: for
   * the rolling upgrade from a release whose services did not sign them, an unsigned one is
   * answered (and counted); a wrongly signed one is still refused.
   */
  MFA_INTERNAL_UNSIGNED: z.enum(['refuse', 'accept']).default('refuse'),
  /** When `accept` ends (UTC, `Z`): required with `accept` in production, so that a forgotten one closes itself. */
  MFA_INTERNAL_UNSIGNED_UNTIL: z.iso.datetime({ message: 'must be a UTC time such as 2026-12-07T18:00:00Z' }).optional(),
});

/**
 * The furthest MFA_INTERNAL_UNSIGNED_UNTIL may lie ahead at boot. A rolling upgrade takes hours;
 * a week leaves room for one staged over a weekend or paused for a problem, and bounds how long a
 * forgotten `accept` leaves NATS permissions the only wall around the internal subjects.
 */
export const UNSIGNED_WINDOW_MAX_MS = 7 * 24 * 60 * 60 * 1000;

export interface AuthConfig {
  mode: 'required' | 'off';
  /** Undefined when not configured (development). */
  platformKey: string | undefined;
  /** Milliseconds between writes of API client last use; default 30 s. */
  usageFlushMs?: number | undefined;
  /** Whether an unsigned internal request is answered (MFA_INTERNAL_UNSIGNED=accept, for an upgrade); default false. */
  acceptUnsignedInternal?: boolean | undefined;
  /**
   * Unix ms from which an unsigned internal request is refused again though `acceptUnsignedInternal`
   * (MFA_INTERNAL_UNSIGNED_UNTIL); undefined: no end (development without the variable).
   */
  acceptUnsignedInternalUntil?: number | undefined;
}

/** `now`: the boot clock, against which MFA_INTERNAL_UNSIGNED_UNTIL is checked. */
export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env, now: number = Date.now()): AuthConfig {
  const parsed = AuthEnv.safeParse({
    NODE_ENV: env.NODE_ENV,
    MFA_AUTH: env.MFA_AUTH || undefined,
    MFA_PLATFORM_API_KEY: env.MFA_PLATFORM_API_KEY || undefined,
    MFA_CLIENT_USAGE_FLUSH_SECONDS: env.MFA_CLIENT_USAGE_FLUSH_SECONDS || undefined,
    MFA_INTERNAL_UNSIGNED: env.MFA_INTERNAL_UNSIGNED || undefined,
    MFA_INTERNAL_UNSIGNED_UNTIL: env.MFA_INTERNAL_UNSIGNED_UNTIL || undefined,
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  const production = parsed.data.NODE_ENV === 'production';
  const mode = parsed.data.MFA_AUTH ?? (production ? 'required' : 'off');
  if (production && !parsed.data.MFA_PLATFORM_API_KEY) {
    throw new ConfigError('invalid configuration: MFA_PLATFORM_API_KEY is required when NODE_ENV=production');
  }
  if (production && mode === 'off') {
    throw new ConfigError('invalid configuration: MFA_AUTH=off is refused when NODE_ENV=production');
  }
  const acceptUnsignedInternal = parsed.data.MFA_INTERNAL_UNSIGNED === 'accept';
  const until = parsed.data.MFA_INTERNAL_UNSIGNED_UNTIL;
  const acceptUnsignedInternalUntil = acceptUnsignedInternal && until !== undefined ? Date.parse(until) : undefined;
  if (acceptUnsignedInternal && production && acceptUnsignedInternalUntil === undefined) {
    throw new ConfigError(
      'invalid configuration: MFA_INTERNAL_UNSIGNED_UNTIL (a UTC time such as 2026-12-07T18:00:00Z, at most 7 days ahead) is required with MFA_INTERNAL_UNSIGNED=accept when NODE_ENV=production',
    );
  }
  // Already past is no error: the window is closed (unsigned requests refused, as with `refuse`), so
  // a setting forgotten after the upgrade cannot keep a restarted service from starting.
  if (acceptUnsignedInternalUntil !== undefined && acceptUnsignedInternalUntil - now > UNSIGNED_WINDOW_MAX_MS) {
    throw new ConfigError(`invalid configuration: MFA_INTERNAL_UNSIGNED_UNTIL must be at most 7 days ahead (it is ${until})`);
  }
  return {
    mode,
    platformKey: parsed.data.MFA_PLATFORM_API_KEY,
    usageFlushMs: parsed.data.MFA_CLIENT_USAGE_FLUSH_SECONDS * 1000,
    acceptUnsignedInternal,
    acceptUnsignedInternalUntil,
  };
}
