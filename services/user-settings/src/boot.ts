import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import { userSettingsConsumers, type UserSettingsConfig } from './config.js';

export async function boot(config: UserSettingsConfig): Promise<RunningService> {
  const log = serviceLogger('user-settings', config);
  if (config.developmentKey) {
    log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key; TOTP secrets are not protected');
  }
  return runService({ name: 'user-settings', module: AppModule.forRoot(config, log), config, log, consumers: userSettingsConsumers(config) });
}
