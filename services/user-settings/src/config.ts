import { z } from 'zod';
import { Consumers } from '@mfa/contracts';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, type AuthConfig, RedisConfig, type JetStreamConsumerOptions, type KeyringConfig } from '@mfa/service-kit';
import { ImportStoreEnv } from './adapters/import-jobs.js';
import { DEFAULT_IMPORT_JOBS_PER_INSTANCE } from './application/oath-import.service.js';
import { DEFAULT_OFFBOARDING_CONCURRENCY } from './application/tenant-offboarding.js';

const UserSettingsEnv = BaseConfig.extend(RedisConfig.shape).extend(ImportStoreEnv.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3004),
  /** Shown by authenticator apps next to the account; the Key URI format forbids ":" in it. */
  MFA_TOTP_ISSUER: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[^:\u0000-\u001f\u007f]+$/, 'must not contain ":" or control characters')
    .default('Open MFA'),
  /**
   * The public base URL of the device API (served by auth-challenge under /device/): push enrolment's
   * activation URLs are `<it>/v1/activate?code=…`. Behind a proxy, e.g. https://mfa.example.com/device.
   */
  DEVICE_API_PUBLIC_URL: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:3001/device'),
  /** Register creates an unknown tenant with default settings; "false" answers not_found instead. */
  MFA_TENANT_AUTO_CREATE: z.stringbool().default(true),
  /**
   * oath.import jobs one instance runs at once, each of another tenant, their batches taking
   * turns: more lets more tenants' imports progress side by side (each job holds a batch of rows
   * and a reader of its file), not more load on the event log.
   */
  OATH_IMPORT_JOBS_PER_INSTANCE: z.coerce.number().int().min(1).max(32).default(DEFAULT_IMPORT_JOBS_PER_INSTANCE),
  /**
   * Deleted tenants one instance offboards at once, each of another tenant: more lets a small
   * tenant's offboarding finish while a large one's runs, each adding its own erasures' load on
   * NATS and Redis.
   */
  TENANT_OFFBOARDING_CONCURRENCY: z.coerce.number().int().min(1).max(16).default(DEFAULT_OFFBOARDING_CONCURRENCY),
});

export type UserSettingsConfig = z.infer<typeof UserSettingsEnv> & KeyringConfig & { auth: AuthConfig };

export const loadUserSettingsConfig = (env: NodeJS.ProcessEnv = process.env): UserSettingsConfig => ({
  ...loadConfig(UserSettingsEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});

/** Consumer options the configuration sets over the declared ones (runService's `consumers`). */
export const userSettingsConsumers = (config: Pick<UserSettingsConfig, 'TENANT_OFFBOARDING_CONCURRENCY'>): Record<string, JetStreamConsumerOptions> => ({
  // The consumer's max ack pending (1000) lets an instance hold this many and its buffer besides.
  [Consumers.tenantOffboarding.durable]: { concurrency: config.TENANT_OFFBOARDING_CONCURRENCY },
});
