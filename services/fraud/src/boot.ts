import { createLogger } from '@mfa/telemetry';
import { runService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import { loadFraudConfig } from './config.js';

export async function boot() {
  const config = loadFraudConfig();
  const log = createLogger('fraud', { instance: config.INSTANCE_NAME });
  return runService({ name: 'fraud', module: AppModule.forRoot(config, log), host: config.HTTP_HOST, port: config.HTTP_PORT, log });
}
