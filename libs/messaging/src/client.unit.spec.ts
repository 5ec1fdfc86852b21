import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NoRespondersError, RequestError, TimeoutError, type Msg, type NatsConnection } from '@nats-io/nats-core';
import { isNoResponders, requestSentAgainWithoutResponders } from './client.js';

/** A connection whose requests fail as told, one outcome per call, then answer. */
function connection(outcomes: Array<Error | 'reply'>): { nc: NatsConnection; calls: number[]; timeouts: number[] } {
  const calls: number[] = [];
  const timeouts: number[] = [];
  const nc = {
    request: (_subject: string, _data: unknown, options: { timeout: number }) => {
      calls.push(Date.now());
      timeouts.push(options.timeout);
      const next = outcomes.shift() ?? 'reply';
      return next === 'reply' ? Promise.resolve({ json: () => ({ ok: true }) } as unknown as Msg) : Promise.reject(next);
    },
  } as unknown as NatsConnection;
  return { nc, calls, timeouts };
}

const noResponders = () => new RequestError('no responders: subj', { cause: new NoRespondersError('subj') });

describe('requests sent again while nobody subscribes', () => {
  it('tells no responders from other failures', () => {
    assert.equal(isNoResponders(noResponders()), true);
    assert.equal(isNoResponders(new NoRespondersError('subj')), true);
    assert.equal(isNoResponders(new RequestError('timeout', { cause: new TimeoutError() })), false);
    assert.equal(isNoResponders(new TimeoutError()), false);
    assert.equal(isNoResponders('no responders'), false);
  });

  it('sends a request that found no responders again, with back-off, within the whole timeout', async () => {
    const { nc, calls, timeouts } = connection([noResponders(), noResponders(), 'reply']);
    const msg = await requestSentAgainWithoutResponders(nc, 'subj', '{}', { timeout: 5_000 });
    assert.deepEqual(msg.json(), { ok: true });
    assert.equal(calls.length, 3);
    assert.ok(calls[1]! - calls[0]! >= 45 && calls[2]! - calls[1]! >= 95, 'waits 50 then 100 ms');
    assert.ok(timeouts[2]! < 5_000 && timeouts[2]! > 4_500, 'each try gets what is left of the timeout');
  });

  it('gives up after the retry window, and at once on any other failure', async () => {
    const gone = connection(Array.from({ length: 50 }, noResponders));
    const started = Date.now();
    await assert.rejects(requestSentAgainWithoutResponders(gone.nc, 'subj', '{}', { timeout: 5_000, retryMs: 300 }), (e) => isNoResponders(e));
    assert.ok(Date.now() - started < 1_000 && gone.calls.length >= 3 && gone.calls.length <= 5, `${gone.calls.length} tries`);
    const timedOut = connection([new RequestError('timeout', { cause: new TimeoutError() }), 'reply']);
    await assert.rejects(requestSentAgainWithoutResponders(timedOut.nc, 'subj', '{}', { timeout: 5_000 }));
    assert.equal(timedOut.calls.length, 1, 'a timeout is not sent again: it may have been received');
    const none = connection([noResponders(), 'reply']);
    await assert.rejects(requestSentAgainWithoutResponders(none.nc, 'subj', '{}', { timeout: 5_000, retryMs: 0 }));
    assert.equal(none.calls.length, 1);
  });
});
