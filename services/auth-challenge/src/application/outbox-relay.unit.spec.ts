import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { batchesOf, batchOf, inDecisionOrder } from './outbox-relay.js';

const entry = (name: string): [string, { key: string; name: string }] => [`k ${name}`, { key: 'k', name }];
const nameOf = ([, { name }]: [string, { name: string }]) => name;
const names = (batches: Array<Array<[string, { name: string }]>>) => batches.map((b) => b.map(nameOf));

describe('OutboxRelay: the batches in which an instance publishes its deferred decisions', () => {
  it('publishes up to the batch size at once, in the order the decisions were taken', () => {
    const entries = ['a:started', 'b:started', 'c:started', 'd:started', 'e:started'].map(entry);
    assert.deepEqual(names(batchesOf(entries, 2, nameOf)), [['a:started', 'b:started'], ['c:started', 'd:started'], ['e:started']]);
    assert.deepEqual(batchesOf([], 64, nameOf), []);
  });

  it('never publishes two decisions of one challenge at once: its start goes before its resend and its outcome', () => {
    const entries = ['a:started', 'b:started', 'a:resent:1', 'c:started', 'a:rejected:1', 'b:approved', 'a:approved'].map(entry);
    assert.deepEqual(names(batchesOf(entries, 64, nameOf)), [['a:started', 'b:started', 'c:started'], ['a:resent:1', 'b:approved'], ['a:rejected:1'], ['a:approved']]);
  });

  it('lets the other challenges’ decisions go ahead of one that waits for an earlier decision of its challenge', () => {
    const entries = ['a:started', 'a:approved', 'b:started', 'b:approved', 'c:started', 'c:approved', 'd:started'].map(entry);
    assert.deepEqual(names(batchesOf(entries, 3, nameOf)), [['a:started', 'b:started', 'c:started'], ['a:approved', 'b:approved', 'c:approved'], ['d:started']]);
    // One batch at a time, the rest kept in order for the next: what the full pass takes as it reads the slots.
    const { batch, rest } = batchOf(entries, 3, nameOf);
    assert.deepEqual([batch, rest].map((b) => b.map(nameOf)), [['a:started', 'b:started', 'c:started'], ['a:approved', 'b:approved', 'c:approved', 'd:started']]);
  });
});

/** A slot outbox entry as the scripts keep it (KEEP): the decision's name, its context and the script's reply. */
const kept = (name: string, k: 'start' | 'verify' | 'resend', at: number) => {
  const [id, decision, n] = name.split(':');
  const reply = decision === 'rejected' ? ['rejected', 'u', 'sms', n!, '2', 'wrong_code', '', '', '', ''] : decision === 'resent' ? ['resent', 'u', 'sms', n!, '2', ''] : [decision!];
  return { key: 'mfa:{0}:outbox', name, raw: JSON.stringify({ c: { k, t: 'tenant-a', id, n: at }, r: reply }) };
};

describe('OutboxRelay: the order in which the full pass publishes a slot’s outbox', () => {
  it('puts each challenge’s decisions in the order they were taken, whatever order the hash was read in', () => {
    const slot = [
      kept('a:approved', 'verify', 4_000),
      kept('b:rejected:2', 'verify', 3_000),
      kept('a:rejected:1', 'verify', 2_000),
      kept('b:pending', 'start', 1_500),
      kept('a:resent:1', 'resend', 3_200),
      kept('b:rejected:1', 'verify', 2_500),
      kept('a:pending', 'start', 1_000),
    ];
    const ordered = inDecisionOrder(slot).map((e) => e.name);
    assert.deepEqual(ordered, ['a:pending', 'b:pending', 'a:rejected:1', 'b:rejected:1', 'b:rejected:2', 'a:resent:1', 'a:approved']);
    // Batched as the pass does: a challenge's second decision waits for the next batch.
    assert.deepEqual(
      batchesOf(inDecisionOrder(slot), 64, (e) => e.name).map((b) => b.map((e) => e.name)),
      [['a:pending', 'b:pending'], ['a:rejected:1', 'b:rejected:1'], ['b:rejected:2', 'a:resent:1'], ['a:approved']],
    );
  });

  it('keeps a start first and an outcome last when the instances that took them disagree on the time', () => {
    // The outcome's instance runs 50 ms behind the start's; two rejections in one millisecond.
    const slot = [kept('a:approved', 'verify', 990), kept('a:rejected:2', 'verify', 995), kept('a:rejected:1', 'verify', 995), kept('a:pending', 'start', 1_000)];
    assert.deepEqual(
      inDecisionOrder(slot).map((e) => e.name),
      ['a:pending', 'a:rejected:1', 'a:rejected:2', 'a:approved'],
    );
  });

  it('keeps a challenge’s rejections in the order of their attempts and its resends in theirs, whatever the clocks that took them say', () => {
    // Attempt 2 decided on an instance 40 ms behind the one that decided attempt 1; resend 2 likewise.
    const slot = [
      kept('a:rejected:2', 'verify', 1_010),
      kept('a:resent:2', 'resend', 1_020),
      kept('a:rejected:1', 'verify', 1_030),
      kept('a:resent:1', 'resend', 1_040),
      kept('a:pending', 'start', 1_000),
    ];
    const ordered = inDecisionOrder(slot).map((e) => e.name);
    assert.deepEqual(ordered.filter((n) => n.includes('rejected')), ['a:rejected:1', 'a:rejected:2']);
    assert.deepEqual(ordered.filter((n) => n.includes('resent')), ['a:resent:1', 'a:resent:2']);
    assert.equal(ordered[0], 'a:pending');
  });

  it('puts an entry that is no record first, and leaves an empty slot empty', () => {
    const slot = [kept('a:approved', 'verify', 2_000), { key: 'mfa:{0}:outbox', name: 'b:pending', raw: 'not json' }, kept('a:pending', 'start', 1_000)];
    assert.deepEqual(inDecisionOrder(slot).map((e) => e.name), ['b:pending', 'a:pending', 'a:approved']);
    assert.deepEqual(inDecisionOrder([]), []);
  });
});
