import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import type { AuthChallengeConfig } from './config.js';

export async function boot(config: AuthChallengeConfig): Promise<RunningService> {
  const log = serviceLogger('auth-challenge', config);
  if (config.developmentKey) log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key (never in production)');
  return runService({ name: 'auth-challenge', module: AppModule.forRoot(config, log), config, log });
}
