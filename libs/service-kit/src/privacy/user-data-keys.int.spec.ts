import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EventSubjects, Streams } from '@mfa/contracts';
import { generateDataKey, keyringFromMasterKey, userTag } from '@mfa/crypto';
import { connectNats, ensureStream, isTransientDependencyError, type NatsClients } from '@mfa/messaging';
import { eventually, itWith, startNatsServer, uniqueTenant, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { openPersonalData, sealPersonalData } from './personal-data.js';
import { UserDataKeys, UserErasedMeanwhileError } from './user-data-keys.js';

const keyring = keyringFromMasterKey(Buffer.alloc(32, 3));

/** Every file under `dir`, concatenated: what the server keeps on disk. */
async function diskBytes(dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) parts.push(await readFile(join(entry.parentPath, entry.name)));
  }
  return Buffer.concat(parts);
}

// Its own nats-server, so the test can look at the stream's files on disk.
describe('per-user data keys in MFA_USER_KEYS', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  const fresh = () => new UserDataKeys(nats, keyring);

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'data-keys-test' });
    await ensureStream(nats.jsm, Streams.userKeys);
  });

  after(async () => {
    await nats?.nc.close();
    await server?.stop();
  });

  itWith({ real: ['nats'] }, 'creates one key per user: concurrent first registrations agree on it', async () => {
    const tenantId = uniqueTenant('dk');
    const userId = uniqueUser('race');
    const keys = await Promise.all(Array.from({ length: 6 }, () => fresh().getOrCreate(tenantId, userId)));
    assert.deepEqual(new Set(keys.map((k) => k.wrapped)).size, 1);
    assert.equal(keys[0]!.gen, 1);
    const sealed = sealPersonalData(keys[0]!, { tenantId, userId, purpose: 'profile' }, { phoneNumber: '+46701234567' })!;
    for (const key of keys) assert.deepEqual(openPersonalData(key, { tenantId, userId, purpose: 'profile' }, sealed), { phoneNumber: '+46701234567' });
    // The subject is the user's keyed tag: it names neither tenant nor user.
    const subjects = Object.keys((await nats.jsm.streams.info(Streams.userKeys.name, { subjects_filter: '>' })).state.subjects ?? {});
    assert.ok(subjects.includes(EventSubjects.userDataKey(userTag(keyring, tenantId, userId))));
    assert.ok(subjects.every((s) => !s.includes(userId) && !s.includes(Buffer.from(userId).toString('base64url'))));
  });

  itWith({ real: ['nats'] }, 'erases a key: overwritten on disk, a tombstone in its place, and a new generation afterwards', async () => {
    const tenantId = uniqueTenant('dk');
    const userId = uniqueUser('gone');
    const owner = { tenantId, userId, purpose: 'profile' as const };
    const keys = fresh();
    const key = await keys.getOrCreate(tenantId, userId);
    const sealed = sealPersonalData(key, owner, { displayName: 'Helga Nordin' })!;
    const material = key.key.export();
    // The server writes its blocks asynchronously.
    await eventually(async () => ((await diskBytes(server.storeDir)).includes(Buffer.from(key.wrapped)) ? true : undefined), 5_000, 'the wrapped key on disk');

    await keys.erase(tenantId, userId, key.gen, new Date());
    const onDisk = await diskBytes(server.storeDir);
    assert.ok(!onDisk.includes(Buffer.from(key.wrapped)), 'the wrapped key is overwritten on disk');
    assert.ok(!onDisk.includes(material), 'the key itself was never on disk');
    const entry = await keys.current(tenantId, userId);
    assert.equal(entry?.kind, 'erased');
    assert.equal(entry?.gen, 1);
    const messages = (await nats.jsm.streams.info(Streams.userKeys.name, { subjects_filter: EventSubjects.userDataKey(userTag(keyring, tenantId, userId)) })).state;
    assert.deepEqual(Object.values(messages.subjects ?? {}), [1], 'the subject holds one message: the tombstone');
    assert.equal(await fresh().get(tenantId, userId, 1), 'erased');
    // Erasing again changes nothing.
    await keys.erase(tenantId, userId, 1, new Date());
    assert.equal((await keys.current(tenantId, userId))?.seq, entry?.seq);

    // A caller that loaded the user before the erasure (its minGen is still 1) gets no new key:
    // the erasure, done already, would never destroy it.
    await assert.rejects(keys.getOrCreate(tenantId, userId), (error) => error instanceof UserErasedMeanwhileError && error.code === 'unavailable' && isTransientDependencyError(error));
    await assert.rejects(fresh().getOrCreate(tenantId, userId, { minGen: 1 }), UserErasedMeanwhileError);
    assert.equal((await keys.current(tenantId, userId))?.kind, 'erased', 'and nothing was created');
    // The user registered again (the aggregate recorded the erasure of generation 1).
    const next = await keys.getOrCreate(tenantId, userId, { minGen: 2 });
    assert.equal(next.gen, 2);
    assert.notEqual(next.wrapped, key.wrapped);
    assert.equal(await fresh().get(tenantId, userId, 1), 'erased', 'the old generation stays erased');
    assert.equal(((await fresh().get(tenantId, userId, 2)) as { wrapped: string }).wrapped, next.wrapped);
    assert.throws(() => openPersonalData(next, owner, sealed), /generation 1, not 2/);
  });

  itWith({ real: ['nats'] }, 'never hands out a generation the aggregate says was erased, finishing that erasure instead', async () => {
    const tenantId = uniqueTenant('dk');
    const userId = uniqueUser('crash');
    const first = await fresh().getOrCreate(tenantId, userId);
    // As after a crash between UserErased and the shredding: the register after it asks for gen ≥ 2.
    const second = await fresh().getOrCreate(tenantId, userId, { minGen: 2 });
    assert.equal(second.gen, 2);
    assert.notEqual(second.wrapped, first.wrapped);
    assert.ok(!(await diskBytes(server.storeDir)).includes(Buffer.from(first.wrapped)));
    // A late erasure of generation 1 leaves generation 2 alone.
    await fresh().erase(tenantId, userId, 1, new Date());
    assert.equal((await fresh().current(tenantId, userId))?.gen, 2);
  });

  itWith({ real: ['nats'] }, 'finds a user’s key after a master key rotation renamed the subject, and moves it over', async () => {
    const tenantId = uniqueTenant('dk');
    const userId = uniqueUser('rotated');
    const owner = { tenantId, userId, purpose: 'profile' as const };
    const before = await fresh().getOrCreate(tenantId, userId);
    const sealed = sealPersonalData(before, owner, { email: 'helga@contoso.com' })!;
    const rotated = keyringFromMasterKey(Buffer.alloc(32, 4), [keyring]);
    const oldSubject = EventSubjects.userDataKey(userTag(keyring, tenantId, userId));
    const newSubject = EventSubjects.userDataKey(userTag(rotated, tenantId, userId));
    assert.notEqual(oldSubject, newSubject);
    const after = await new UserDataKeys(nats, rotated).get(tenantId, userId, 1);
    assert.ok(after && after !== 'erased');
    assert.deepEqual(openPersonalData(after, owner, sealed), { email: 'helga@contoso.com' });
    assert.match(after.wrapped, new RegExp(`^v2\\.${rotated.kid}\\.`), 'wrapped again with the new master key');
    assert.equal(await nats.jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: oldSubject }), null);
    assert.ok(!(await diskBytes(server.storeDir)).includes(Buffer.from(before.wrapped)), 'the old copy overwritten');
    // Erasing after the rotation reaches it; creating after the rotation continues its generations.
    await new UserDataKeys(nats, rotated).erase(tenantId, userId, 1, new Date());
    assert.equal((await new UserDataKeys(nats, rotated).getOrCreate(tenantId, userId, { minGen: 2 })).gen, 2);
  });

  itWith({ real: ['nats'] }, 'instances reading a rotated user at once all get the key: a move another finished first is no error', async () => {
    const rotated = keyringFromMasterKey(Buffer.alloc(32, 5), [keyring]);
    const users = Array.from({ length: 10 }, () => ({ tenantId: uniqueTenant('dk'), userId: uniqueUser('moved') }));
    for (const { tenantId, userId } of users) await fresh().getOrCreate(tenantId, userId);
    // Four instances each (a rebuild and on-demand reads after the rotation): each moves the key and
    // deletes the old copy, and all but one find that copy already deleted.
    const reads = await Promise.allSettled(users.flatMap(({ tenantId, userId }) => Array.from({ length: 4 }, () => new UserDataKeys(nats, rotated).get(tenantId, userId, 1))));
    const failed = reads.filter((r) => r.status === 'rejected').map((r) => `${String((r as PromiseRejectedResult).reason)} ${((r as PromiseRejectedResult).reason as { code?: number }).code}`);
    assert.deepEqual(failed, []);
    for (const r of reads) assert.ok(r.status === 'fulfilled' && r.value && r.value !== 'erased' && r.value.wrapped.startsWith(`v2.${rotated.kid}.`));
  });

  itWith({ real: ['nats'] }, 'after two rotations, moves the latest generation among the previous tags, not an older erasure', async () => {
    const tenantId = uniqueTenant('dk');
    const userId = uniqueUser('twice');
    const middle = keyringFromMasterKey(Buffer.alloc(32, 6), [keyring]);
    // Previous keys listed oldest first: the oldest tag holds a tombstone of generation 1, the
    // middle one the key of generation 2 (registered again before the second rotation).
    const twice = keyringFromMasterKey(Buffer.alloc(32, 7), [keyring, middle]);
    await nats.js.publish(EventSubjects.userDataKey(userTag(keyring, tenantId, userId)), JSON.stringify({ gen: 1, erasedAt: new Date().toISOString() }));
    const key = generateDataKey(middle, tenantId, userId, 2);
    await nats.js.publish(EventSubjects.userDataKey(userTag(middle, tenantId, userId)), JSON.stringify({ gen: 2, wrappedKey: key.wrapped }));
    const found = await new UserDataKeys(nats, twice).get(tenantId, userId, 2);
    assert.ok(found && found !== 'erased', 'generation 2 is the user’s key after the move');
    assert.ok(found.key.export().equals(key.dataKey.key.export()));
  });

  itWith({ real: ['nats'] }, 'caches keys for a while, forgets one on evict, and answers undefined for keys it does not know', async () => {
    const tenantId = uniqueTenant('dk');
    const userId = uniqueUser('cache');
    const reader = fresh();
    assert.equal(await reader.get(tenantId, userId, 1), undefined);
    const key = await fresh().getOrCreate(tenantId, userId);
    assert.equal(((await reader.get(tenantId, userId, 1)) as { wrapped: string }).wrapped, key.wrapped);
    await fresh().erase(tenantId, userId, 1, new Date());
    assert.notEqual(await reader.get(tenantId, userId, 1), 'erased', 'still cached');
    reader.evict(tenantId, userId);
    assert.equal(await reader.get(tenantId, userId, 1), 'erased');
    // A value sealed under a generation newer than the cached tombstone makes it read again.
    const renewed = await fresh().getOrCreate(tenantId, userId, { minGen: 2 });
    assert.equal(((await reader.get(tenantId, userId, 2)) as { wrapped: string }).wrapped, renewed.wrapped);
    // Expiry.
    let now = 0;
    const clocked = new UserDataKeys(nats, keyring, { ttlMs: 1000, now: () => now });
    assert.ok(await clocked.get(tenantId, userId, 2));
    await fresh().erase(tenantId, userId, 2, new Date());
    assert.notEqual(await clocked.get(tenantId, userId, 2), 'erased');
    now += 1001;
    assert.equal(await clocked.get(tenantId, userId, 2), 'erased');
  });
});
