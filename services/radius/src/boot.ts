import { runService, serviceLogger, STOP_WITHIN_MS, type RunningService } from '@mfa/service-kit';
import { AppModule, drainMsOf } from './app.module.js';
import { RadiusService } from './application/radius.service.js';
import type { RadiusConfig } from './config.js';

/**
 * Boots the RADIUS front like the other services (metrics, the master key check, NATS and Redis,
 * then the UDP socket in ListenerLifecycle, then HTTP for /health and /metrics), without the NATS
 * transport: it serves no subject, it only asks the challenge API.
 */
export async function boot(config: RadiusConfig): Promise<RunningService> {
  const log = serviceLogger('radius', config);
  const running = await runService({ name: 'radius', module: AppModule.forRoot(config, log), config, log, transport: false });
  // A shutdown first waits for the answers under way (a push up to RADIUS_WAIT_SECONDS), then
  // stops like any service.
  return { ...running, stopWithinMs: drainMsOf(running.app.get(RadiusService)) + STOP_WITHIN_MS };
}
