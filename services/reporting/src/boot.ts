import { createLogger } from '@mfa/telemetry';
import { runService } from '@mfa/service-kit';
import { prepareDatabase } from './adapters/database.js';
import { AppModule } from './app.module.js';
import { loadReportingConfig, type ReportingConfig } from './config.js';

export async function boot(config: ReportingConfig = loadReportingConfig()) {
  const log = createLogger('reporting', { instance: config.INSTANCE_NAME });
  // The schema must be in place before consumers start projecting; safe to race other instances.
  await prepareDatabase(config.DATABASE_URL, log);
  return runService({ name: 'reporting', module: AppModule.forRoot(config, log), host: config.HTTP_HOST, port: config.HTTP_PORT, log });
}
