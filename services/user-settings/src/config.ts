import { z } from 'zod';
import { loadKeyring, type Keyring } from '@mfa/crypto';
import { BaseConfig, ConfigError, loadConfig, RedisConfig } from '@mfa/service-kit';

export const UserSettingsEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3004),
  /** Shown by authenticator apps next to the account; the Key URI format forbids ":" in it. */
  MFA_TOTP_ISSUER: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[^:\u0000-\u001f\u007f]+$/, 'must not contain ":" or control characters')
    .default('Open MFA'),
  /** Register creates an unknown tenant with default settings; "false" answers not_found instead. */
  MFA_TENANT_AUTO_CREATE: z.stringbool().default(true),
});

export type UserSettingsConfig = z.infer<typeof UserSettingsEnv> & {
  keyring: Keyring;
  /** True when no MFA_ENCRYPTION_KEY was given and the public development key is in use. */
  developmentKey: boolean;
};

export function loadUserSettingsConfig(env: NodeJS.ProcessEnv = process.env): UserSettingsConfig {
  const config = loadConfig(UserSettingsEnv, env);
  try {
    const { keyring, development } = loadKeyring(env);
    return { ...config, keyring, developmentKey: development };
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${(error as Error).message}`, { cause: error });
  }
}
