import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { batchesOf } from './outbox-relay.js';

const entry = (name: string): [string, { key: string; name: string }] => [`k ${name}`, { key: 'k', name }];
const names = (batches: Array<Array<[string, { name: string }]>>) => batches.map((b) => b.map(([, e]) => e.name));

describe('OutboxRelay: the batches in which an instance publishes its deferred decisions', () => {
  it('publishes up to the batch size at once, in the order the decisions were taken', () => {
    const entries = ['a:started', 'b:started', 'c:started', 'd:started', 'e:started'].map(entry);
    assert.deepEqual(names(batchesOf(entries, 2)), [['a:started', 'b:started'], ['c:started', 'd:started'], ['e:started']]);
    assert.deepEqual(batchesOf([], 64), []);
  });

  it('never publishes two decisions of one challenge at once: its start goes before its resend and its outcome', () => {
    const entries = ['a:started', 'b:started', 'a:resent:1', 'c:started', 'a:rejected:1', 'b:approved', 'a:approved'].map(entry);
    assert.deepEqual(names(batchesOf(entries, 64)), [
      ['a:started', 'b:started'],
      ['a:resent:1', 'c:started'],
      ['a:rejected:1', 'b:approved'],
      ['a:approved'],
    ]);
  });
});
