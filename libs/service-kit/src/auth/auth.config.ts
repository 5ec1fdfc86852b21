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
});

export interface AuthConfig {
  mode: 'required' | 'off';
  /** Undefined when not configured (development). */
  platformKey: string | undefined;
  /** Milliseconds between writes of API client last use; default 30 s. */
  usageFlushMs?: number | undefined;
  /** Whether an unsigned internal request is answered (MFA_INTERNAL_UNSIGNED=accept, for an upgrade); default false. */
  acceptUnsignedInternal?: boolean | undefined;
}

export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env): AuthConfig {
  const parsed = AuthEnv.safeParse({
    NODE_ENV: env.NODE_ENV,
    MFA_AUTH: env.MFA_AUTH || undefined,
    MFA_PLATFORM_API_KEY: env.MFA_PLATFORM_API_KEY || undefined,
    MFA_CLIENT_USAGE_FLUSH_SECONDS: env.MFA_CLIENT_USAGE_FLUSH_SECONDS || undefined,
    MFA_INTERNAL_UNSIGNED: env.MFA_INTERNAL_UNSIGNED || undefined,
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
  return {
    mode,
    platformKey: parsed.data.MFA_PLATFORM_API_KEY,
    usageFlushMs: parsed.data.MFA_CLIENT_USAGE_FLUSH_SECONDS * 1000,
    acceptUnsignedInternal: parsed.data.MFA_INTERNAL_UNSIGNED === 'accept',
  };
}
