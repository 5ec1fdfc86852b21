import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { Consumers, DEVICE_PLATFORMS } from '@mfa/contracts';
import { createPushProviders } from './adapters/push/push-provider.factory.js';
import { createSmsProviders } from './adapters/sms/sms-provider.factory.js';
import { AppModule } from './app.module.js';
import { cleartextWarnings, type DispatchConfig } from './config.js';

/** Provider problems (unknown names, missing credentials, unreadable keys) fail here, before any connection. */
export async function boot(config: DispatchConfig): Promise<RunningService> {
  const log = serviceLogger('dispatch', config);
  if (config.developmentKey) log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key');
  const providers = createSmsProviders(config);
  log.info('SMS providers', { order: providers.map((p) => p.name) });
  for (const warning of cleartextWarnings(config, providers.map((p) => p.name))) log.warn(warning);
  const pushProviders = createPushProviders(config);
  // Devices of a platform without a provider still sign in, by polling the device API (docs/operations.md, "Push providers").
  const pollOnly = DEVICE_PLATFORMS.filter((platform) => platform !== 'none' && !pushProviders.some((p) => p.platform === platform));
  log.info('push providers', { providers: pushProviders.map((p) => `${p.name} (${p.platform})`), pollOnly });
  if (config.NODE_ENV === 'production' && pollOnly.length > 0) log.warn(`no push provider for ${pollOnly.join(' or ')}: those devices are poll-only`);
  // Sends wait on a provider, not on the CPU: how many are in flight is the operator's to set.
  // The shared consumer holds no more unacknowledged than an instance sends at once (operations.md).
  const inFlight = (sends: number) => ({ concurrency: sends, maxAckPending: sends });
  const consumers = {
    [Consumers.dispatchSms.durable]: inFlight(config.SMS_CONCURRENCY),
    [Consumers.dispatchSmsResend.durable]: inFlight(config.SMS_CONCURRENCY),
    [Consumers.dispatchPush.durable]: inFlight(config.PUSH_CONCURRENCY),
  };
  return runService({ name: 'dispatch', module: AppModule.forRoot(config, log, providers, pushProviders), config, log, consumers });
}
