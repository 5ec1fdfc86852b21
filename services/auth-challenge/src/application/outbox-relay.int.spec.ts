import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisLease } from '@mfa/service-kit';
import { createLogger, registry } from '@mfa/telemetry';
import { eventually, itWith, testEnv } from '@mfa/testing';
import type { AnyEvent } from '@mfa/contracts';
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
