import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import type { INestApplication } from '@nestjs/common';
import { createLogger, flushTelemetry, shutdownTelemetry, startMetrics, type Logger } from '@mfa/telemetry';
import { NestJsonLogger } from './nest-logger.js';

export interface RunningService {
  app: INestApplication;
  url: string;
  log: Logger;
  stop(): Promise<void>;
}

/**
 * Boots a service: metrics, the Nest application (HTTP for /health and /metrics, plus whatever
 * NATS handlers and consumers its modules start), listening on HTTP_HOST:HTTP_PORT. SIGTERM and
 * SIGINT stop it cleanly: handlers and consumers drain, connections close, spans are flushed.
 * Telemetry itself is started earlier, by main.ts, before Nest is imported.
 */
export async function runService(options: {
  name: string;
  module: unknown;
  host: string;
  port: number;
  log?: Logger;
}): Promise<RunningService> {
  const log = options.log ?? createLogger(options.name);
  startMetrics(options.name);
  const app = await NestFactory.create(options.module as never, {
    logger: new NestJsonLogger(log),
    abortOnError: false,
  });
  // No enableShutdownHooks(): main() owns SIGTERM/SIGINT and calls app.close(), which runs the
  // same destroy/shutdown hooks; Nest's own handler would re-raise the signal and cut the flush short.
  await app.listen(options.port, options.host);
  const address = app.getHttpServer().address() as { port: number } | string;
  const port = typeof address === 'string' ? options.port : address.port;
  const url = `http://${options.host}:${port}`;
  log.info(`${options.name} ready`, { http: url, health: `${url}/health`, metrics: `${url}/metrics`, pid: process.pid });
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info(`${options.name} stopping`);
      await app.close();
      await flushTelemetry();
      await shutdownTelemetry();
      log.info(`${options.name} stopped`);
    })());
  return { app, url, log, stop };
}

/** main.ts helper: runs the service and exits cleanly on SIGTERM/SIGINT, or with 1 on boot failure. */
export async function main(name: string, boot: () => Promise<RunningService>): Promise<void> {
  const log = createLogger(name);
  let running: RunningService | undefined;
  const onSignal = (signal: string) => {
    log.info('signal received', { signal });
    const timer = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, 15_000);
    timer.unref();
    void (running?.stop() ?? Promise.resolve()).then(
      () => process.exit(0),
      (error) => {
        log.error('shutdown failed', { error });
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  process.on('unhandledRejection', (error) => log.error('unhandled rejection', { error }));
  try {
    running = await boot();
  } catch (error) {
    log.error(`${name} failed to start`, { error });
    process.exit(1);
  }
}
