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
  if (config.NODE_ENV === 'production' && providers.some((p) => p.name === 'smpp') && config.SMPP_URL?.startsWith('smpp:')) {
    log.warn('SMPP_URL is smpp:// (no TLS): the SMPP password and every code cross the network in clear unless the link is private; prefer smpps://');
  }
  return runService({ name: 'dispatch', module: AppModule.forRoot(config, log, providers), config, log });
}
