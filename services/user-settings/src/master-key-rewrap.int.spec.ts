import { after, before, beforeEach, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { EventSubjects, IMPORTS_BUCKET, Streams, type AnyEvent } from '@mfa/contracts';
import { generateDataKey, keyringFromMasterKey, seal, SealContext, userTag, type Keyring } from '@mfa/crypto';
import { connectNats, createEvent, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { KeyringCheck, openPersonalData, sealPersonalData, UserDataKeys } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, uniqueTenant, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { Kvm } from '@nats-io/kv';
import { Objm } from '@nats-io/obj';
import { IMPORT_JOBS_BUCKET } from './adapters/import-jobs.js';
import { MasterKeyRewrap } from './application/master-key-rewrap.js';
import { formatReport } from './rewrap.js';

// The key rotated out (it leaked), the new one with the old one still listed, and the new one alone.
const oldRing = keyringFromMasterKey(Buffer.alloc(32, 7));
const rotated = keyringFromMasterKey(Buffer.alloc(32, 8), [oldRing]);
const newOnly = keyringFromMasterKey(Buffer.alloc(32, 8));
const now = new Date('2026-12-01T10:00:00Z');

// Its own nats-server: the tool walks every user and key of the streams, and the counts are exact.
describe('rewrap after a master key rotation (rewrap.js)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  let events: EventPublisher;

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'rewrap-test' });
    await ensureStream(nats.jsm, Streams.userKeys);
    await ensureStream(nats.jsm, Streams.userSettings);
    events = new EventPublisher(nats.js);
  });

  beforeEach(async () => {
    await nats.jsm.streams.purge(Streams.userKeys.name);
    await nats.jsm.streams.purge(Streams.userSettings.name);
    for (const stream of [`KV_${IMPORT_JOBS_BUCKET}`, `OBJ_${IMPORTS_BUCKET}`]) await nats.jsm.streams.delete(stream).catch(() => undefined);
  });

  after(async () => {
    await nats?.nc.close();
    await server?.stop();
  });

  const tool = (keyring: Keyring = rotated, dryRun = false) => new MasterKeyRewrap(nats, keyring, { dryRun });
  const append = (tenantId: string, userId: string, event: AnyEvent) => events.publish(EventSubjects.user(tenantId, userId), event);
  const registered = (tenantId: string, userId: string) =>
    append(tenantId, userId, createEvent('UserRegistered', 1, { tenantId, aggregateId: userId, now, data: { userId } }));
  const rewrapPlan = (tenantId: string, userId: string) => tool().inspect(tenantId, userId);
  const keysLastSeq = async () => (await nats.jsm.streams.info(Streams.userKeys.name)).state.last_seq;

  /** A user registered before the rotation: their data key under the old key's tag, wrapped with the old key. */
  async function userBeforeRotation(prefix: string) {
    const tenantId = uniqueTenant('rw');
    const userId = uniqueUser(prefix);
    await registered(tenantId, userId);
    const key = await new UserDataKeys(nats, oldRing).getOrCreate(tenantId, userId);
    const owner = { tenantId, userId, purpose: 'profile' as const };
    const name = `Helga ${prefix}`;
    return { tenantId, userId, owner, name, wrapped: key.wrapped, sealed: sealPersonalData(key, owner, { displayName: name })! };
  }

  itWith({ real: ['nats'] }, 'moves every data key to the new key: they open with the old key removed, a second run changes nothing', async () => {
    const users = await Promise.all(['a', 'b', 'c'].map(userBeforeRotation));
    const erased = await userBeforeRotation('erased');
    await new UserDataKeys(nats, oldRing).erase(erased.tenantId, erased.userId, 1, now);

    // A dry run tells what it would do, and writes nothing.
    const before = await keysLastSeq();
    const dry = await tool(rotated, true).run();
    assert.equal(await keysLastSeq(), before, 'a dry run writes nothing');
    assert.deepEqual([dry.dataKeys.moved, dry.dataKeys.tombstonesMoved, dry.needs[oldRing.kid]?.dataKeys], [3, 1, 3]);
    assert.deepEqual(dry.removable, [], 'the old key is still needed before the run');

    const report = await tool().run();
    // The old key gone from the keyring: every key still opens the data sealed under it, the erased user stays erased.
    const keys = new UserDataKeys(nats, newOnly);
    for (const u of users) {
      const key = await keys.get(u.tenantId, u.userId, 1);
      assert.ok(key && key !== 'erased', 'the key is found under the new key');
      assert.deepEqual(openPersonalData(key, u.owner, u.sealed), { displayName: u.name });
    }
    assert.equal(await keys.get(erased.tenantId, erased.userId, 1), 'erased');
    const subjects = Object.keys((await nats.jsm.streams.info(Streams.userKeys.name, { subjects_filter: '>' })).state.subjects ?? {});
    for (const u of [...users, erased]) {
      assert.ok(!subjects.includes(EventSubjects.userDataKey(userTag(oldRing, u.tenantId, u.userId))), 'nothing is left under the old tag');
    }

    assert.deepEqual(
      { users: report.users, ...report.dataKeys },
      { users: 4, moved: 3, tombstonesMoved: 1, rewrapped: 0, copiesRemoved: 4, conflicts: 0, raced: 0, failed: 0, tombstones: 1 },
    );
    assert.equal(report.needs[oldRing.kid]?.dataKeys, 0);
    assert.equal(report.needs[rotated.kid]?.dataKeys, 3);
    assert.deepEqual(report.removable, [oldRing.kid]);
    assert.match(formatReport(report), new RegExp(`${oldRing.kid}: nothing in use needs it`));

    const afterRun = await keysLastSeq();
    const again = await tool().run();
    assert.equal(await keysLastSeq(), afterRun, 'a second run writes nothing');
    assert.deepEqual([again.dataKeys.moved, again.dataKeys.tombstonesMoved, again.dataKeys.rewrapped, again.dataKeys.copiesRemoved], [0, 0, 0, 0]);
    assert.deepEqual(again.removable, [oldRing.kid]);
  });

  itWith({ real: ['nats'] }, 'an erasure between the read and the move wins: its tombstone stays, no key comes back', async () => {
    const u = await userBeforeRotation('race-move');
    const rewrap = tool();
    const plan = await rewrap.inspect(u.tenantId, u.userId);
    assert.equal(plan.previous[0]?.stored.kind, 'key');
    await new UserDataKeys(nats, rotated).erase(u.tenantId, u.userId, 1, now);

    const outcome = await rewrap.apply(plan);
    const entry = await new UserDataKeys(nats, newOnly).current(u.tenantId, u.userId);
    assert.equal(entry?.kind, 'erased', 'the tombstone is what the user’s subject holds');
    assert.deepEqual([outcome.raced, outcome.moved], [true, undefined]);
  });

  itWith({ real: ['nats'] }, 'an erasure between the read and an in-place re-wrap wins: its tombstone stays', async () => {
    const tenantId = uniqueTenant('rw');
    const userId = uniqueUser('race-inplace');
    await registered(tenantId, userId);
    // A key under the new tag still wrapped with the old key (e.g. the keys swapped back and forth).
    const { wrapped } = generateDataKey(oldRing, tenantId, userId, 1);
    await nats.js.publish(EventSubjects.userDataKey(userTag(rotated, tenantId, userId)), JSON.stringify({ gen: 1, wrappedKey: wrapped }), { expect: { lastSubjectSequence: 0 } });
    const rewrap = tool();
    const plan = await rewrap.inspect(tenantId, userId);
    assert.equal(plan.current?.stored.kind, 'key');
    await new UserDataKeys(nats, rotated).erase(tenantId, userId, 1, now);

    const outcome = await rewrap.apply(plan);
    assert.equal((await new UserDataKeys(nats, newOnly).current(tenantId, userId))?.kind, 'erased', 'the tombstone is what the user’s subject holds');
    assert.deepEqual([outcome.raced, outcome.rewrapped], [true, false]);

    // Without the race, the same key is wrapped again in place and opens without the old key.
    const other = uniqueUser('inplace');
    await registered(tenantId, other);
    const key = generateDataKey(oldRing, tenantId, other, 1);
    await nats.js.publish(EventSubjects.userDataKey(userTag(rotated, tenantId, other)), JSON.stringify({ gen: 1, wrappedKey: key.wrapped }));
    const report = await tool().run();
    assert.equal(report.dataKeys.rewrapped, 1);
    const reopened = await new UserDataKeys(nats, newOnly).get(tenantId, other, 1);
    assert.ok(reopened && reopened !== 'erased');
    assert.ok(reopened.key.export().equals(key.dataKey.key.export()), 'the same key, wrapped with the new master key');
  });

  itWith({ real: ['nats'] }, 'after two rotations, the latest generation among the previous tags is moved, not an older erasure', async () => {
    // Two rotations: the oldest key's tag holds a tombstone of generation 1, the middle key's tag
    // the user's key of generation 2 (registered again after that erasure, before the second rotation).
    const middle = keyringFromMasterKey(Buffer.alloc(32, 9), [oldRing]);
    // Listed oldest first (MFA_PREVIOUS_ENCRYPTION_KEYS in any order).
    const twice = keyringFromMasterKey(Buffer.alloc(32, 8), [oldRing, middle]);
    const tenantId = uniqueTenant('rw');
    const userId = uniqueUser('two-rotations');
    await registered(tenantId, userId);
    const tombstone = JSON.stringify({ gen: 1, erasedAt: now.toISOString() });
    const key = generateDataKey(middle, tenantId, userId, 2);
    await nats.js.publish(EventSubjects.userDataKey(userTag(oldRing, tenantId, userId)), tombstone);
    await nats.js.publish(EventSubjects.userDataKey(userTag(middle, tenantId, userId)), JSON.stringify({ gen: 2, wrappedKey: key.wrapped }));

    const report = await new MasterKeyRewrap(nats, twice, {}).run();
    assert.equal(report.dataKeys.moved, 1);
    const after = await new UserDataKeys(nats, keyringFromMasterKey(Buffer.alloc(32, 8))).get(tenantId, userId, 2);
    assert.ok(after && after !== 'erased', 'the generation 2 key is the current record');
    assert.ok(after.key.export().equals(key.dataKey.key.export()), 'the same key, wrapped with the current master key');
    assert.equal(report.dataKeys.conflicts, 0, 'the older tombstone is superseded, not a conflict');
  });

  itWith({ real: ['nats'] }, 'a copy left under the old tag goes when the current record holds the same key, and stays when it holds another', async () => {
    // An interrupted move: the key is under the new tag, and its copy is still under the old one.
    const moved = await userBeforeRotation('interrupted');
    await new UserDataKeys(nats, rotated).get(moved.tenantId, moved.userId, 1);
    await nats.js.publish(EventSubjects.userDataKey(userTag(oldRing, moved.tenantId, moved.userId)), JSON.stringify({ gen: 1, wrappedKey: moved.wrapped }));
    // A service without the old key configured made another key of the same generation under the new tag:
    // the old one is the only key of the data sealed before, and must not be deleted.
    const split = await userBeforeRotation('split');
    await new UserDataKeys(nats, newOnly).getOrCreate(split.tenantId, split.userId);

    const report = await tool().run();
    assert.deepEqual([report.dataKeys.copiesRemoved, report.dataKeys.conflicts], [1, 1]);
    const subjects = Object.keys((await nats.jsm.streams.info(Streams.userKeys.name, { subjects_filter: '>' })).state.subjects ?? {});
    assert.ok(!subjects.includes(EventSubjects.userDataKey(userTag(oldRing, moved.tenantId, moved.userId))), 'the redundant copy is gone');
    assert.ok(subjects.includes(EventSubjects.userDataKey(userTag(oldRing, split.tenantId, split.userId))), 'the other key stays');
    assert.equal(report.needs[oldRing.kid]?.dataKeys, 1, 'and still needs the old key');
    assert.deepEqual(report.removable, []);
  });

  itWith({ real: ['nats'] }, 'runs as a command: refuses (4) while a service has another key, no service confirms its key, or it has only the development key; a report without keys, exit 3 while the old key is needed, 0 once not, 2 on a bad argument', async () => {
    const u = await userBeforeRotation('command');
    const command = fileURLToPath(new URL('./rewrap.js', import.meta.url));
    const env = {
      PATH: process.env.PATH,
      NODE_ENV: 'test',
      NATS_URL: server.url,
      MFA_ENCRYPTION_KEY: Buffer.alloc(32, 8).toString('hex'),
      MFA_PREVIOUS_ENCRYPTION_KEYS: Buffer.alloc(32, 7).toString('base64'),
    };
    const exec = (args: string[], extra: Record<string, string | undefined> = {}) =>
      promisify(execFile)(process.execPath, [command, ...args], { env: { ...env, ...extra } }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
    // No service answers: nothing confirms the tool's key (it could be mistyped), so nothing moves
    // unless the operator says none runs; the development key never writes.
    const unconfirmed = await exec([]);
    assert.equal(unconfirmed.code, 4);
    assert.match(unconfirmed.stderr, /no running service answered.*nothing was written/);
    const development = await exec(['--no-running-services'], { MFA_ENCRYPTION_KEY: undefined });
    assert.equal(development.code, 4);
    assert.match(development.stderr, /MFA_ENCRYPTION_KEY is not set.*nothing was written/);
    assert.ok((await rewrapPlan(u.tenantId, u.userId)).previous.length === 1, 'the key is still under the old tag');
    // A service still on the old key (the rotation not done) reads keys under the old tags: nothing moves.
    const stale = new KeyringCheck(nats.nc, { keyring: oldRing, service: 'auth-challenge', instance: 'stale', log: createLogger('test', { level: 'error' }) });
    await stale.start();
    const refused = await exec([]);
    stale.stop();
    assert.equal(refused.code, 4);
    assert.match(refused.stderr, new RegExp(`auth-challenge has ${oldRing.kid}.*nothing was written`));
    assert.ok((await rewrapPlan(u.tenantId, u.userId)).previous.length === 1, 'the key is still under the old tag');

    // The services on the new key, the old one listed: the tool runs.
    const current = new KeyringCheck(nats.nc, { keyring: rotated, service: 'user-settings', instance: 'new', log: createLogger('test', { level: 'error' }) });
    await current.start();
    const dry = await exec(['--dry-run']);
    assert.equal(dry.code, 3, dry.stderr);
    assert.match(dry.stdout, new RegExp(`${oldRing.kid}: still needed`));
    const done = await exec(['--json']);
    assert.equal(done.code, 0, done.stderr);
    const report = JSON.parse(done.stdout) as { dataKeys: { moved: number }; removable: string[] };
    assert.deepEqual([report.dataKeys.moved, report.removable], [1, [oldRing.kid]]);
    for (const out of [dry.stdout, dry.stderr, done.stdout, done.stderr]) {
      for (const secret of [env.MFA_ENCRYPTION_KEY, env.MFA_PREVIOUS_ENCRYPTION_KEYS]) assert.ok(!out.includes(secret), 'no key is printed');
    }
    assert.ok(await new UserDataKeys(nats, newOnly).get(u.tenantId, u.userId, 1));
    assert.equal((await exec(['--bogus'])).code, 2);
    current.stop();
  });

  itWith({ real: ['nats'] }, 'counts what still needs the old key: secrets in users’ state and the inventory, keys nobody owns, the log', async () => {
    const u = await userBeforeRotation('secrets');
    const { tenantId, userId } = u;
    const base = { tenantId, aggregateId: userId, now };
    const totp = (tokenId: string) =>
      createEvent('TotpTokenEnrolled', 1, {
        ...base,
        data: { tokenId, label: 'phone', sealedSecret: seal(oldRing, Buffer.alloc(20, 1), SealContext.totpSecret(tenantId, userId, tokenId)), digits: 6, period: 30, algorithm: 'SHA1' },
      });
    await append(tenantId, userId, totp('t-kept'));
    await append(tenantId, userId, totp('t-deleted'));
    await append(tenantId, userId, createEvent('TotpTokenDeleted', 1, { ...base, data: { tokenId: 't-deleted' } }));
    await append(tenantId, userId, createEvent('UserPinSet', 1, { ...base, data: { sealedHash: seal(oldRing, Buffer.from('scrypt$x'), SealContext.pinHash(tenantId, userId)) } }));
    await append(
      tenantId,
      userId,
      createEvent('PushDeviceActivated', 1, {
        ...base,
        data: { deviceId: 'd1', name: 'phone', platform: 'android', algorithm: 'Ed25519', publicKey: 'pk', sealedPushToken: seal(oldRing, Buffer.from('fcm'), SealContext.pushToken(tenantId, userId, 'd1')) },
      }),
    );
    await events.publish(
      EventSubjects.oathToken(tenantId, 'SN1'),
      createEvent('OathTokenImported', 1, {
        tenantId,
        aggregateId: 'SN1',
        now,
        data: { tokenId: 'h1', serialNumber: 'SN1', sealedSecret: seal(oldRing, Buffer.alloc(20, 2), SealContext.hardwareSecret(tenantId, 'h1')), digits: 6, period: 30, algorithm: 'SHA1', jobId: 'j1' },
      }),
    );
    // A key whose user has no event (a registration whose append failed): nothing can say whose it is.
    await new UserDataKeys(nats, oldRing).getOrCreate(tenantId, uniqueUser('orphan'));

    // Import jobs asked for before the rotation: one with a file the service sealed, one with sealed PSKC keys, one done.
    const jobs = await new Kvm(nats.js).create(IMPORT_JOBS_BUCKET);
    const files = await new Objm(nats.js).create(IMPORTS_BUCKET);
    const job = (jobId: string, state: string, extra: object) =>
      jobs.put(`${tenantId}.${jobId}`, JSON.stringify({ jobId, tenantId, format: 'pskc', replace: false, state, total: 0, processed: 0, imported: 0, failed: 0, errorChunks: [], createdAt: now.toISOString(), updatedAt: now.toISOString(), ...extra }));
    await files.putBlob({ name: `${tenantId}/jobs/j-file/source` }, Buffer.from(seal(oldRing, Buffer.from('serial,secret'), SealContext.importFile(tenantId, 'j-file', 'file'))));
    await job('j-file', 'running', { source: { object: `${tenantId}/jobs/j-file/source`, sealed: true } });
    await job('j-keys', 'queued', { source: { object: `${tenantId}/upload.xml`, sealed: false }, sealedKeys: seal(oldRing, Buffer.from('{}'), SealContext.importFile(tenantId, 'j-keys', 'keys')) });
    await job('j-done', 'completed', { source: { object: `${tenantId}/jobs/j-done/source`, sealed: true } });

    const report = await tool().run();
    assert.deepEqual(report.needs[oldRing.kid], { dataKeys: 1, totpSecrets: 1, pinHashes: 1, pushTokens: 1, inventorySecrets: 1, importJobs: 2 });
    assert.equal(report.dataKeys.moved, 1, 'the user’s own key moved');
    assert.deepEqual(report.eventLog, { [oldRing.kid]: 5 }, 'two TOTP secrets, a PIN, a push token, a hardware secret in the log');
    assert.deepEqual(report.removable, []);
    assert.match(formatReport(report), new RegExp(`${oldRing.kid}: still needed`));
    // The report names keys by their public id only.
    assert.ok(!JSON.stringify(report).includes(Buffer.alloc(32, 7).toString('base64')));
  });
});
