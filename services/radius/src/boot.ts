import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { AppModule } from './app.module.js';
import type { RadiusConfig } from './config.js';

/**
 * Boots the RADIUS front like the other services (metrics, the master key check, NATS and Redis,
 * then the UDP socket in ListenerLifecycle, then HTTP for /health and /metrics), without the NATS
 * transport: it serves no subject, it only asks the challenge API.
 */
export async function boot(config: RadiusConfig): Promise<RunningService> {
  const log = serviceLogger('radius', config);
  return runService({ name: 'radius', module: AppModule.forRoot(config, log), config, log, transport: false });
}
