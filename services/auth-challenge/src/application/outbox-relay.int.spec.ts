import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisLease } from '@mfa/service-kit';
import { createLogger, registry } from '@mfa/telemetry';
import { eventually, itWith, testEnv } from '@mfa/testing';
import type { AnyEvent } from '@mfa/contracts';
import { decisionNameOfReply } from '../adapters/outbox.js';
import { OutboxRelay } from './outbox-relay.js';

/** The relay's lease, as the product names it: another instance holding it keeps this one's passes off. */
const LEASE_KEY = 'mfa:outbox:relay';

/** A decision record as the start and verify scripts write it, decided `ageMs` ago. */
const record = (id: string, ageMs: number) => JSON.stringify({ c: { k: 'verify', t: 'tenant-a', id, n: Date.now() - ageMs }, r: [] });

async function pendingGauge(): Promise<number> {
  const metric = await registry.getSingleMetric('mfa_outbox_pending')!.get();
  return metric.values[0]?.value ?? Number.NaN;
}

/**
 * The full pass's backlog gauge, with the real lease on the shared Redis. The slot outboxes are
 * the test's (the Redis adapter is walked in test-e2e's redis-scripts spec): what matters here is
 * what the pass counts, not how it reads them.
 */
describe('OutboxRelay: mfa_outbox_pending', () => {
  let redis: Redis;
  const entries = [
    { key: 'outbox-a', name: 'fresh', raw: record('fresh', 5) },
    { key: 'outbox-b', name: 'overdue', raw: record('overdue', 60_000) },
  ];
  const published: string[] = [];
  const outbox = {
    async *pending() {
      yield* entries;
    },
    async removeNow() {},
  };
  let relay: OutboxRelay;

  before(async () => {
    redis = new Redis(testEnv.redisUrl, { lazyConnect: true });
    relay = new OutboxRelay(
      outbox as never,
      { eventOfRecord: (r: { c: { id: string } }) => ({ subject: 'mfa.evt.test', event: { id: r.c.id } as unknown as AnyEvent }) } as never,
      { publish: async (_subject: string, event: { id: string }) => (published.push(event.id), { duplicate: false }) } as never,
      redis as never,
      createLogger('outbox-relay-test', { level: 'error' }),
    );
  });

  after(() => redis.disconnect());

  itWith({ real: ['redis'] }, 'counts only decisions their instance has had 10 s to publish, and 0 on an instance without the lease', async () => {
    // Another auth-challenge of the same Redis may be at a pass: wait for the lease to be free.
    await eventually(async () => ((await redis.exists(LEASE_KEY)) === 0 ? true : undefined), 90_000, 'the relay lease free');
    assert.equal(await relay.fullPass(), 1);
    assert.deepEqual(published, ['overdue'], 'the fresh decision is left to its instance');
    assert.equal(await pendingGauge(), 1, 'a decision whose removal is only batched is no backlog');

    const other = new RedisLease(redis as never, LEASE_KEY, 10_000);
    assert.equal(await other.acquire(), true);
    try {
      await other.hold(async () => {
        assert.equal(await relay.fullPass(), 0);
        assert.equal(await pendingGauge(), 0, 'the lease holder reports the backlog; a count taken before would go stale');
      });
    } finally {
      await redis.del(LEASE_KEY);
    }
  });
});

/**
 * The full pass over a dead instance's backlog after a long JetStream outage, with the real lease:
 * the slot outboxes and the publisher are the test's, as above. Each slot's outbox is read back
 * latest decision first (a hash's order is not the order it was written in), and a start takes
 * longer to land than the other decisions, so a challenge's start published with or after its
 * outcome would land after it.
 */
