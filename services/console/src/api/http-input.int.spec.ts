import 'reflect-metadata';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe } from 'node:test';
import type { Subscription } from '@nats-io/nats-core';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { HTTP_HEADERS_TIMEOUT_MS, type RunningService } from '@mfa/service-kit';
import { itWith, startNatsServer, testEnv, uniqueTenant, type NatsServerProcess } from '@mfa/testing';
import { boot } from '../boot.js';
import { loadConsoleConfig } from '../config.js';

/**
 * Hostile requests to the real console (pages, forms, uploads, sign-in), signed in as a tenant
 * admin: each is refused with a 4xx before the console asks the API or the stores anything, or
 * handled as the plain value it is; no 5xx, and the console keeps serving. It runs on a
 * nats-server of the test's own, where nothing answers: every request it would send is seen.
 */
const DB = 12;

describe('console: hostile HTTP input (real NATS and Redis)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  let consoleService: RunningService;
  let base: string;
  let sent: string[] = [];
  let watch: Subscription;
  const tenant = uniqueTenant('hostile');
  let session: { cookie: string; csrf: string };

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'console-hostile-test', connectTimeoutMs: 5_000 });
    watch = nats.nc.subscribe('>', { callback: (_error, msg) => void (msg.subject.startsWith('_INBOX') || sent.push(msg.subject)) });
    await nats.nc.flush();
    consoleService = await boot(
      loadConsoleConfig({
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'error',
        HTTP_HOST: '127.0.0.1',
        CONSOLE_PORT: '0',
        CONSOLE_DEV_LOGIN: 'true',
        NATS_URL: server.url,
        REDIS_URL: `${testEnv.redisUrl.replace(/\/\d*$/, '')}/${DB}`,
      }),
    );
    base = consoleService.url;
    const signedIn = await fetch(`${base}/auth/dev`, { method: 'POST', body: new URLSearchParams({ sub: 'tester', roles: `tenant-admin:${tenant}`, returnTo: '/tenants' }), redirect: 'manual' });
    const cookie = signedIn.headers.getSetCookie().map((c) => c.split(';')[0]!).join('; ');
    const page = await (await fetch(`${base}/tenants`, { headers: { cookie } })).text();
    session = { cookie, csrf: /name="_csrf" value="([^"]+)"/.exec(page)![1]! };
  });

  after(async () => {
    watch?.unsubscribe();
    await consoleService?.stop();
    await nats?.nc.drain();
    await server?.stop();
  });

  const form = { 'content-type': 'application/x-www-form-urlencoded' };

  itWith({ real: ['nats', 'redis'] }, 'refuses hostile requests with a 4xx before asking anything, never a 5xx, and keeps serving', async () => {
    const { cookie, csrf } = session;
    const t = `/t/${tenant}`;
    const cases: Array<[string, string, RequestInit, number]> = [
      ['the CSRF field twice (an array, not a string)', `${t}/users/reset`, { method: 'POST', headers: { cookie, ...form }, body: `_csrf=${csrf}&_csrf=${csrf}&userId=alice` }, 403],
      ['no CSRF token, JSON instead of a form', `${t}/users/reset`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: '{"userId":"alice"}' }, 403],
      ['a form over 64 KB', `${t}/settings`, { method: 'POST', headers: { cookie, ...form }, body: `_csrf=${csrf}&a=${'x'.repeat(70_000)}` }, 413],
      ['a recording over 1 MB', `${t}/voice/upload?type=greetingStandard&language=en`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'content-type': 'application/octet-stream' }, body: Buffer.alloc(2 * 1024 * 1024) }, 413],
      ['a form from another origin', `${t}/users/reset`, { method: 'POST', headers: { cookie, ...form, origin: 'https://evil.example' }, body: `_csrf=${csrf}&userId=alice` }, 403],
      ['another tenant through a traversal', `${t}/..%2f..%2ft%2fother/overview`, { headers: { cookie } }, 404],
      ['a tenant id with NUL', '/t/a%00b/overview', { headers: { cookie } }, 403],
      ['a tenant id with an RTL override', `/t/${tenant}%E2%80%AE/overview`, { headers: { cookie } }, 403],
      ['a 5,000-character tenant id', `/t/${'x'.repeat(5000)}/overview`, { headers: { cookie } }, 403],
      ['a malformed percent escape', `${t}/signins/abc%`, { headers: { cookie } }, 400],
      ['a traversal into the static files', '/static/..%2f..%2fpackage.json', {}, 404],
      ['PUT', `${t}/settings`, { method: 'PUT', headers: { cookie, ...form }, body: `_csrf=${csrf}` }, 404],
      ['DELETE', `${t}/settings`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': csrf } }, 404],
      ['a garbled session cookie', `${t}/overview`, { headers: { cookie: `mfa-console=%E0%A4%A; other=${'y'.repeat(6000)}` } }, 303],
      ['a sign-in whose return path is another site, twice', '/auth/login?returnTo=/tenants&returnTo=//evil.example', { headers: { cookie } }, 303],
      ['an OIDC callback without a pending sign-in', '/auth/callback?code=x&code=y&state[a]=1', {}, 403],
    ];
    await nats.nc.flush();
    sent = [];
    for (const [what, path, init, status] of cases) {
      const res = await fetch(`${base}${path}`, { redirect: 'manual', ...init });
      await res.arrayBuffer();
      assert.equal(res.status, status, what);
      if (status === 303) assert.match(res.headers.get('location') ?? '', /^\/(?!\/)/, `${what}: redirected within the console`);
    }
    await nats.nc.flush();
    assert.deepEqual(sent, [], 'nothing was asked of the API or the stores');
    // Query parameters given twice or as objects reach a page as what they are: a filter given
    // twice is refused, objects are ignored; never a fault (that page then asks the API, which
    // does not answer here: 503).
    for (const [page, status] of [['signins?from=2026-01-01&from=x&userId=a&userId=b', 400], ['audit?from=2026-01-01&from=x', 400], ['users?userId[a]=1&cursor[__proto__][x]=1', 503]] as const) {
      const res = await fetch(`${base}${t}/${page}`, { headers: { cookie } });
      await res.arrayBuffer();
      assert.equal(res.status, status, page);
    }
    assert.equal((await fetch(`${base}/tenants`, { headers: { cookie } })).status, 200, 'still serving');
  });

  itWith({ real: ['nats', 'redis'] }, 'HEAD of a page without a session is the sign-in redirect, as GET; an unknown URL is the HTML "not found" page for a browser, JSON for anything else', async () => {
    const page = `/t/${tenant}/overview`;
    for (const method of ['GET', 'HEAD']) {
      const res = await fetch(`${base}${page}`, { method, redirect: 'manual' });
      await res.arrayBuffer();
      assert.deepEqual([res.status, res.headers.get('location')], [303, `/auth/login?returnTo=${encodeURIComponent(page)}`], method);
    }
    const browser = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
    for (const [what, headers] of [['signed in', { cookie: session.cookie, accept: browser }], ['signed out', { accept: browser }]] as const) {
      const res = await fetch(`${base}/t/${tenant}/overveiw`, { headers });
      assert.equal(res.status, 404, what);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/, what);
      const html = await res.text();
      assert.match(html, /<h1>Not found<\/h1>/, what);
      assert.match(html, /<a href="\/">Back to the console<\/a>/, what);
      assert.ok(!html.includes('overveiw'), `${what}: the URL is not echoed`);
      assert.equal(html.includes('Sign out'), what === 'signed in', `${what}: the layout shows who is signed in`);
    }
    const head = await fetch(`${base}/nothing-here`, { method: 'HEAD', headers: { accept: 'text/html' } });
    assert.deepEqual([head.status, head.headers.get('content-type')?.startsWith('text/html'), (await head.arrayBuffer()).byteLength], [404, true, 0], 'HEAD: the page’s status and type, no body');
    for (const accept of [undefined, '*/*', 'application/json', 'application/json, text/html', 'text/html;q=0.5, application/json']) {
      const res = await fetch(`${base}/nothing-here`, { headers: { cookie: session.cookie, ...(accept ? { accept } : {}) } });
      assert.equal(res.status, 404, String(accept));
      assert.deepEqual(await res.json(), { statusCode: 404, message: 'no such route', error: 'Not Found' }, String(accept));
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'ends a request whose headers never finish: 408 and the connection closed', async () => {
    const { hostname, port } = new URL(base);
    const answer = await new Promise<string>((resolve) => {
      const socket = connect(Number(port), hostname);
      let text = '';
      const timer = setTimeout(() => socket.destroy(), HTTP_HEADERS_TIMEOUT_MS + 15_000);
      socket.on('data', (chunk) => (text += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(text);
      });
      socket.write('GET /tenants HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n');
    });
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.equal((await fetch(`${base}/health/live`)).status, 200, 'still serving');
  });
});
