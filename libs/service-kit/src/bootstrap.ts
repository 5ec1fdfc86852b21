import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { DynamicModule, ExceptionFilter, INestApplication } from '@nestjs/common';
import type { NatsClients } from '@mfa/messaging';
import { createLogger, flushTelemetry, shutdownTelemetry, startMetrics, type Logger } from '@mfa/telemetry';
import { AuditTrail } from './auth/audit-trail.js';
import { HttpErrors } from './http-errors.js';
import type { BaseConfig, KeyringConfig } from './config.js';
import { OpsController } from './health.js';
import { KeyringModule } from './keyring-check.js';
import { NatsTransport } from './nats/nats.transport.js';
import type { JetStreamConsumerOptions } from './nats/decorators.js';
import { NestJsonLogger } from './nest-logger.js';
import { NATS } from './tokens.js';

/** The largest request body a service's HTTP port reads (JSON or a form): device requests and Twilio's webhooks are a few KB. */
export const HTTP_BODY_LIMIT_BYTES = 16 * 1024;
/**
 * How long a request's headers, and the whole request, may take to arrive on a service's port
 * (Node's defaults are 60 s and 5 min): a client that opens connections and never finishes its
 * requests holds each for seconds, not minutes. Answered 408, the connection closed.
 */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
export const HTTP_REQUEST_TIMEOUT_MS = 20_000;

/**
 * Bounds how long a request may take to arrive on `server` (before it listens): the headers, and
 * the whole request. Node checks its connections against them once a second (30 s by default,
 * which would let a stalled request outlive its bound by that much).
 */
export function boundRequestArrival(server: { headersTimeout: number; requestTimeout: number; connectionsCheckingInterval?: number }, bounds: { headersMs: number; requestMs: number }): void {
  server.requestTimeout = bounds.requestMs;
  server.headersTimeout = Math.min(bounds.headersMs, bounds.requestMs);
  server.connectionsCheckingInterval = 1_000;
}

export interface RunningService {
  app: INestApplication;
  url: string;
  log: Logger;
  stop(): Promise<void>;
  /** How long stop() may take before the process exits anyway; STOP_WITHIN_MS when not said. */
  stopWithinMs?: number;
  /**
   * Resolves, with the reason, if the service can no longer work however long it waits: its NATS
   * connection closed for good without stop() (nats.js gave up: a .creds file it could not read
   * at a reconnect). main() then stops the service and exits with 1, so that it is restarted.
   */
  failed?: Promise<Error>;
}

/** How long a service's shutdown may take (its in-flight requests, NATS's drain, the telemetry flush). */
export const STOP_WITHIN_MS = 15_000;

/** The logger of a service, at the level its validated configuration asks for. */
export const serviceLogger = (name: string, config: Pick<BaseConfig, 'LOG_LEVEL' | 'INSTANCE_NAME'>): Logger =>
  createLogger(name, { level: config.LOG_LEVEL, fields: { instance: config.INSTANCE_NAME } });

/**
 * Boots a service: metrics, the Nest application (the master key check, then streams, consumers
 * and caches in the init hooks), then the NATS transport (its @MessagePattern and
 * @JetStreamConsumer handlers), then HTTP for /health and /metrics on HTTP_HOST:HTTP_PORT. stop()
 * reverses it: /health turns 503, the transport stops taking work and lets what it took finish,
 * then HTTP and the adapters close, then spans are flushed. Telemetry itself is started earlier,
 * by main.ts, before Nest is imported. A boot that fails (a master key that differs from the
 * running services', a dependency that does not answer) closes what it opened and throws.
 */
