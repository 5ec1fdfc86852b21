import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { ContractError } from '@mfa/contracts';
import { loadKeyring, totpStep } from '@mfa/crypto';
import { PROJECTION_LAYOUT, RedisKeys, UserFields, UserIndex, UserProjectionWriter, type ProjectedDevice, type UserSnapshot } from '@mfa/projection';
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
  const token = (tokenId: string, period: 30 | 60, activatedStep: number): UserSnapshot['totpTokens'][number] => ({ tokenId, secret: randomBytes(20), digits: 6, period, activatedStep });
  const device = (nonce: string, id?: string): { nonce: string; device: ProjectedDevice } => ({
    nonce,
    device: { state: 'active', algorithm: 'ES256', publicKey: 'MFkw', platform: 'none', name: `phone ${nonce.slice(0, 4)}`, activatedAt: new Date().toISOString(), ...(id ? { id } : {}) },
  });
  const newNonce = () => randomBytes(16).toString('base64url');
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

  itWith({ real: ['redis'] }, 'removes the steps of tokens the snapshot no longer has, but keeps one a code could still be accepted for (a hardware token assigned again keeps its id)', async () => {
    const userId = uniqueUser('steps-gone');
    const keys = keysOf(userId);
    const now = Date.now();
    // Codes accepted just now, one step early (the drift window), by a 30- and a 60-second hardware token.
    const recent30 = totpStep(now, 30) + 1;
    const recent60 = totpStep(now, 60) + 1;
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 10, totpTokens: [token('app', 30, 100), token('hardware', 30, recent30), token('hardware60', 60, recent60)] })), true);
    // Steps of tokens gone before: one long ago, one 11 minutes ago; one 9 minutes ago could still count.
    await redis.hset(keys.steps, 'gone-long-ago', '100', 'gone-11-minutes', String(totpStep(now - 11 * 60_000, 30)), 'gone-9-minutes', String(totpStep(now - 9 * 60_000, 30)));

    // Every token deleted (or the hardware ones taken back and assigned again: pending, not in the snapshot).
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 11, methods: ['sms'], defaultMethod: 'sms', totpTokens: [] })), true);
    assert.deepEqual(Object.keys(await redis.hgetall(keys.steps)).sort(), ['gone-9-minutes', 'hardware', 'hardware60']);

    // The hardware token activated again by a code two steps older than the one accepted before
    // (its activatedStep): the guard keeps the step accepted before, so that code stays spent.
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 12, totpTokens: [token('hardware', 30, recent30 - 2)] })), true);
    assert.equal(await redis.hget(keys.steps, 'hardware'), String(recent30));

    // Not written (-2: the slot's steps not restored after a loss), nothing is removed either.
    const before = await redis.hgetall(keys.steps);
    await redis.del(...keys.slotMarkers);
    try {
      await assert.rejects(writer.apply(snapshotOf(userId, { seq: 13, totpTokens: [token('unguarded', 30, 300)] })), (error: unknown) => error instanceof ContractError && error.code === 'unavailable');
      assert.deepEqual(await redis.hgetall(keys.steps), before);
    } finally {
      await writer.markStepsRestored();
    }
  });

  itWith({ real: ['redis'] }, 'removes when each device the snapshot no longer has last answered', async () => {
    const userId = uniqueUser('devices-used');
    const used = RedisKeys.devicesUsed(keysOf(userId).tag);
    const [kept, deleted] = [newNonce(), newNonce()];
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 10, devices: [device(kept), device(deleted)] })), true);
    await redis.hset(used, kept, '1700000000001', deleted, '1700000000002', 'deleted-before', '1700000000003');

    assert.equal(await writer.apply(snapshotOf(userId, { seq: 11, devices: [device(kept)] })), true);
    assert.deepEqual(await redis.hgetall(used), { [kept]: '1700000000001' });

    // The same snapshot again, or an older one: nothing written, nothing removed.
    await redis.hset(used, 'late', '1700000000004');
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 11, devices: [device(kept)] })), false);
    assert.equal(await writer.apply(snapshotOf(userId, { seq: 10, devices: [device(kept)] })), false);
    assert.deepEqual(await redis.hgetall(used), { [kept]: '1700000000001', late: '1700000000004' });
  });

  itWith({ real: ['redis'] }, 'removes the pointers of apps activated under an earlier master key that the snapshot no longer has', async () => {
    const userId = uniqueUser('devices-moved');
    const { tag } = keysOf(userId);
    const oldTag = newNonce();
    const pointers = RedisKeys.devicesMoved(oldTag);
    const [deleted, stays, current] = [newNonce(), newNonce(), newNonce()];
    const older = snapshotOf(userId, { seq: 10, devices: [device(deleted, `${oldTag}.${deleted}`), device(stays, `${oldTag}.${stays}`), device(current)] });
    try {
      assert.equal(await writer.apply(older), true);
      assert.deepEqual(await redis.hgetall(pointers), { [deleted]: tag, [stays]: tag });
      // A device whose JSON does not parse is removed all the same (it names no pointer).
      await redis.hset(RedisKeys.devices(tag), 'garbled', '{"id":');

      assert.equal(await writer.apply(snapshotOf(userId, { seq: 11, devices: [device(stays, `${oldTag}.${stays}`), device(current)] })), true);
      assert.deepEqual(await redis.hgetall(pointers), { [stays]: tag });
      assert.deepEqual(Object.keys(await redis.hgetall(RedisKeys.devices(tag))).sort(), [current, stays].sort());
      // The older snapshot, late: ignored, no pointer back.
      assert.equal(await writer.apply(older), false);
      assert.deepEqual(await redis.hgetall(pointers), { [stays]: tag });
    } finally {
      await redis.del(pointers);
    }
  });
});
