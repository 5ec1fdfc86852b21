import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import type { FraudConfig } from './config.js';

export async function boot(config: FraudConfig): Promise<RunningService> {
  const log = serviceLogger('fraud', config);
  return runService({ name: 'fraud', module: AppModule.forRoot(config, log), config, log });
}
