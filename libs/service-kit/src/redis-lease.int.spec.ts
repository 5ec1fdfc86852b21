import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { itWith, testEnv } from '@mfa/testing';
import { LeaseLostError, RedisLease } from './redis-lease.js';

/**
 * Two instances (two leases of the same process: same host name and pid) and one key, on the
 * shared Redis: the key of a holder goes (a failover that lost it, a pause past its lifetime) and
 * the other instance takes it. The first must learn it at its next renewal, and leave the
 * other's key alone when it finishes.
 */
describe('RedisLease when its holder loses the key', () => {
  const key = `mfa:test:lease:${randomUUID()}`;
  let redis: Redis;

  before(async () => {
    redis = new Redis(testEnv.redisUrl, { lazyConnect: true });
  });

  after(async () => {
    await redis.del(key).catch(() => undefined);
    redis.disconnect();
  });

  itWith({ real: ['redis'] }, 'aborts the first holder within one renewal interval once another instance took it over', async () => {
    const ttlMs = 900;
    const a = new RedisLease(redis, key, ttlMs);
    const b = new RedisLease(redis, key, ttlMs);
    assert.equal(await a.acquire(), true);
    assert.equal(await b.acquire(), false);
    let aSignal: AbortSignal | undefined;
    let lostAfterMs = -1;
    const holding = a.hold(async (signal) => {
      aSignal = signal;
      // Renewed past its lifetime while nothing happens to it.
      await new Promise((r) => setTimeout(r, ttlMs * 1.5));
      assert.equal(signal.aborted, false, 'aborted while the lease was held');
      await redis.del(key);
      assert.equal(await b.acquire(), true);
      const since = Date.now();
      const timeout = AbortSignal.timeout(ttlMs * 3);
      await Promise.race([once(signal, 'abort'), once(timeout, 'abort')]);
      lostAfterMs = signal.aborted ? Date.now() - since : -1;
      return 'stopped';
    });
    assert.equal(await holding, 'stopped');
    assert.notEqual(lostAfterMs, -1, "A's signal did not abort: it would go on working next to B");
    assert.ok(aSignal?.reason instanceof LeaseLostError);
    assert.ok(lostAfterMs <= ttlMs / 3 + 200, `lost after ${lostAfterMs} ms, more than one renewal interval (${ttlMs / 3} ms)`);
    // A's release left B's lease alone, and B keeps it.
    assert.ok((await redis.pttl(key)) > 0, "A's release removed B's lease");
    let bAborted: boolean | undefined;
    await b.hold(async (signal) => {
      await new Promise((r) => setTimeout(r, ttlMs * 1.5));
      bAborted = signal.aborted;
    });
    assert.equal(bAborted, false);
    assert.equal(await redis.exists(key), 0, 'B released its lease');
  });
});
