import { after, before, beforeEach, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { AuditQueryRequest, EventSubjects, IMPORTS_BUCKET, parseEvent, Streams, type AnyEvent, type EventOf } from '@mfa/contracts';
import { generateDataKey, keyringFromMasterKey, open, seal, SealContext, totp, userTag, type Keyring } from '@mfa/crypto';
import { connectNats, createEvent, ensureStream, EventPublisher, readAggregate, type Delivery, type NatsClients } from '@mfa/messaging';
import { RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { KeyringCheck, openPersonalData, sealPersonalData, UserDataKeys } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, testEnv, uniqueTenant, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { Redis } from 'ioredis';
import { Kvm } from '@nats-io/kv';
import { Objm } from '@nats-io/obj';
import { AppPasswordHasher } from './adapters/app-password-hasher.js';
import { EventStore } from './adapters/event-store.js';
import { IMPORT_JOBS_BUCKET } from './adapters/import-jobs.js';
import { AggregateLoader } from './application/aggregate-loader.js';
import { MasterKeyRewrap } from './application/master-key-rewrap.js';
import { UserEventCodec } from './application/user-events.codec.js';
import { UserProjector } from './application/user-projector.js';
import { userSnapshot } from './application/user-snapshot.js';
import { oathTokenDecider } from './domain/oath-token.js';
import { activationCandidate, decideUser, evolveUser } from './domain/user.js';
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
    await ensureStream(nats.jsm, Streams.audit);
    events = new EventPublisher(nats.js);
  });

  beforeEach(async () => {
    await nats.jsm.streams.purge(Streams.userKeys.name);
    await nats.jsm.streams.purge(Streams.userSettings.name);
    await nats.jsm.streams.purge(Streams.audit.name);
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

  /** The admin audit trail as MFA_AUDIT holds it (reporting projects it for reports.audit.query): each record's subject and event, in order. */
  async function auditTrail(): Promise<Array<{ subject: string; event: EventOf<'AdminActionRecorded'> }>> {
    const { state } = await nats.jsm.streams.info(Streams.audit.name);
    const trail = [];
    for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
      const msg = await nats.jsm.streams.getMessage(Streams.audit.name, { seq });
      if (!msg) continue;
      const event = parseEvent(msg.json());
      assert.equal(event.type, 'AdminActionRecorded');
      trail.push({ subject: msg.subject, event: event as EventOf<'AdminActionRecorded'> });
    }
    return trail;
  }
  /** What reports.audit.query lists of a record: the tenant, and the fields its filters match. */
  const recorded = (r: { subject: string; event: EventOf<'AdminActionRecorded'> }) => ({ on: r.subject, tenantId: r.event.tenantId, aggregateId: r.event.aggregateId, ...r.event.data });

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
    // The refused runs and the dry run recorded nothing; the run that moved the key, one record (no operator given).
    assert.deepEqual((await auditTrail()).map(recorded), [{ on: EventSubjects.audit(u.tenantId), tenantId: u.tenantId, aggregateId: u.tenantId, subject: 'mfa.tool.rewrap', clientId: 'rewrap.js', outcome: 'ok' }]);
    assert.equal((await exec(['--bogus'])).code, 2);
    const badOperator = await exec(['--operator', 'ops\u202e@example.com']);
    assert.equal(badOperator.code, 2);
    assert.match(badOperator.stderr, /--operator must not contain bidirectional/);
    assert.equal((await exec(['--operator'])).code, 2, 'the flag takes a value');
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

    // Before the run (a dry run): the secrets the user's state and the inventory use are under the old key.
    const dry = await tool(rotated, true).run();
    assert.deepEqual(dry.needs[oldRing.kid], { dataKeys: 2, totpSecrets: 1, pinHashes: 1, pushTokens: 1, inventorySecrets: 1, importJobs: 2 });
    assert.deepEqual(dry.resealed, { users: 1, totpSecrets: 1, pinHashes: 1, pushTokens: 1, inventorySecrets: 1, raced: 0, failed: 0 }, 'what the run would seal again');
    assert.deepEqual(dry.eventLog, { [oldRing.kid]: 5 }, 'two TOTP secrets, a PIN, a push token, a hardware secret in the log');

    const report = await tool().run();
    // Those in use are sealed again; what still needs the old key is what nothing can say whose it is, and the jobs.
    assert.deepEqual(report.needs[oldRing.kid], { dataKeys: 1, totpSecrets: 0, pinHashes: 0, pushTokens: 0, inventorySecrets: 0, importJobs: 2 });
    assert.equal(report.dataKeys.moved, 1, 'the user’s own key moved');
    assert.deepEqual(report.eventLog, { [oldRing.kid]: 5, [rotated.kid]: 4 }, 'the history stays; the token in use, the PIN, the push token and the hardware secret again under the new key');
    assert.deepEqual(report.removable, []);
    assert.match(formatReport(report), new RegExp(`${oldRing.kid}: still needed`));
    // The report names keys by their public id only.
    assert.ok(!JSON.stringify(report).includes(Buffer.alloc(32, 7).toString('base64')));
  });
  /**
   * A user with an app token (active), a hardware token given to them (pending), a voice PIN and a
   * push device, and a token of the inventory, every secret sealed under the old key.
   */
  async function secretsBeforeRotation(prefix: string) {
    const u = await userBeforeRotation(prefix);
    const { tenantId, userId } = u;
    const base = { tenantId, aggregateId: userId, now };
    const appSecret = Buffer.alloc(20, 1);
    const hardSecret = Buffer.alloc(20, 3);
    const invSecret = Buffer.alloc(20, 2);
    const pinHash = await new AppPasswordHasher().hash('4711');
    await append(tenantId, userId, createEvent('TotpTokenEnrolled', 1, { ...base, data: { tokenId: 't1', label: 'phone', sealedSecret: seal(oldRing, appSecret, SealContext.totpSecret(tenantId, userId, 't1')), digits: 6, period: 30, algorithm: 'SHA1' } }));
    await append(tenantId, userId, createEvent('TotpTokenActivated', 1, { ...base, data: { tokenId: 't1', step: 1 } }));
    await append(tenantId, userId, createEvent('HardwareTokenAssigned', 1, { ...base, data: { tokenId: 'hw1', serialNumber: 'SN-HELD', sealedSecret: seal(oldRing, hardSecret, SealContext.hardwareSecret(tenantId, 'hw1')), digits: 6, period: 30, algorithm: 'SHA1' } }));
    await append(tenantId, userId, createEvent('UserPinSet', 1, { ...base, data: { sealedHash: seal(oldRing, Buffer.from(pinHash), SealContext.pinHash(tenantId, userId)) } }));
    await append(tenantId, userId, createEvent('PushDeviceActivated', 1, { ...base, data: { deviceId: 'd1', name: 'phone', platform: 'android', algorithm: 'Ed25519', publicKey: 'pk', sealedPushToken: seal(oldRing, Buffer.from('fcm-token'), SealContext.pushToken(tenantId, userId, 'd1')) } }));
    await events.publish(
      EventSubjects.oathToken(tenantId, 'SN-INV'),
      createEvent('OathTokenImported', 1, { tenantId, aggregateId: 'SN-INV', now, data: { tokenId: 'inv1', serialNumber: 'SN-INV', sealedSecret: seal(oldRing, invSecret, SealContext.hardwareSecret(tenantId, 'inv1')), digits: 6, period: 30, algorithm: 'SHA1', jobId: 'j1' } }),
    );
    return { ...u, appSecret, hardSecret, invSecret };
  }

  /** The user as user-settings loads them, and the projection it writes, with `keyring`. */
  async function loadUser(keyring: Keyring, tenantId: string, userId: string) {
    const keys = new UserDataKeys(nats, keyring);
    const loader = new AggregateLoader(new EventStore(nats.jsm, events, Streams.userSettings.name), new UserEventCodec(keys), keys, undefined);
    const loaded = await loader.loadUser({ subject: EventSubjects.user(tenantId, userId), tenantId, aggregateId: userId });
    const key = await keys.getOrCreate(tenantId, userId);
    return { ...loaded, projected: userSnapshot(keyring, tenantId, userId, loaded.state, loaded.lastSeq, key) };
  }

  const settingsLastSeq = async () => (await nats.jsm.streams.info(Streams.userSettings.name)).state.last_seq;

  itWith({ real: ['nats'] }, 'seals the secrets in use again under the new key: with the old key gone TOTP, the PIN, push and the inventory token work; a second run changes nothing', async () => {
    const u = await secretsBeforeRotation('reseal');
    const { tenantId, userId } = u;

    const command = fileURLToPath(new URL('./rewrap.js', import.meta.url));
    const env = { PATH: process.env.PATH, NODE_ENV: 'test', NATS_URL: server.url, MFA_ENCRYPTION_KEY: Buffer.alloc(32, 8).toString('hex'), MFA_PREVIOUS_ENCRYPTION_KEYS: Buffer.alloc(32, 7).toString('base64') };
    const service = new KeyringCheck(nats.nc, { keyring: rotated, service: 'user-settings', instance: 'reseal', log: createLogger('test', { level: 'error' }) });
    await service.start();
    const run = await promisify(execFile)(process.execPath, [command, '--json', '--operator', 'ops@example.com'], { env }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    service.stop();
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const report = JSON.parse(run.stdout) as { resealed: object; needs: Record<string, object>; removable: string[]; audit: object };
    assert.deepEqual(report.resealed, { users: 1, totpSecrets: 2, pinHashes: 1, pushTokens: 1, inventorySecrets: 1, raced: 0, failed: 0 });
    // One record for the tenant (its inventory token and its user: one run), naming the operator.
    assert.deepEqual(report.audit, { recorded: 1, failed: 0 });
    assert.deepEqual((await auditTrail()).map(recorded), [
      { on: EventSubjects.audit(tenantId), tenantId, aggregateId: tenantId, subject: 'mfa.tool.rewrap', clientId: 'rewrap.js', operator: { sub: 'ops@example.com' }, outcome: 'ok' },
    ]);
    assert.deepEqual(report.needs[oldRing.kid], { dataKeys: 0, totpSecrets: 0, pinHashes: 0, pushTokens: 0, inventorySecrets: 0, importJobs: 0 });
    assert.deepEqual(report.removable, [oldRing.kid]);

    // The old key removed: the user loads, and the projection opens the active token's secret.
    const loaded = await loadUser(newOnly, tenantId, userId);
    const at = now.getTime();
    assert.deepEqual(loaded.projected.totpTokens?.map((t) => [t.tokenId, Buffer.from(t.secret).equals(u.appSecret)]), [['t1', true]], 'TOTP verifies with the secret as it was');
    // The hardware token the user holds activates by the code it shows.
    const held = activationCandidate(loaded.state, 'hw1', now);
    const heldSecret = open(newOnly, held.sealedSecret, SealContext.hardwareSecret(tenantId, 'hw1'));
    assert.equal(decideUser({ type: 'ActivateTotpToken', data: { tokenId: 'hw1', code: totp(u.hardSecret, at), secret: heldSecret } }, loaded.state, now)[0]?.type, 'TotpTokenActivated');
    // The PIN checks as user-settings checks it.
    const hash = open(newOnly, loaded.state.sealedPinHash!, SealContext.pinHash(tenantId, userId)).toString('utf8');
    assert.equal(await new AppPasswordHasher().matchIndex('4711', [hash]), 0);
    // The push token the projection writes for dispatch opens.
    const device = loaded.projected.devices?.[0]?.device;
    assert.equal(open(newOnly, device!.sealedPushToken!, SealContext.pushToken(tenantId, userId, 'd1')).toString('utf8'), 'fcm-token');
    // The inventory's token, given to the user, activates.
    let token = oathTokenDecider.initialState();
    for (const stored of (await readAggregate(nats.jsm, Streams.userSettings.name, EventSubjects.oathToken(tenantId, 'SN-INV'), createLogger('test', { level: 'error' }))).events) {
      if (oathTokenDecider.accepts(stored.event)) token = oathTokenDecider.evolve(token, stored.event);
    }
    const assign = { tokenId: token.tokenId!, serialNumber: token.serialNumber!, sealedSecret: token.sealedSecret!, digits: token.digits!, period: token.period!, algorithm: token.algorithm! };
    const given = decideUser({ type: 'AssignHardwareToken', data: assign }, loaded.state, now).reduce(evolveUser, loaded.state);
    const invSecret = open(newOnly, activationCandidate(given, 'inv1', now).sealedSecret, SealContext.hardwareSecret(tenantId, 'inv1'));
    assert.equal(decideUser({ type: 'ActivateTotpToken', data: { tokenId: 'inv1', code: totp(u.invSecret, at), secret: invSecret } }, given, now)[0]?.type, 'TotpTokenActivated');

    // Run again: nothing is written.
    const before = await settingsLastSeq();
    const again = await tool().run();
    assert.equal(await settingsLastSeq(), before, 'a second run appends nothing');
    assert.deepEqual(again.resealed, { users: 0, totpSecrets: 0, pinHashes: 0, pushTokens: 0, inventorySecrets: 0, raced: 0, failed: 0 });
    assert.deepEqual(again.audit, { recorded: 0, failed: 0 });
    assert.equal((await auditTrail()).length, 1, 'and records nothing');
    assert.deepEqual(again.removable, [oldRing.kid]);
  });

  itWith({ real: ['nats'] }, 'a change of the user between the read and the reseal wins: the reseal is refused (raced), the next run seals the rest', async () => {
    const u = await secretsBeforeRotation('reseal-race');
    const { tenantId, userId } = u;
    const rewrap = tool();
    const plan = await rewrap.inspectSecrets(tenantId, userId);
    assert.deepEqual([plan.command.tokens?.length, !!plan.command.pinHash, plan.command.devices?.length], [2, true, 1]);
    // The user sets another PIN meanwhile (a service already on the new key).
    const newHash = await new AppPasswordHasher().hash('0815');
    await append(tenantId, userId, createEvent('UserPinSet', 1, { tenantId, aggregateId: userId, now, data: { sealedHash: seal(rotated, Buffer.from(newHash), SealContext.pinHash(tenantId, userId)) } }));
    const last = await settingsLastSeq();

    const outcome = await rewrap.reseal(plan);
    assert.deepEqual([outcome.raced, outcome.appended], [true, false]);
    assert.equal(await settingsLastSeq(), last, 'nothing appended over the change');

    // A run counts a race the same way; here none is left: the rest is sealed again, the new PIN kept.
    const report = await tool().run();
    assert.deepEqual(report.resealed, { users: 1, totpSecrets: 2, pinHashes: 0, pushTokens: 1, inventorySecrets: 1, raced: 0, failed: 0 });
    assert.deepEqual(report.removable, [oldRing.kid]);
    const loaded = await loadUser(newOnly, tenantId, userId);
    const hash = open(newOnly, loaded.state.sealedPinHash!, SealContext.pinHash(tenantId, userId)).toString('utf8');
    assert.equal(await new AppPasswordHasher().matchIndex('0815', [hash]), 0, 'the PIN set meanwhile stays');
  });
  itWith({ real: ['nats'] }, 'records one AdminActionRecorded per tenant it changed, in that tenant’s audit trail: none for a tenant it left alone, a dry run or a run with nothing to do', async () => {
    // A tenant whose users' data keys move (two users: still one record), one whose secrets are sealed
    // again, one with only an inventory token to seal again, and one registered after the rotation.
    const keys = await userBeforeRotation('audit-keys');
    const second = uniqueUser('audit-keys-second');
    await registered(keys.tenantId, second);
    await new UserDataKeys(nats, oldRing).getOrCreate(keys.tenantId, second);
    const secrets = await secretsBeforeRotation('audit-secrets');
    const inventory = uniqueTenant('rw');
    await events.publish(
      EventSubjects.oathToken(inventory, 'SN-ONLY'),
      createEvent('OathTokenImported', 1, {
        tenantId: inventory,
        aggregateId: 'SN-ONLY',
        now,
        data: { tokenId: 'only1', serialNumber: 'SN-ONLY', sealedSecret: seal(oldRing, Buffer.alloc(20, 4), SealContext.hardwareSecret(inventory, 'only1')), digits: 6, period: 30, algorithm: 'SHA1', jobId: 'j1' },
      }),
    );
    const untouched = uniqueTenant('rw');
    const newcomer = uniqueUser('audit-untouched');
    await registered(untouched, newcomer);
    await new UserDataKeys(nats, rotated).getOrCreate(untouched, newcomer);

    const dry = await tool(rotated, true).run();
    assert.equal(dry.dataKeys.moved, 3, 'the dry run sees what there is to do');
    assert.deepEqual(dry.audit, { recorded: 0, failed: 0 });
    assert.deepEqual(await auditTrail(), [], 'a dry run records nothing');

    const report = await new MasterKeyRewrap(nats, rotated, { operator: { sub: 'ops@example.com' } }).run();
    assert.deepEqual(report.audit, { recorded: 3, failed: 0 });
    assert.match(formatReport(report), /Audit trail: 3 records \(mfa\.tool\.rewrap\), one per tenant whose data was changed\./);
    const expected = (tenantId: string) => ({ on: EventSubjects.audit(tenantId), tenantId, aggregateId: tenantId, subject: 'mfa.tool.rewrap', clientId: 'rewrap.js', operator: { sub: 'ops@example.com' }, outcome: 'ok' });
    const trail = await auditTrail();
    const byTenant = (a: { tenantId: string }, b: { tenantId: string }) => a.tenantId.localeCompare(b.tenantId);
    assert.deepEqual(trail.map(recorded).sort(byTenant), [keys.tenantId, secrets.tenantId, inventory].map(expected).sort(byTenant));
    assert.ok(!trail.some((r) => r.event.tenantId === untouched), 'nothing for the tenant whose data stayed as it was');
    for (const r of trail) assert.equal(r.event.data.userId, undefined, 'one record for the run, not per user');
    // reports.audit.query takes the record's subject, client and operator as filters.
    const query = AuditQueryRequest.safeParse({ tenantId: keys.tenantId, subject: trail[0]!.event.data.subject, clientId: trail[0]!.event.data.clientId, operator: 'ops@example.com' });
    assert.ok(query.success, JSON.stringify(query.error?.issues));

    const again = await tool().run();
    assert.deepEqual([again.dataKeys.moved, again.resealed.users, again.resealed.inventorySecrets], [0, 0, 0]);
    assert.deepEqual(again.audit, { recorded: 0, failed: 0 });
    assert.equal((await auditTrail()).length, 3, 'a run with nothing to do records nothing');
  });

  itWith({ real: ['nats'] }, 'a run that fails records its error code for the tenants it changed before failing; the run that finishes the work records ok', async () => {
    const u = await secretsBeforeRotation('audit-failure');
    // The first run moves the user's key and seals the inventory token again, then fails at the user's secrets.
    class FailingAtSecrets extends MasterKeyRewrap {
      override inspectSecrets(): never {
        throw new Error('lost the connection');
      }
    }
    await assert.rejects(new FailingAtSecrets(nats, rotated, {}).run(), /lost the connection/);
    assert.ok(await new UserDataKeys(nats, newOnly).get(u.tenantId, u.userId, 1), 'the key was moved before the failure');
    const failed = (await auditTrail()).map(recorded);
    assert.deepEqual(failed, [{ on: EventSubjects.audit(u.tenantId), tenantId: u.tenantId, aggregateId: u.tenantId, subject: 'mfa.tool.rewrap', clientId: 'rewrap.js', outcome: 'internal' }]);

    const report = await tool().run();
    assert.equal(report.resealed.users, 1, 'the next run seals the user’s secrets again');
    assert.deepEqual((await auditTrail()).map((r) => r.event.data.outcome), ['internal', 'ok']);
  });

  itWith({ real: ['nats', 'redis'] }, 'the projector takes SecretsResealed: the Redis projection gets the push token sealed again, which opens without the old key', async () => {
    const u = await secretsBeforeRotation('reseal-projection');
    const { tenantId, userId } = u;
    // A database of its own: the writer's slot markers must not tell the shared one anything.
    const redis = new Redis(testEnv.redisUrl, { db: 13 });
    try {
      const writer = new UserProjectionWriter(redis, rotated);
      await writer.markStepsRestored();
      const projector = new UserProjector(new EventStore(nats.jsm, events, Streams.userSettings.name), writer, rotated, new UserDataKeys(nats, rotated));
      const devicesKey = RedisKeys.devices(writer.tagOf(tenantId, userId));
      const pushToken = async () => (JSON.parse((await redis.hget(devicesKey, 'd1'))!) as { sealedPushToken: string }).sealedPushToken;
      await projector.rebuild(tenantId, userId);

      const before = await pushToken();
      assert.throws(() => open(newOnly, before, SealContext.pushToken(tenantId, userId, 'd1')), 'before the run, only the old key opens it');
      await tool().run();
      // The consumer's delivery of the new event, as the projector's durable consumer hands it over.
      const last = (await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.user(tenantId, userId) }))!;
      const event = parseEvent(last.json());
      assert.equal(event.type, 'SecretsResealed');
      await projector.handle([{ event, msg: { subject: last.subject, info: { streamSequence: last.seq } } } as unknown as Delivery]);
      const after = await pushToken();
      assert.notEqual(after, before, 'the projection holds the push token sealed again');
      assert.equal(open(newOnly, after, SealContext.pushToken(tenantId, userId, 'd1')).toString('utf8'), 'fcm-token', 'dispatch opens it without the old key');
      assert.equal(await redis.hget(RedisKeys.user(writer.tagOf(tenantId, userId)), 'seq'), String(last.seq));
    } finally {
      const tag = new UserProjectionWriter(redis, rotated).tagOf(tenantId, userId);
      await redis.del(RedisKeys.user(tag), RedisKeys.totp(tag), RedisKeys.totpSteps(tag), RedisKeys.devices(tag), RedisKeys.userIndex(tenantId), RedisKeys.userIndexTerms(tenantId));
      await redis.quit();
    }
  });
});
