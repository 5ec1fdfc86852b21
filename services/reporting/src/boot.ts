import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { prepareDatabase } from './adapters/database.js';
import { AppModule } from './app.module.js';
import type { ReportingConfig } from './config.js';

export async function boot(config: ReportingConfig): Promise<RunningService> {
  const log = serviceLogger('reporting', config);
  // The schema must be in place before consumers start projecting; safe to race other instances.
  await prepareDatabase(config.DATABASE_URL, log);
  return runService({ name: 'reporting', module: AppModule.forRoot(config, log), config, log });
}
