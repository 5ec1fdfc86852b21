import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { postBody } from './http-client.js';

// A provider that answers, but a byte every 100 ms: an idle timeout would never fire.
describe('provider HTTP client', () => {
  let server: Server;
  let url: URL;

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
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
});
