import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { METHOD_METADATA, PATH_METADATA } from '@nestjs/common/constants.js';
import { RequestMethod } from '@nestjs/common';
import type { Subscription } from '@nats-io/nats-core';
import { connectNats, type NatsClients } from '@mfa/messaging';
import type { RunningService } from '@mfa/service-kit';
import { itWith, startNatsServer, testEnv, uniqueTenant, type NatsServerProcess } from '@mfa/testing';
import { boot } from '../boot.js';
import { loadConsoleConfig } from '../config.js';
import { PagesController } from './pages.controller.js';

/**
 * Every page of a tenant (each route of PagesController that names one, found from its routing
 * metadata, so that a page added later is walked too) over the real console: a tenant admin of A
 * is refused every page of tenant B, and a tenant reader of A every change of A, before the
 * console asks the API or the object stores anything. The console runs on a nats-server of the
 * test's own, where nothing answers: every request it would send is seen by the test.
 */
const DB = 11;

describe('console: tenant roles on every page (real NATS and Redis)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  let consoleService: RunningService;
  let base: string;
  let sent: string[] = [];
  /** What the console sent since the last `sent = []` (read through a call: the assertions narrow `sent`). */
  const seen = (): string[] => sent;
  let watch: Subscription;
  const tenantA = uniqueTenant('roles-a');
  const tenantB = uniqueTenant('roles-b');

  /** The tenant pages: method and path of each route with a `:tenant`. */
  const routes = Object.getOwnPropertyNames(PagesController.prototype).flatMap((name) => {
    const handler = (PagesController.prototype as unknown as Record<string, unknown>)[name];
    if (typeof handler !== 'function') return [];
    const path = Reflect.getMetadata(PATH_METADATA, handler) as string | undefined;
    const method = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
    if (path === undefined || method === undefined || !path.includes(':tenant')) return [];
    return [{ name, method: RequestMethod[method], path }];
  });
  const urlOf = (path: string, tenant: string) =>
    `${base}/${path.replace(':tenant', encodeURIComponent(tenant)).replace(/:([A-Za-z]+)/g, (_m, param: string) => (param === 'type' ? 'greetingStandard' : param === 'language' ? 'en' : 'x'))}`;

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'console-roles-test', connectTimeoutMs: 5_000 });
    // Whatever the console asks: the public API, the object stores, JetStream.
    watch = nats.nc.subscribe('>', { callback: (_error, msg) => void (msg.subject.startsWith('_INBOX') || sent.push(msg.subject)) });
    await nats.nc.flush();
    const config = loadConsoleConfig({
      ...process.env,
      NODE_ENV: 'test',
      LOG_LEVEL: 'error',
      HTTP_HOST: '127.0.0.1',
      CONSOLE_PORT: '0',
      CONSOLE_DEV_LOGIN: 'true',
      NATS_URL: server.url,
      REDIS_URL: `${testEnv.redisUrl.replace(/\/\d*$/, '')}/${DB}`,
    });
    consoleService = await boot(config);
    base = consoleService.url;
  });

  after(async () => {
    watch?.unsubscribe();
    await consoleService?.stop();
    await nats?.nc.drain();
    await server?.stop();
  });

  /** A session of the development sign-in with these roles, and its CSRF token. */
  async function signIn(roles: string[]): Promise<{ cookie: string; csrf: string }> {
    const signedIn = await fetch(`${base}/auth/dev`, { method: 'POST', body: new URLSearchParams({ sub: 'tester', roles: roles.join(' '), returnTo: '/tenants' }), redirect: 'manual' });
    const cookie = signedIn.headers.getSetCookie().map((c) => c.split(';')[0]!).join('; ');
    assert.match(cookie, /mfa-console=/, `signed in (${signedIn.status})`);
    const page = await (await fetch(`${base}/tenants`, { headers: { cookie } })).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)?.[1];
    assert.ok(csrf, 'the page carries the CSRF token');
    return { cookie, csrf };
  }

  async function ask(session: { cookie: string; csrf: string }, method: string, url: string): Promise<number> {
    const response = await fetch(url, {
      method,
      redirect: 'manual',
      headers: { cookie: session.cookie, 'x-csrf-token': session.csrf },
      ...(method === 'GET' ? {} : { body: new URLSearchParams({ _csrf: session.csrf, userId: 'alice@contoso.example', reason: 'test', tokenId: 'x', clientId: 'x', serialNumber: 'x', object: 'x', format: 'csv' }) }),
    });
    await response.arrayBuffer();
    return response.status;
  }

  itWith({ real: ['nats', 'redis'] }, "a tenant admin of A is refused every page of tenant B, reads and changes, and the console asks nothing", async () => {
    assert.ok(routes.length >= 25, `the tenant pages were found (${routes.length})`);
    const admin = await signIn([`tenant-admin:${tenantA}`]);
    await nats.nc.flush();
    sent = [];
    for (const route of routes) {
      assert.equal(await ask(admin, route.method, urlOf(route.path, tenantB)), 403, `${route.method} ${route.path} (${route.name}) for tenant B`);
    }
    await nats.nc.flush();
    assert.deepEqual(sent, [], 'nothing was asked of the API or the stores');
    // The detector sees what a page of its own tenant asks (nothing answers it here): a recording, from its store.
    assert.notEqual(await ask(admin, 'GET', urlOf('t/:tenant/voice/play/:type/:language', tenantA)), 403);
    await nats.nc.flush();
    assert.ok(seen().length > 0, "the own tenant's page asked the store");
  });

  itWith({ real: ['nats', 'redis'] }, 'a tenant reader of A is refused every change of A (and the pages only for changing), and the console asks nothing', async () => {
    const reader = await signIn([`tenant-reader:${tenantA}`]);
    const changes = routes.filter((r) => r.method !== 'GET');
    assert.ok(changes.length >= 11, `the changes were found (${changes.length})`);
    await nats.nc.flush();
    sent = [];
    for (const route of changes) {
      assert.equal(await ask(reader, route.method, urlOf(route.path, tenantA)), 403, `${route.method} ${route.path} (${route.name})`);
    }
    for (const path of ['t/:tenant/clients', 't/:tenant/oath/import']) assert.equal(await ask(reader, 'GET', urlOf(path, tenantA)), 403, path);
    await nats.nc.flush();
    assert.deepEqual(sent, [], 'nothing was asked of the API or the stores');
  });
});
