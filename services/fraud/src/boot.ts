import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import type { FraudConfig } from './config.js';

export async function boot(config: FraudConfig): Promise<RunningService> {
  const log = serviceLogger('fraud', config);
  if (!config.SMTP_URL) {
    log.warn(
      config.NODE_ENV === 'production'
        ? 'no SMTP_URL: fraud reports of tenants with notificationEmails are refused until one is set'
        : 'no SMTP_URL: fraud alert e-mails are not sent (each is recorded as logged; a log line names its alert)',
    );
  }
  return runService({ name: 'fraud', module: AppModule.forRoot(config, log), config, log });
}
