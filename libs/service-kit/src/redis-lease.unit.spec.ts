import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { RedisClient } from '@mfa/projection';
import { LeaseLostError, RedisLease } from './redis-lease.js';

/** A Redis that takes the lease, then answers no renewal (unreachable, or too slow to matter). */
function unreachableAfterAcquire(): RedisClient {
  return {
    set: async () => 'OK',
    eval: () => Promise.reject(new Error('connection lost (test)')),
  } as unknown as RedisClient;
}

describe('RedisLease without Redis', () => {
  it("aborts the work once no renewal succeeded within the lease's lifetime", async () => {
    const ttlMs = 600;
    const lease = new RedisLease(unreachableAfterAcquire(), 'mfa:test:lease', ttlMs);
    const acquiredAt = Date.now();
    assert.equal(await lease.acquire(), true);
    const reason = await lease.hold(async (signal) => {
      await once(signal, 'abort');
      return signal.reason as unknown;
    });
    const after = Date.now() - acquiredAt;
    assert.ok(reason instanceof LeaseLostError);
    // Not before the key could have lapsed, and not much later either.
    assert.ok(after >= ttlMs - 5 && after < ttlMs + 300, `aborted after ${after} ms (lease ${ttlMs} ms)`);
  });

  it('refuses hold() without a lease taken', async () => {
    const lease = new RedisLease(unreachableAfterAcquire(), 'mfa:test:lease', 600);
    await assert.rejects(lease.hold(async () => undefined), /hold\(\) without acquire\(\)/);
  });
});
