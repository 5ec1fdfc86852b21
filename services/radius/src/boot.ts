import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { KeyringModule, NestJsonLogger, serviceLogger, type RunningService } from '@mfa/service-kit';
import { flushTelemetry, shutdownTelemetry, startMetrics } from '@mfa/telemetry';
import { AppModule } from './app.module.js';
import type { RadiusConfig } from './config.js';

/**
 * Boots the RADIUS front: metrics, the master key check, NATS and Redis, then the UDP socket
 * (ListenerLifecycle), then HTTP for /health and /metrics. It serves no NATS subject, so it runs
 * without the NATS transport of the other services.
 */
export async function boot(config: RadiusConfig): Promise<RunningService> {
  const log = serviceLogger('radius', config);
  startMetrics('radius');
  const module = AppModule.forRoot(config, log);
  const keyring = KeyringModule.forRoot({ keyring: config.keyring, service: 'radius', instance: config.INSTANCE_NAME, log });
  const app = await NestFactory.create({ ...module, imports: [keyring, ...(module.imports ?? [])] }, { logger: new NestJsonLogger(log), abortOnError: false });
  try {
    await app.init();
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }
  await app.listen(config.HTTP_PORT, config.HTTP_HOST);
  const address = app.getHttpServer().address() as { port: number } | string;
  const port = typeof address === 'string' ? config.HTTP_PORT : address.port;
  const url = `http://${config.HTTP_HOST}:${port}`;
  log.info('radius ready', { http: url, health: `${url}/health`, metrics: `${url}/metrics`, pid: process.pid });
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info('radius stopping');
      await app.close();
      await flushTelemetry();
      await shutdownTelemetry();
      log.info('radius stopped');
    })());
  return { app, url, log, stop };
}
