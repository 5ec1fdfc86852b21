import type { z } from 'zod';
import { BaseConfig, DatabaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, type AuthConfig, type KeyringConfig } from '@mfa/service-kit';

const ReportingEnv = BaseConfig.extend({
  ...DatabaseConfig.shape,
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3005),
});
export type ReportingConfig = z.infer<typeof ReportingEnv> & KeyringConfig & { auth: AuthConfig };

export const loadReportingConfig = (env: NodeJS.ProcessEnv = process.env): ReportingConfig => ({
  ...loadConfig(ReportingEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
