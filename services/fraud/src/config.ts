import type { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, RedisConfig, type AuthConfig, type KeyringConfig } from '@mfa/service-kit';

const FraudEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3003),
});
export type FraudConfig = z.infer<typeof FraudEnv> & KeyringConfig & { auth: AuthConfig };

export const loadFraudConfig = (env: NodeJS.ProcessEnv = process.env): FraudConfig => ({
  ...loadConfig(FraudEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
