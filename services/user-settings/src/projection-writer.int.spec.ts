import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { ContractError } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { PROJECTION_LAYOUT, RedisKeys, UserFields, UserIndex, UserProjectionWriter, type UserSnapshot } from '@mfa/projection';
import { itWith, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';

/**
 * The Redis projection's writer against the real Redis, in a database of its own (13): these
 * tests take the hash slots' markers away, which on the shared database would tell every running
 * service that Redis lost its data.
 */
const DB = 13;

describe('user projection writer (real Redis)', () => {
  let redis: Redis;
  let writer: UserProjectionWriter;
  let index: UserIndex;
  const { keyring } = loadKeyring({});
  const tenantId = uniqueTenant('writer');

  const snapshotOf = (userId: string, overrides: Partial<UserSnapshot> = {}): UserSnapshot => ({
    tenantId,
    userId,
    seq: 10,
    displayName: 'Helga Nordin',
    phoneNumber: '+46701234567',
    phoneCountry: 'SE',
    appPasswordRequired: true,
    dataKey: '1:wrapped',
    methods: ['sms', 'totp'],
    defaultMethod: 'totp',
    totpTokens: [{ tokenId: 'app', secret: randomBytes(20), digits: 6, period: 30, activatedStep: 100 }],
    ...overrides,
  });
  const keysOf = (userId: string) => {
    const tag = writer.tagOf(tenantId, userId);
    return { tag, user: RedisKeys.user(tag), totp: RedisKeys.totp(tag), steps: RedisKeys.totpSteps(tag), slotMarkers: [RedisKeys.slotMarker(tag), RedisKeys.slotStepsMarker(tag)] };
  };
  const found = async (query: string) => (await index.list(tenantId, { query, limit: 10 })).items.map((i) => i.userId);

  before(async () => {
    redis = new Redis(testEnv.redisUrl, { db: DB });
    writer = new UserProjectionWriter(redis, keyring);
    index = new UserIndex(redis, keyring);
    // A Redis whose rebuild restored the accepted steps: snapshots with tokens are written.
    await writer.markStepsRestored();
  });

  after(async () => {
    await redis.del(RedisKeys.userIndex(tenantId), RedisKeys.userIndexTerms(tenantId));
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'writes the same snapshot again over one of an older layout (fields a new layout added come back)', async () => {
    const userId = uniqueUser('layout');
    const keys = keysOf(userId);
    const snapshot = snapshotOf(userId);
    assert.equal(await writer.apply(snapshot), true);
    assert.equal(await redis.hget(keys.user, UserFields.layout), String(PROJECTION_LAYOUT));
    assert.deepEqual(await writer.standing([{ tenantId, userId }]), [{ seq: 10, whole: true }]);
    assert.equal(await writer.apply(snapshot), false, 'the same snapshot in the same layout: nothing to write');

    // As a projection of layout v5 (no layout field) or v3 (nor appPassword nor phoneCountry) left it.
    await redis.hdel(keys.user, UserFields.layout, UserFields.appPassword, UserFields.phoneCountry);
    assert.deepEqual(await writer.standing([{ tenantId, userId }]), [{ seq: 10, whole: false }], 'not whole: the projector rebuilds it');
    assert.equal(await writer.apply(snapshot), true, 'written again at the same sequence');
    assert.deepEqual(await redis.hmget(keys.user, UserFields.phoneCountry, UserFields.appPassword, UserFields.layout), ['SE', '1', String(PROJECTION_LAYOUT)]);

    // Another layout's number, the same.
    await redis.hset(keys.user, UserFields.layout, '5');
    await redis.hdel(keys.user, UserFields.phoneCountry);
    assert.equal(await writer.apply(snapshot), true);
    assert.equal(await redis.hget(keys.user, UserFields.phoneCountry), 'SE');
    // Never backwards, whatever the layout.
    await redis.hset(keys.user, UserFields.layout, '5');
    assert.equal(await writer.apply({ ...snapshot, seq: 9, phoneCountry: 'NO' }), false);
    assert.equal(await redis.hget(keys.user, UserFields.phoneCountry), 'SE');
  });

  itWith({ real: ['redis'] }, 'keeps the newest snapshot in the search index, and an erased user out of it, whatever order the writes come in', async () => {
    const userId = uniqueUser('order');
    // Writer A projects seq 10 (Ada, +46...01), writer B seq 11 (Bea, +46...02); B's index write
    // lands first, then A's, late.
    const older = snapshotOf(userId, { seq: 10, displayName: 'Ada Andersson', phoneNumber: '+46700000001', totpTokens: [] });
    const newer = snapshotOf(userId, { seq: 11, displayName: 'Bea Berg', phoneNumber: '+46700000002', totpTokens: [] });
    assert.equal(await writer.apply(newer), true);
    assert.equal(await index.put(tenantId, userId, older, older.seq), false, 'a late write of an older snapshot is refused');
    assert.deepEqual(await found('Bea'), [userId]);
    assert.deepEqual(await found('Ada'), []);
    assert.deepEqual(await index.usersWithPhone(tenantId, '+46700000001', 10), []);
    assert.deepEqual(await index.usersWithPhone(tenantId, '+46700000002', 10), [userId]);
    assert.deepEqual(await writer.standing([{ tenantId, userId }]), [{ seq: 11, whole: true }]);

    // The index write of a snapshot did not happen (a crash between the two): not whole, rebuilt.
    await redis.hset(RedisKeys.userIndexTerms(tenantId), userId, `10\n${(await redis.hget(RedisKeys.userIndexTerms(tenantId), userId))!.split('\n').slice(1).join('\n')}`);
    assert.deepEqual(await writer.standing([{ tenantId, userId }]), [{ seq: 11, whole: false }]);
    assert.equal(await writer.apply(newer), false, 'the projection was there');
    assert.deepEqual(await writer.standing([{ tenantId, userId }]), [{ seq: 11, whole: true }], 'the index follows it');

    // Erased at 12: a late index write of the snapshot at 11 cannot put the name or the phone back.
    assert.equal(await writer.erase(tenantId, userId, 12), true);
    assert.equal(await index.put(tenantId, userId, newer, newer.seq), false);
    assert.deepEqual(await found('Bea'), []);
    assert.deepEqual(await found(userId), []);
    assert.deepEqual(await index.usersWithPhone(tenantId, '+46700000002', 10), []);
    assert.equal(await index.has(tenantId, userId), false);
    // Registered again later: back in the index.
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 13, displayName: 'Cay Carlsson', totpTokens: [] })), true);
    assert.deepEqual(await found('Cay'), [userId]);
  });

  itWith({ real: ['redis'] }, 'writes no token without its replay guard until the slot’s steps are restored after a loss', async () => {
    const userId = uniqueUser('steps');
    const keys = keysOf(userId);
    const snapshot = snapshotOf(userId);
    // Redis lost the slot's data (its markers with it); the rebuild has not restored the steps yet.
    await redis.del(...keys.slotMarkers);
    try {
      await assert.rejects(writer.apply(snapshot), (error: unknown) => error instanceof ContractError && error.code === 'unavailable');
      assert.equal(await redis.exists(keys.user, keys.totp, keys.steps), 0, 'nothing of the user written');

      // Without a token nothing can be replayed: written at once.
      const other = uniqueUser('steps');
      assert.equal(await writer.apply(snapshotOf(other, { totpTokens: [], methods: ['sms'] })), true);

      // A token whose accepted step the restore put back (or that was guarded already): written,
      // and the guard keeps the step accepted before the loss, not the activation's.
      await writer.restoreTotpStep(tenantId, userId, 'app', 5_000);
      assert.equal(await writer.apply(snapshot), true);
      assert.equal(await redis.hget(keys.steps, 'app'), '5000');

      // A new token, not guarded yet: a command waits for the restore, then writes.
      const enrolled = { ...snapshot, seq: 11, totpTokens: [...snapshot.totpTokens, { tokenId: 'second', secret: randomBytes(20), digits: 6, period: 30, activatedStep: 200 }] };
      await assert.rejects(writer.apply(enrolled, { waitForStepsMs: 150 }), /restored/);
      assert.equal(await redis.hget(keys.user, 'seq'), '10');
      const restored = setTimeout(() => void writer.markStepsRestored(), 200);
      try {
        assert.equal(await writer.apply(enrolled, { waitForStepsMs: 10_000 }), true);
      } finally {
        clearTimeout(restored);
      }
      assert.deepEqual(await redis.hmget(keys.steps, 'app', 'second'), ['5000', '200']);
    } finally {
      await writer.markStepsRestored();
    }
  });
});
