import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisKeys } from '@mfa/projection';
import { itWith, testEnv } from '@mfa/testing';
import { ReceiptRoutes } from './receipt-routes.js';

/** The routes of SMPP receipts against the real Redis, with an SMSC that reuses its message ids. */
describe('receipt routes (real Redis)', () => {
  let redis: Redis;
  let routes: ReceiptRoutes;

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    routes = new ReceiptRoutes(redis);
  });
  after(async () => {
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'finds the challenge of a message id, with when its route was written; the same challenge again (a resend under the same id) replaces it', async () => {
    const id = `msg-${randomUUID()}`;
    assert.deepEqual(await routes.remember('smpp', id, { tenantId: 'contoso', challengeId: 'c-1' }, 1_000), { reused: false });
    assert.deepEqual(await routes.find('smpp', id), { kind: 'route', route: { tenantId: 'contoso', challengeId: 'c-1' }, sentAt: 1_000 });
    assert.deepEqual(await routes.remember('smpp', id, { tenantId: 'contoso', challengeId: 'c-1' }, 2_000), { reused: false });
    assert.deepEqual(await routes.find('smpp', id), { kind: 'route', route: { tenantId: 'contoso', challengeId: 'c-1' }, sentAt: 2_000 });
    assert.equal(await routes.find('smpp', `msg-${randomUUID()}`), undefined);
    // A route written before routes carried their time is still found (nothing is checked against its time).
    const old = `msg-${randomUUID()}`;
    await redis.set(RedisKeys.smsReceiptRoute('smpp', old), JSON.stringify({ t: 'contoso', c: 'c-0' }), 'PX', 60_000);
    assert.deepEqual(await routes.find('smpp', old), { kind: 'route', route: { tenantId: 'contoso', challengeId: 'c-0' }, sentAt: undefined });
  });

  itWith({ real: ['redis'] }, 'an id given again to an SMS of another challenge (another tenant) makes it ambiguous, for a day from the latest, not the new challenge\'s', async () => {
    const id = `msg-${randomUUID()}`;
    const key = RedisKeys.smsReceiptRoute('smpp', id);
    await routes.remember('smpp', id, { tenantId: 'contoso', challengeId: 'c-1' }, 1_000, 60_000);
    assert.deepEqual(await routes.remember('smpp', id, { tenantId: 'fabrikam', challengeId: 'c-2' }, 2_000), {
      reused: true,
      held: { kind: 'route', route: { tenantId: 'contoso', challengeId: 'c-1' }, sentAt: 1_000 },
    });
    assert.deepEqual(await routes.find('smpp', id), { kind: 'ambiguous' });
    assert.ok((await redis.pttl(key)) > 60_000, 'kept as long as the latest SMS may get its receipt');
    // A third SMS under the id, even of the first challenge, leaves it ambiguous.
    assert.deepEqual(await routes.remember('smpp', id, { tenantId: 'contoso', challengeId: 'c-1' }, 3_000), { reused: true, held: { kind: 'ambiguous' } });
    assert.deepEqual(await routes.find('smpp', id), { kind: 'ambiguous' });
    // Per provider: the same id at another provider is another message.
    assert.deepEqual(await routes.remember('smpp-b', id, { tenantId: 'fabrikam', challengeId: 'c-2' }, 2_000), { reused: false });
  });
});
