import 'reflect-metadata';
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import express from 'express';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { MAX_VOICE_MESSAGE_BYTES } from '@mfa/contracts';
import { boundRequestArrival, HTTP_HEADERS_TIMEOUT_MS, serviceLogger, NestJsonLogger, type RunningService } from '@mfa/service-kit';
import { flushTelemetry, shutdownTelemetry, startMetrics } from '@mfa/telemetry';
import type { Sessions } from './adapters/sessions.js';
import { ConsoleErrors } from './api/not-found.js';
import { PUBLIC_DIR } from './api/views.js';
import { cookieNames, csrfCheck, emptyBodyAsForm, securityHeaders, sessionLoader } from './api/web.js';
import { AppModule } from './app.module.js';
import type { ConsoleConfig } from './config.js';
import { SESSIONS, VIEWS } from './tokens.js';
import type { Views } from './api/views.js';

const require = createRequire(import.meta.url);
/**
 * The import page's upload of a token file (PagesController.uploadOathFile), as Express routes it:
 * whatever the case, with or without a trailing slash.
 */
const TOKEN_FILE_UPLOAD = /^\/t\/[^/?]+\/oath\/upload\/?(?:\?|$)/i;
/** How long a whole request may take to arrive (Node's default). */
export const CONSOLE_REQUEST_TIMEOUT_MS = 5 * 60_000;
/** Chart.js's own build, served from the lock file's copy: nothing is fetched from another origin. */
const CHART_JS_DIR = dirname(require.resolve('chart.js')); // its dist/, where chart.umd.min.js is

export async function boot(config: ConsoleConfig): Promise<RunningService> {
  const log = serviceLogger('console', config);
  startMetrics('console');
  if (config.devLoginIgnored) log.warn('CONSOLE_DEV_LOGIN is ignored: an identity provider is configured (OIDC_ISSUER_URL), so operators sign in through it only');
  if (config.CONSOLE_DEV_LOGIN) log.warn('CONSOLE_DEV_LOGIN is on: anyone who reaches the console can sign in with any role (development only)');
  if (!config.oidc && !config.CONSOLE_DEV_LOGIN) log.warn('no OIDC_ISSUER_URL and no CONSOLE_DEV_LOGIN: nobody can sign in');
  // No default parsers: Nest's would read JSON (100 KB after decompression) on every path, GET included.
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, log), { logger: new NestJsonLogger(log), abortOnError: false, bodyParser: false });
  try {
    // What the body parsers refuse (a charset, an encoding, a body over the limit) is the client's
    // fault: answered and counted, not logged as an error of the console (as every service's port).
    // An unknown URL is the console's HTML "not found" page for a browser, JSON for anything else.
    const views = app.get<Views>(VIEWS);
    app.useGlobalFilters(new ConsoleErrors(views, app.getHttpAdapter()));
    app.disable('x-powered-by');
    app.set('trust proxy', false);
    const secure = config.publicUrl.protocol === 'https:';
    // First, so that every answer has them, those to a body the parsers refuse included.
    app.use(securityHeaders(secure));
    // Forms (the CSRF token of a form is a field of it): small, read before the CSRF check.
    app.useBodyParser('urlencoded', { extended: false, limit: '64kb', inflate: false });
    const sessions = app.get<Sessions>(SESSIONS);
    const names = cookieNames(secure);
    app.use('/static/chart', express.static(CHART_JS_DIR, { index: false, maxAge: '1h' }));
    app.use('/static', express.static(PUBLIC_DIR, { index: false, maxAge: '1h' }));
    app.use(
      sessionLoader(sessions, names, (res) =>
        views.send(res, 'error.njk', { code: 'unavailable', message: 'the console cannot read sessions at the moment (its Redis); try again shortly' }, 503),
      ),
    );
    app.use(csrfCheck(config.publicUrl.origin));
    // Voice recordings from the page's script: the file itself, at most 1 MB (more is 413), read
    // only once the session and its CSRF token (a header for these) have been checked, so that
    // nobody without a session has the console hold a megabyte for them. Token files for the
    // hardware token import are not parsed here: their handler streams them on to the object
    // store (up to MAX_IMPORT_FILE_BYTES, counted as they arrive).
    app.useBodyParser('raw', {
      type: (req: IncomingMessage) => /^application\/octet-stream\b/i.test(req.headers['content-type'] ?? '') && !TOKEN_FILE_UPLOAD.test(req.url ?? ''),
      limit: MAX_VOICE_MESSAGE_BYTES,
      inflate: false,
    });
    app.use(emptyBodyAsForm);
    await app.init();
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }
  // Headers as on every service's port; a whole request keeps Node's 5 minutes: a token file
  // (up to 256 MB) from an operator's uplink takes its time.
  boundRequestArrival(app.getHttpServer(), { headersMs: HTTP_HEADERS_TIMEOUT_MS, requestMs: CONSOLE_REQUEST_TIMEOUT_MS });
  await app.listen(config.CONSOLE_PORT, config.HTTP_HOST);
  const address = app.getHttpServer().address() as { port: number } | string;
  const port = typeof address === 'string' ? config.CONSOLE_PORT : address.port;
  const url = `http://${config.HTTP_HOST}:${port}`;
  log.info('console ready', { http: url, console: config.CONSOLE_PUBLIC_URL ?? url, health: `${url}/health`, pid: process.pid });
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info('console stopping');
      await app.close();
      await flushTelemetry();
      await shutdownTelemetry();
      log.info('console stopped');
    })());
  return { app, url, log, stop };
}
