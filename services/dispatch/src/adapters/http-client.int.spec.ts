import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { postBody, requestLeftWhole, retryAfterMs } from './http-client.js';

// A provider that answers, but a byte every 100 ms: an idle timeout would never fire.
describe('provider HTTP client', () => {
  let server: Server;
  let url: URL;

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/busy') return void res.writeHead(429, { 'retry-after': '2', 'content-type': 'application/json' }).end('{"code":20429}');
        if (req.url === '/silent') return;
        res.writeHead(201, { 'content-type': 'application/json' });
        const timer = setInterval(() => res.write(' '), 100);
        res.on('close', () => clearInterval(timer));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/2010-04-01/Accounts/AC1/Messages.json`);
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('gives up after its total timeout, however the provider trickles its answer', async () => {
    const started = Date.now();
    await assert.rejects(postBody(url, {}, 'To=%2B14155550100', 400), (e: unknown) => (e as Error).name === 'TimeoutError');
    // The answer never ends: only the total timeout can have ended the call, and not before it was due.
    assert.ok(Date.now() - started >= 390);
  });

  it('says whether a failed request had left whole: not one refused at connect; one taken and never answered, yes', async () => {
    const refused = await postBody(new URL('http://127.0.0.1:1/'), {}, 'x', 1_000).catch((e: unknown) => e);
    assert.equal(requestLeftWhole(refused), false, 'refused at connect: nothing reached the provider');
    const unanswered = await postBody(new URL('/silent', url), {}, 'x', 300).catch((e: unknown) => e);
    assert.equal((unanswered as Error).name, 'TimeoutError');
    assert.equal(requestLeftWhole(unanswered), true, 'the provider had it all: it may have acted');
  });

  it('a kept-alive connection the provider reset before answering (it had closed it as we wrote): safe to send again', async () => {
    // The first request is answered on a kept-alive connection; the next one, sent on that same
    // connection, is met with a reset before any answer, as when the provider closed the idle socket.
    let requests = 0;
    const closing = createServer((req, res) => {
      requests++;
      if (requests === 1) return void req.resume().on('end', () => res.writeHead(201).end('{}'));
      req.socket.resetAndDestroy();
    });
    await new Promise<void>((r) => closing.listen(0, '127.0.0.1', r));
    try {
      const target = new URL(`http://127.0.0.1:${(closing.address() as AddressInfo).port}/x`);
      assert.equal((await postBody(target, {}, 'x', 1_000)).status, 201);
      const reset = await postBody(target, {}, 'x', 1_000).catch((e: unknown) => e);
      assert.equal((reset as NodeJS.ErrnoException).code, 'ECONNRESET');
      assert.equal(requestLeftWhole(reset), false, 'a reset on a reused socket before any answer: not acted on');
    } finally {
      closing.closeAllConnections();
      await new Promise((r) => closing.close(r));
    }
  });

  it('reads Retry-After, in seconds or as an HTTP date', async () => {
    const busy = await postBody(new URL('/busy', url), {}, 'x', 1_000);
    assert.deepEqual([busy.status, busy.retryAfter], [429, '2']);
    const now = Date.parse('2026-11-30T12:00:00Z');
    assert.equal(retryAfterMs('2', now), 2_000);
    assert.equal(retryAfterMs('Mon, 30 Nov 2026 12:00:30 GMT', now), 30_000);
    assert.equal(retryAfterMs(undefined, now), undefined);
    assert.equal(retryAfterMs('soon', now), undefined);
    assert.equal(retryAfterMs('Mon, 30 Nov 2026 11:00:00 GMT', now), 0, 'a date past is now');
  });
});

