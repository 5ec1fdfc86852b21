import { createLogger } from '@mfa/telemetry';
import { runService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import { loadUserSettingsConfig } from './config.js';

export async function boot() {
  const config = loadUserSettingsConfig();
  const log = createLogger('user-settings', { instance: config.INSTANCE_NAME });
  if (config.developmentKey) {
    log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key; TOTP secrets are not protected');
  }
  return runService({
    name: 'user-settings',
    module: AppModule.forRoot(config, log),
    host: config.HTTP_HOST,
    port: config.HTTP_PORT,
    log,
  });
}
