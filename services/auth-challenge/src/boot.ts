import { loadKeyring } from '@mfa/crypto';
import { runService } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { AppModule } from './app.module.js';
import { loadAuthChallengeConfig } from './config.js';

export async function boot(env: NodeJS.ProcessEnv = process.env) {
  const config = loadAuthChallengeConfig(env);
  const log = createLogger('auth-challenge', { instance: config.INSTANCE_NAME });
  const { keyring, development } = loadKeyring(env);
  if (development) log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key (never in production)');
  return runService({
    name: 'auth-challenge',
    module: AppModule.forRoot(config, keyring, log),
    host: config.HTTP_HOST,
    port: config.HTTP_PORT,
    log,
  });
}
