import { loadKeyring } from '@mfa/crypto';
import { runService } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { createSmsProviders } from './adapters/sms/sms-provider.factory.js';
import { AppModule } from './app.module.js';
import { loadDispatchConfig } from './config.js';

/** Boots dispatch from `env`; configuration and provider problems fail here, before any connection. */
export async function boot(env: NodeJS.ProcessEnv = process.env) {
  const config = loadDispatchConfig(env);
  const log = createLogger('dispatch', { instance: config.INSTANCE_NAME });
  const { keyring, development } = loadKeyring(env);
  if (development) log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key');
  const providers = createSmsProviders(config);
  log.info('SMS providers', { order: providers.map((p) => p.name) });
  return runService({
    name: 'dispatch',
    module: AppModule.forRoot({ config, log, keyring, providers }),
    host: config.HTTP_HOST,
    port: config.HTTP_PORT,
    log,
  });
}
