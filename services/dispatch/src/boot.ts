import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { createSmsProviders } from './adapters/sms/sms-provider.factory.js';
import { AppModule } from './app.module.js';
import type { DispatchConfig } from './config.js';

/** Provider problems (unknown names, missing credentials) fail here, before any connection. */
export async function boot(config: DispatchConfig): Promise<RunningService> {
  const log = serviceLogger('dispatch', config);
  if (config.developmentKey) log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key');
  const providers = createSmsProviders(config);
  log.info('SMS providers', { order: providers.map((p) => p.name) });
  return runService({ name: 'dispatch', module: AppModule.forRoot(config, log, providers), config, log });
}
