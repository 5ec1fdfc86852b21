import type { z } from 'zod';
import { BaseConfig, loadConfig } from '@mfa/service-kit';

export const FraudConfig = BaseConfig.extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3003),
});
export type FraudConfig = z.infer<typeof FraudConfig>;

export const loadFraudConfig = (env: NodeJS.ProcessEnv = process.env) => loadConfig(FraudConfig, env);