export async function runService(options: {
  name: string;
  module: DynamicModule;
  config: Pick<BaseConfig, 'HTTP_HOST' | 'HTTP_PORT' | 'INSTANCE_NAME'> & Pick<KeyringConfig, 'keyring'>;
  log: Logger;
  /** false for a front that serves no NATS subject (the RADIUS front): no transport is started. */
  transport?: boolean;
  /** Consumer options the configuration sets over the declared ones, by durable name. */
  consumers?: Readonly<Record<string, JetStreamConsumerOptions>>;
  /** Subjects served first when the process is saturated (NatsTransport). */
  firstServed?: readonly string[];
  /**
   * Exception filters of the HTTP routes (not of the NATS handlers), given the HTTP adapter. They
   * are tried before HttpErrors, which every service has: one that catches everything should
   * extend HttpErrors and call super.catch for what it does not answer itself.
   */
  httpFilters?: (httpAdapter: ReturnType<INestApplication['getHttpAdapter']>) => ExceptionFilter[];
}): Promise<RunningService> {
  const { name, log, config } = options;
  startMetrics(name);
  // Every service gets its keyring as KEYRING and checks it against the running services first.
  const keyring = KeyringModule.forRoot({ keyring: config.keyring, service: name, instance: config.INSTANCE_NAME, log });
  const module: DynamicModule = { ...options.module, imports: [keyring, ...(options.module.imports ?? [])] };
  // rawBody: the device API checks signatures over the exact bytes a device sent.
  const app = await NestFactory.create<NestExpressApplication>(module, { logger: new NestJsonLogger(log), abortOnError: false, rawBody: true, bodyParser: false });
  // The body parsers run before anything else on a port that may face the internet (the device
  // API, Twilio's webhooks), on every path: small bodies only, and no compressed ones, so that a
  // few bytes of gzip cannot make the event loop that also serves sign-ins parse 100 KB each.
  app.useBodyParser('json', { limit: HTTP_BODY_LIMIT_BYTES, inflate: false });
  app.useBodyParser('urlencoded', { limit: HTTP_BODY_LIMIT_BYTES, inflate: false, extended: false });
  let transport: NatsTransport | undefined;
  let stopping: Promise<void> | undefined;
  let failed: Promise<Error> | undefined;
  try {
    // A closed connection never opens again: nothing would be served or consumed any more, while
    // HTTP (and /health/live) went on answering. Only stop() closes it on purpose.
    const nats = natsOf(app);
    if (nats) {
      failed = nats.nc.closed().then((error) => (stopping ? new Promise<Error>(() => undefined) : new Error('the NATS connection closed for good', { cause: error })));
    }
    if (options.transport !== false) {
      transport = new NatsTransport({ nats: nats ?? app.get<NatsClients>(NATS), audit: app.get(AuditTrail), queue: name, log, consumers: options.consumers, firstServed: options.firstServed });
      app.connectMicroservice({ strategy: transport });
    }
    // Nest tries the global filters last given first: a service's own before HttpErrors, which
    // answers client errors (a body the parser refuses, on any port that faces the internet)
    // without an error-level log line each.
    const adapter = app.getHttpAdapter();
    app.useGlobalFilters(new HttpErrors(adapter), ...(options.httpFilters?.(adapter) ?? []));
    // No enableShutdownHooks(): main() owns SIGTERM/SIGINT and calls stop(), which runs the same
    // hooks in an order that lets in-flight work finish; Nest's own handler would cut the flush short.
    await app.init();
  } catch (error) {
    // The connections opened so far (NATS at least) must not keep a failed process alive.
    await app.close().catch(() => undefined);
    throw error;
  }
  await app.startAllMicroservices();
  boundRequestArrival(app.getHttpServer(), { headersMs: HTTP_HEADERS_TIMEOUT_MS, requestMs: HTTP_REQUEST_TIMEOUT_MS });
  await app.listen(config.HTTP_PORT, config.HTTP_HOST);
  const address = app.getHttpServer().address() as { port: number } | string;
  const port = typeof address === 'string' ? config.HTTP_PORT : address.port;
  const url = `http://${config.HTTP_HOST}:${port}`;
  log.info(`${name} ready`, { http: url, health: `${url}/health`, metrics: `${url}/metrics`, pid: process.pid });
  const stop = () =>
    (stopping ??= (async () => {
      log.info(`${name} stopping`);
      opsOf(app)?.markStopping();
      await transport?.close();
      await app.close();
      await flushTelemetry();
      await shutdownTelemetry();
      log.info(`${name} stopped`);
    })());
  return { app, url, log, stop, ...(failed ? { failed } : {}) };
}

/** The module's NATS connection, when it has one (the console has none). */
function natsOf(app: INestApplication): NatsClients | undefined {
  try {
    return app.get<NatsClients>(NATS, { strict: false });
  } catch {
    return undefined;
  }
}

/** The module's /health and /metrics, when it serves them (every service does; some tests do not). */
function opsOf(app: INestApplication): OpsController | undefined {
  try {
    return app.get(OpsController, { strict: false });
  } catch {
    return undefined;
  }
}

/**
 * main.ts helper: loads the configuration, boots, and exits cleanly on SIGTERM/SIGINT, or with 1
 * when the configuration is invalid, the boot fails, or the service fails for good once running
 * (RunningService.failed): stopped as on SIGTERM, then exit 1, so that the orchestrator restarts it.
 */
export async function main<C>(name: string, loadConfig: () => C, boot: (config: C) => Promise<RunningService>): Promise<void> {
  const log = createLogger(name);
  let running: RunningService | undefined;
  let exiting = false;
  const shutdown = (code: 0 | 1) => {
    // The first reason to stop decides the exit code (a SIGTERM during a failure's stop is not a clean exit).
    if (exiting) return;
    exiting = true;
    const timer = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, running?.stopWithinMs ?? STOP_WITHIN_MS);
    timer.unref();
    void (running?.stop() ?? Promise.resolve()).then(
      () => process.exit(code),
      (error) => {
        log.error('shutdown failed', { error });
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: string) => {
    log.info('signal received', { signal });
    shutdown(0);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  process.on('unhandledRejection', (error) => log.error('unhandled rejection', { error }));
  try {
    running = await boot(loadConfig());
  } catch (error) {
    log.error(`${name} failed to start`, { error });
    process.exit(1);
  }
  void running.failed?.then((error) => {
    log.error(`${name} cannot work any more; stopping and exiting with 1 to be restarted`, { error });
    shutdown(1);
  });
}