describe('OutboxRelay: a dead instance’s backlog', () => {
  let redis: Redis;
  const at = Date.now() - 60_000;
  /** A decision kept as the scripts keep it: its name follows from the reply (decisionNameOfReply). */
  const kept = (key: string, id: string, k: 'start' | 'verify', reply: string[], n: number) => ({
    key,
    name: decisionNameOfReply(id, reply),
    raw: JSON.stringify({ c: { k, t: 'tenant-a', id, n }, r: reply }),
  });
  /** 30 slots of 12 challenges: each started, every third with a code rejected, every other approved. */
  const slots = Array.from({ length: 30 }, (_, s) => {
    const key = `outbox-${s}`;
    const entries = Array.from({ length: 12 }, (_, i) => {
      const id = `c${s}.${i}`;
      const start = at + s * 100 + i;
      return [
        kept(key, id, 'start', ['pending'], start),
        ...(i % 3 === 0 ? [kept(key, id, 'verify', ['rejected', 'u', 'sms', '1', '2', 'wrong_code', '', '', '', ''], start + 500)] : []),
        ...(i % 2 === 0 ? [kept(key, id, 'verify', ['approved', 'u', 'sms', '', ''], start + 1_000)] : []),
      ];
    }).flat();
    // A live instance's decisions of a moment ago in some slots: theirs to publish, not the relay's.
    if (s % 5 === 0) entries.push(kept(key, `young${s}`, 'start', ['pending'], Date.now()));
    return entries.reverse();
  });
  const overdue = slots.flat().filter((e) => !e.name.startsWith('young'));
  const removed: string[] = [];
  const landed: string[] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  /** Publishes begun with none in flight: the batches of the pass. */
  let batches = 0;
  let relay: OutboxRelay;

  before(async () => {
    redis = new Redis(testEnv.redisUrl, { lazyConnect: true });
    relay = new OutboxRelay(
      {
        async *pending() {
          for (const entries of slots) yield* entries;
        },
        async removeNow(_key: string, name: string) {
          removed.push(name);
        },
      } as never,
      { eventOfRecord: (r: { c: { id: string }; r: string[] }) => ({ subject: 'mfa.evt.test', event: { id: decisionNameOfReply(r.c.id, r.r) } as unknown as AnyEvent }) } as never,
      {
        publish: async (_subject: string, event: { id: string }) => {
          if (inFlight++ === 0) batches++;
          mostInFlight = Math.max(mostInFlight, inFlight);
          for (let tick = 0; tick < (event.id.endsWith(':pending') ? 3 : 1); tick++) await new Promise((r) => setImmediate(r));
          landed.push(event.id);
          inFlight--;
          return { duplicate: false };
        },
      } as never,
      redis as never,
      createLogger('outbox-relay-test', { level: 'error' }),
    );
  });

  after(() => redis.disconnect());

  itWith({ real: ['redis'] }, 'relays every overdue decision of every slot, many at once, each challenge’s in the order it took them', async () => {
    assert.equal(overdue.length, 660);
    // Another auth-challenge of the same Redis may hold the lease for a pass: this one runs after it.
    assert.equal(await eventually(async () => (await relay.fullPass()) || undefined, 90_000, 'a full pass with the relay lease'), overdue.length);
    assert.deepEqual([...landed].sort(), overdue.map((e) => e.name).sort(), 'each overdue decision published once, the young ones left');
    assert.deepEqual([...removed].sort(), overdue.map((e) => e.name).sort());
    assert.equal(await pendingGauge(), overdue.length);
    assert.equal(mostInFlight, 64, 'published 64 at once, never more');
    // A challenge's later decisions wait for a later batch without holding back the other challenges'.
    assert.ok(batches <= Math.ceil(overdue.length / 64) + 1, `${overdue.length} decisions published in ${batches} batches`);
    const byChallenge = Map.groupBy(landed, (name) => name.split(':', 1)[0]!);
    for (const [challenge, names] of byChallenge) {
      const [, s, i] = /^c(\d+)\.(\d+)$/.exec(challenge)!.map(Number);
      const expected = [`${challenge}:pending`, ...(i! % 3 === 0 ? [`${challenge}:rejected:1`] : []), ...(i! % 2 === 0 ? [`${challenge}:approved`] : [])];
      assert.deepEqual(names, expected, `the events of challenge ${challenge} (slot ${s}) in decision order`);
    }
  });
});

/**
 * The instances' clocks may differ: a start decided on an instance running ahead looks young
 * while its outcome, decided on another, looks overdue. The outcome waits with its start.
 */
describe('OutboxRelay: a young decision holds its challenge’s later ones', () => {
  let redis: Redis;
  const published: string[] = [];
  const kept = (id: string, k: 'start' | 'verify', reply: string[], ageMs: number) => ({
    key: 'outbox-skew',
    name: decisionNameOfReply(id, reply),
    raw: JSON.stringify({ c: { k, t: 'tenant-a', id, n: Date.now() - ageMs }, r: reply }),
  });
  const entries = [
    // Its start's instance runs 12 s ahead of its outcome's.
    kept('skewed', 'verify', ['approved', 'u', 'sms', '', ''], 11_000),
    kept('skewed', 'start', ['pending'], 2_000),
    kept('dead', 'verify', ['approved', 'u', 'sms', '', ''], 50_000),
    kept('dead', 'start', ['pending'], 60_000),
  ];
  let relay: OutboxRelay;

  before(async () => {
    redis = new Redis(testEnv.redisUrl, { lazyConnect: true });
    relay = new OutboxRelay(
      {
        async *pending() {
          yield* entries;
        },
        async removeNow() {},
      } as never,
      { eventOfRecord: (r: { c: { id: string }; r: string[] }) => ({ subject: 'mfa.evt.test', event: { id: decisionNameOfReply(r.c.id, r.r) } as unknown as AnyEvent }) } as never,
      { publish: async (_subject: string, event: { id: string }) => (published.push(event.id), { duplicate: false }) } as never,
      redis as never,
      createLogger('outbox-relay-test', { level: 'error' }),
    );
  });

  after(() => redis.disconnect());

  itWith({ real: ['redis'] }, 'publishes no outcome whose start is still its instance’s to publish, and counts it in the backlog', async () => {
    // Another auth-challenge of the same Redis may be at a pass: wait for the lease to be free.
    await eventually(async () => ((await redis.exists(LEASE_KEY)) === 0 ? true : undefined), 90_000, 'the relay lease free');
    assert.equal(await relay.fullPass(), 2);
    assert.deepEqual(published, ['dead:pending', 'dead:approved']);
    assert.equal(await pendingGauge(), 3, 'the held outcome is overdue all the same');
  });
});
