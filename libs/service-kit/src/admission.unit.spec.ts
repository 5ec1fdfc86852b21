import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { admitHttpRequests, processRequestGate, REQUEST_CONCURRENCY } from './admission.js';

/**
 * The HTTP side of the process's gate, against a real HTTP server: a handler that holds every
 * request until told, behind admitHttpRequests, the way auth-challenge's device API sits.
 */
describe('admission of HTTP requests (the process gate)', () => {
  const held: Array<{ path: string; finish: () => void }> = [];
  const handled: string[] = [];
  const gated = admitHttpRequests({ route: 'test', waitMs: 400 });
  const gatedFirst = admitHttpRequests({ route: 'test-first', first: true, waitMs: 5_000 });
  // As auth-challenge's device API: only some of the route's requests go first.
  const gatedPicked = admitHttpRequests({ route: 'test-picked', first: (req) => req.url?.startsWith('/picked/finish') === true, waitMs: 5_000 });
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const middleware = req.url?.startsWith('/first') ? gatedFirst : req.url?.startsWith('/picked') ? gatedPicked : gated;
    middleware(req, res, () => {
      handled.push(req.url!);
      held.push({ path: req.url!, finish: () => res.end('ok') });
    });
  });
  const agent = new http.Agent({ keepAlive: false, maxSockets: 2 * REQUEST_CONCURRENCY });
  let port = 0;

  const get = (path: string, signal?: AbortSignal) =>
    new Promise<{ status: number; body: string; retryAfter: string | undefined }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path, agent, signal }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body, retryAfter: res.headers['retry-after'] as string | undefined }));
      });
      req.on('error', reject);
    });
  const until = async (what: string, check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(check(), what);
  };
  const finishAll = () => held.splice(0).forEach((h) => h.finish());

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    finishAll();
    agent.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('handles at most REQUEST_CONCURRENCY at once; one that waited its waitMs is answered 503 unavailable with Retry-After, never handled', async () => {
    const answers = Array.from({ length: REQUEST_CONCURRENCY }, (_, n) => get(`/held/${n}`));
    await until('every slot taken', () => held.length === REQUEST_CONCURRENCY);
    const late = await get('/late');
    assert.equal(late.status, 503);
    assert.equal(late.retryAfter, '1');
    assert.deepEqual(JSON.parse(late.body), { error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } });
    assert.ok(!handled.includes('/late'), 'the refused request never reached the handler');
    finishAll();
    assert.ok((await Promise.all(answers)).every((a) => a.status === 200));
    await until('the slots given back', () => processRequestGate().active === 0);
  });

  it('serves a waiting request marked first before one that waited longer, and frees the slot of a client that left while waiting', async () => {
    const answers = Array.from({ length: REQUEST_CONCURRENCY }, (_, n) => get(`/held/${n}`));
    await until('every slot taken', () => held.length === REQUEST_CONCURRENCY);
    const leaving = new AbortController();
    const gone = get('/gone', leaving.signal).catch((error: Error) => error);
    const other = get('/other');
    await new Promise((r) => setTimeout(r, 20));
    const first = get('/first');
    await until('three waiting', () => processRequestGate().waiting === 3);
    leaving.abort();
    assert.match(String(await gone), /abort/i);
    await new Promise((r) => setTimeout(r, 50));
    // One slot frees: the request marked first takes it, though it came last.
    held.shift()!.finish();
    await until('/first handled', () => handled.at(-1) === '/first');
    held.shift()!.finish();
    await until('/other handled', () => handled.at(-1) === '/other');
    finishAll();
    await until('nothing waiting', () => processRequestGate().waiting === 0);
    assert.ok(!handled.includes('/gone'), 'the request whose client left was not handled');
    assert.equal((await first).status, 200);
    assert.equal((await other).status, 200);
    await Promise.all(answers);
    await until('the slots given back', () => processRequestGate().active === 0 && processRequestGate().waiting === 0);
  });

  it('goes first only for the requests the route picks, and counts what a waiting request holds against the waiting bytes', async () => {
    const answers = Array.from({ length: REQUEST_CONCURRENCY }, (_, n) => get(`/held/${n}`));
    await until('every slot taken', () => held.length === REQUEST_CONCURRENCY);
    const bytesBefore = processRequestGate().bytesWaiting;
    const posted = new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/picked/activate', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': 1000 } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.end('x'.repeat(1000));
    });
    await until('the POST waiting', () => processRequestGate().waiting === 1);
    assert.ok(processRequestGate().bytesWaiting >= bytesBefore + 1000, `its body counted (${processRequestGate().bytesWaiting - bytesBefore} bytes)`);
    const finishing = get('/picked/finish');
    await until('both waiting', () => processRequestGate().waiting === 2);
    held.shift()!.finish();
    await until('one of them handled', () => handled.at(-1)?.startsWith('/picked') === true);
    assert.equal(handled.at(-1), '/picked/finish', 'the picked request first, though it came last');
    finishAll();
    await until('the POST handled', () => handled.includes('/picked/activate'));
    finishAll();
    assert.equal((await finishing).status, 200);
    assert.equal(await posted, 200);
    await Promise.all(answers);
    await until('the slots given back', () => processRequestGate().active === 0 && processRequestGate().waiting === 0);
    assert.equal(processRequestGate().bytesWaiting, bytesBefore);
  });
});
