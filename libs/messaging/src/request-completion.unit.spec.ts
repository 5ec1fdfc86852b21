import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RequestOne } from '@nats-io/nats-core/internal';
import { skipSettledRequestErrors } from './request-completion.js';

type Probe = { deferred: Promise<unknown> & { reject(e: unknown): void }; resolver(err: Error | null, msg: unknown): void; cancel(err?: Error): void };

/** A real nats.js request with a stand-in for its multiplexer, and a count of rejections built. */
function request() {
  const mux = { cancelled: 0, cancel() { this.cancelled++; } };
  const req = new RequestOne(mux as never, 'test.subject', { timeout: 60_000 }, false) as unknown as Probe;
  const counts = { rejections: 0 };
  const reject = req.deferred.reject.bind(req.deferred);
  req.deferred.reject = (e: unknown) => {
    counts.rejections++;
    reject(e);
  };
  return { req, mux, counts };
}

describe('nats.js request completion', () => {
  skipSettledRequestErrors();
  skipSettledRequestErrors(); // installing twice is harmless

  it('settles an answered request without building a "cancelled" rejection', async () => {
    const { req, mux, counts } = request();
    req.resolver(null, 'the reply');
    assert.equal(await req.deferred, 'the reply');
    assert.equal(counts.rejections, 0, 'no Error built for a promise that is already settled');
    assert.equal(mux.cancelled, 1, 'the request is still removed from the multiplexer');
  });

  it('still rejects with the error a failed request got', async () => {
    const { req, mux } = request();
    req.resolver(new Error('503'), null);
    await assert.rejects(req.deferred, /503/);
    assert.equal(mux.cancelled, 1);
  });

  it('still rejects a request cancelled before any answer', async () => {
    const { req, mux, counts } = request();
    req.cancel();
    await assert.rejects(req.deferred, (e: Error) => e.name === 'RequestError' && e.message === 'cancelled');
    assert.equal(counts.rejections, 1);
    assert.equal(mux.cancelled, 1);
  });
});
