import type { z } from 'zod';
import { BaseConfig, DatabaseConfig, loadConfig } from '@mfa/service-kit';

export const ReportingConfig = BaseConfig.extend({
  ...DatabaseConfig.shape,
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3005),
});
export type ReportingConfig = z.infer<typeof ReportingConfig>;

export const loadReportingConfig = (env: NodeJS.ProcessEnv = process.env) => loadConfig(ReportingConfig, env);
