import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams, Subjects } from '@mfa/contracts';
import { dataKeyGeneration, generateDataKey, keyringFromMasterKey, loadKeyring, userTag } from '@mfa/crypto';
import { connectClient, createEvent, readOnce, requestJson } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import {
  eventually,
  itWith,
  repoRoot,
  startNatsServer,
  startRedisServer,
  startStack,
  testEnv,
  uniqueTenant,
  type NatsServerProcess,
  type RedisServerProcess,
  type Stack,
} from '@mfa/testing';

type Reply = Record<string, unknown> & { status?: string; error?: { code: string; message: string } };

/**
 * Backup and restore of the event log (docs/operations.md, "Backup and restore"): a copy of a
 * stopped nats-server's JetStream store is the backup; after more work the copy is put back,
 * Redis emptied, and the services started again. What the docs claim is checked: the services
 * come back and rebuild Redis from the restored log, what happened after the backup is gone
 * (a registration, a client's revocation) — and an erasure made after the backup is undone by the
 * restore (the backup still holds the data key) until it is applied again, which the report's
 * `erased_users` (kept in Postgres, outside the restored log) makes exact. MFA_USER_KEYS is restored
 * from a later copy than the log: an erasure made between the two copies is in the key store only,
 * and the same tool completes it in the log.
 */
describe('backup and restore of the JetStream store', () => {
  const { keyring } = loadKeyring(process.env);
  const platformKey = randomBytes(36).toString('base64url');
  const tenantId = uniqueTenant('backup');
  const database = `mfa_backup_${randomBytes(4).toString('hex')}`;
  const databaseUrl = testEnv.databaseUrl.replace(/\/[^/]+$/, `/${database}`);
  const run = randomBytes(3).toString('hex');
  const person = (name: string, n: number) => ({
    userId: `${name}.${run}@fabrikam.example`,
    displayName: `${name} ${run}`,
    email: `${name}.${run}@mail.example`,
    phoneNumber: `+46701${run.replace(/\D/g, '7').slice(0, 3).padEnd(3, '0')}${n}00`,
  });
  // A: kept throughout. E: erased before the backup. R: erased and registered again before it.
  // B: erased after it. C: registered after it. K: erased after it, before the later copy of
  // MFA_USER_KEYS that the restore takes (the key store newer than the log).
  const A = person('anna', 1);
  const B = person('bertil', 2);
  const C = person('cecilia', 3);
  const E = person('erik', 4);
  const R = person('rut', 5);
  const K = person('karin', 6);
  const services = ['user-settings', 'auth-challenge', 'fraud', 'reporting'] as const;
  let nats: NatsServerProcess;
  let redisServer: RedisServerProcess;
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  let redis: Redis;
  let pool: pg.Pool;
  let backupDir = '';
  /** The later copy of MFA_USER_KEYS alone. */
  let laterKeysDir = '';
  let adminKey = '';
  let idpKey = '';
  let laterRevoked = { clientId: '', apiKey: '' };
  let backupAt = new Date();

  const ask = (subject: string, body: unknown, key = adminKey) =>
    requestJson<Reply>(nc!, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${key}` } });
  const pseudonymOf = (userId: string) => `erased:${userTag(keyring, tenantId, userId).slice(0, 16)}`;
  /** Runs an operator's tool as the operator does: a process with reporting's environment. */
  const runTool = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        args,
        { cwd: repoRoot, env: { ...process.env, NODE_ENV: 'test', MFA_AUTH: 'required', MFA_PLATFORM_API_KEY: platformKey, NATS_URL: nats.url, DATABASE_URL: databaseUrl } },
        (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
      );
    });

  async function up(): Promise<void> {
    stack = await startStack({
      services,
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        NATS_URL: nats.url,
        REDIS_URL: redisServer.url,
        DATABASE_URL: databaseUrl,
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: nats.url, name: 'e2e-backup' });
  }

  /** Stops the services, then nats-server (SIGTERM: it flushes its store and exits). */
  async function down(): Promise<void> {
    await nc?.drain();
    nc = undefined;
    await stack?.stop();
    stack = undefined;
    await nats.kill('SIGTERM');
  }

  /** A stream's directory in a copy of the JetStream store (nats-server's global account). */
  const streamDir = (store: string, stream: string) => join(store, 'jetstream', '$G', 'streams', stream);

  /**
   * A backup: with everything stopped, the store is copied to `dir` (only the directories of
   * `streams` when named), then everything starts again. Resolves to the moment it was taken.
   */
  async function backUp(dir: string, streams?: string[]): Promise<Date> {
    await down();
    if (!streams) await cp(nats.storeDir, dir, { recursive: true });
    for (const stream of streams ?? []) await cp(streamDir(nats.storeDir, stream), streamDir(dir, stream), { recursive: true });
    const at = new Date();
    await nats.restart();
    await up();
    return at;
  }

  /**
   * A restore: with everything stopped, the store is replaced by the copy in `dir`, and the
   * directories of `later.streams` by those of a later copy; then everything starts again.
   */
  async function restore(dir: string, later?: { dir: string; streams: string[] }): Promise<void> {
    await down();
    await rm(nats.storeDir, { recursive: true, force: true });
    await cp(dir, nats.storeDir, { recursive: true });
    for (const stream of later?.streams ?? []) {
      await rm(streamDir(nats.storeDir, stream), { recursive: true, force: true });
      await cp(streamDir(later!.dir, stream), streamDir(nats.storeDir, stream), { recursive: true });
    }
    await nats.restart();
    await up();
  }

  const registered = async (user: typeof A) => {
    const { userId, ...profile } = user;
    const reply = await ask(Subjects.usersRegister, { tenantId, userId, ...profile, language: 'sv-SE' }, idpKey);
    assert.equal(reply.error, undefined, JSON.stringify(reply));
  };
  const getUser = (user: typeof A) => ask(Subjects.usersGet, { tenantId, userId: user.userId }, idpKey);
  const erasedInReport = (user: typeof A) =>
    eventually(async () => {
      const { rowCount } = await pool.query('SELECT 1 FROM erased_users WHERE tenant_id = $1 AND pseudonym = $2', [tenantId, pseudonymOf(user.userId)]);
      return rowCount ? true : undefined;
    }, 20_000, `the erasure of ${user.userId} in the report`);
  /** The user's sign-ins in the report's table (a pending one has its row, which reports.signins.query shows once it ends). */
  const signinsOf = async (user: typeof A) =>
    (await pool.query('SELECT challenge_id FROM signins WHERE tenant_id = $1 AND user_id = $2 AND context_seq IS NOT NULL', [tenantId, user.userId])).rows;
  /** The user's events in the log, in order (type, and what a UserErased and a UserRegistered carry unsealed). */
  const eventsOf = async (user: typeof A) => {
    const events: Array<{ type: string; data: { gen?: number; pii?: string } }> = [];
    const jsm = await jetstreamManager(nc!);
    await readOnce(jsm.jetstream(), Streams.userSettings.name, EventSubjects.user(tenantId, user.userId), { policy: 'all' }, (msg) => {
      events.push(msg.json());
    });
    return events;
  };
  /** The user's record in MFA_USER_KEYS (one per user): a data key, or an erasure's tombstone. */
  const keyRecordOf = async (user: typeof A) => {
    const jsm = await jetstreamManager(nc!);
    const record = await jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: EventSubjects.userDataKey(userTag(keyring, tenantId, user.userId)) });
    return record!.json<{ gen: number; wrappedKey?: string; erasedAt?: string }>();
  };
  /** The erasure of the user the report records (erased_users): its key generation and time. */
  const reportedErasure = async (user: typeof A) =>
    (await pool.query<{ gen: number; erased_at: Date }>('SELECT gen, erased_at FROM erased_users WHERE tenant_id = $1 AND pseudonym = $2', [tenantId, pseudonymOf(user.userId)])).rows[0];

  before(async () => {
    nats = await startNatsServer();
    redisServer = await startRedisServer();
    redis = new Redis(redisServer.url);
    pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    backupDir = await mkdtemp(join(tmpdir(), 'mfa-backup-'));
    laterKeysDir = await mkdtemp(join(tmpdir(), 'mfa-backup-keys-'));
    await up();
  });

  after(async () => {
    await nc?.drain().catch(() => undefined);
    await stack?.stop();
    await nats?.stop();
    await redisServer?.stop();
    redis?.disconnect();
    await pool?.end();
    if (backupDir) await rm(backupDir, { recursive: true, force: true });
    if (laterKeysDir) await rm(laterKeysDir, { recursive: true, force: true });
    const admin = new pg.Client({ connectionString: testEnv.databaseUrl.replace(/\/[^/]+$/, '/postgres') });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'before the backup: users registered, one erased, a sign-in reported; the backup is a copy of the stopped store', async () => {
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} }, platformKey)).error, undefined);
    const client = async (name: string, scopes: string[]) => (await ask(Subjects.clientsCreate, { tenantId, name, scopes }, platformKey)) as { apiKey: string; clientId: string };
    adminKey = (await client('admin', ['admin'])).apiKey;
    idpKey = (await client('idp', ['challenges', 'users', 'reports'])).apiKey;
    laterRevoked = await client('revoked after the backup', ['users']);
    for (const user of [A, B, E, R, K]) await registered(user);
    for (const user of [E, R]) assert.deepEqual(await ask(Subjects.usersDelete, { tenantId, userId: user.userId }), { userId: user.userId, deleted: true });
    await registered(R);
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: A.userId, method: 'sms' }, idpKey)).status, 'pending');
    await eventually(async () => ((await signinsOf(A)).length === 1 ? true : undefined), 20_000, "A's sign-in in the report");
    await erasedInReport(E);
    await erasedInReport(R);

    backupAt = await backUp(backupDir);
  }, { timeout: 240_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'after the backup: an erasure, a later copy of MFA_USER_KEYS alone; then a registration, an erasure, a revocation and a sign-in', async () => {
    // K's erasure: in the later copy of MFA_USER_KEYS (his key's tombstone), not in the log's backup.
    assert.deepEqual(await ask(Subjects.usersDelete, { tenantId, userId: K.userId }), { userId: K.userId, deleted: true });
    await erasedInReport(K);
    await backUp(laterKeysDir, [Streams.userKeys.name]);

    await registered(C);
    assert.deepEqual(await ask(Subjects.usersDelete, { tenantId, userId: B.userId }), { userId: B.userId, deleted: true });
    assert.equal((await getUser(B)).error?.code, 'not_found');
    assert.equal((await ask(Subjects.clientsRevoke, { tenantId, clientId: laterRevoked.clientId })).error, undefined);
    assert.ok((await ask(Subjects.usersGet, { tenantId, userId: A.userId }, laterRevoked.apiKey)).error, 'the revoked client is refused');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: A.userId, method: 'sms' }, idpKey)).status, 'pending');
    await eventually(async () => ((await signinsOf(A)).length === 2 ? true : undefined), 20_000, "A's second sign-in in the report");
    await erasedInReport(B);
    // The audit trail in Postgres outlives a restore of the log: what to apply again.
    const { rows } = await pool.query<{ subject: string }>('SELECT subject FROM audit_log WHERE tenant_id = $1 AND occurred_at > $2 ORDER BY occurred_at', [tenantId, backupAt]);
    const done = rows.map((r) => r.subject).filter((s) => /(users\.delete|clients\.revoke)$/.test(s));
    assert.deepEqual(done.map((s) => s.replace(/^mfa\.v1\./, '')), ['users.delete', 'users.delete', 'clients.revoke'], JSON.stringify(rows));
  }, { timeout: 240_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'restored: the log is back at the backup, MFA_USER_KEYS at its later copy; Redis, emptied, is rebuilt from it', async () => {
    await restore(backupDir, { dir: laterKeysDir, streams: [Streams.userKeys.name] });
    // Redis still holds the projection of the lost events: C, who is not in the log, signs in.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: C.userId, method: 'sms' }, idpKey)).status, 'pending', 'C is still in the stale Redis');
    await redis.flushall();
    await eventually(async () => ((await redis.exists(RedisKeys.userProjectionMarker)) ? true : undefined), 60_000, 'the projection rebuilt');

    // What was before the backup is there.
    const a = await eventually(async () => {
      const r = await getUser(A);
      return r.error?.code === 'unavailable' ? undefined : r;
    }, 20_000, 'A served');
    assert.deepEqual([a.displayName, a.phoneNumber], [A.displayName, A.phoneNumber]);
    // The report kept what Postgres had: both of A's sign-ins, the one after the backup too.
    assert.equal((await signinsOf(A)).length, 2);
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: A.userId, method: 'sms' }, idpKey)).status, 'pending');
    // A new sign-in after the restore is reported beside them (the restored stream hands its
    // sequence numbers out again; the report's rows are keyed by challenge).
    await eventually(async () => ((await signinsOf(A)).length === 3 ? true : undefined), 20_000, "A's sign-in after the restore in the report");
    assert.equal((await getUser(E)).error?.code, 'not_found', 'erased before the backup: still erased');
    assert.equal((await getUser(R)).displayName, R.displayName, 'registered again before the backup');
    // What came after it is gone: C's registration, the revocation.
    assert.equal((await getUser(C)).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: C.userId, method: 'sms' }, idpKey)).status, 'registration_required');
    assert.equal((await ask(Subjects.usersGet, { tenantId, userId: A.userId }, laterRevoked.apiKey)).error, undefined, 'the revoked client works again');
    // B, erased after the backup, is back with his personal data: the backup held his data key.
    const b = await getUser(B);
    assert.deepEqual([b.displayName, b.email, b.phoneNumber], [B.displayName, B.email, B.phoneNumber]);
    // The report kept B's erasure: a new sign-in of B is shown under his pseudonym.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: B.userId, method: 'sms' }, idpKey)).status, 'pending');
    const { rows } = await eventually(async () => {
      const r = await pool.query<{ user_id: string }>("SELECT user_id FROM signins WHERE tenant_id = $1 AND user_id LIKE 'erased:%'", [tenantId]);
      return r.rowCount ? r : undefined;
    }, 20_000, "B's new sign-in in the report");
    assert.deepEqual(rows.map((r) => r.user_id), [pseudonymOf(B.userId)]);
    // K: the log registers him and misses his erasure; the key store, newer, holds its tombstone
    // and wins (docs/operations.md, "Keys newer than the events").
    assert.deepEqual((await eventsOf(K)).map((e) => e.type), ['UserRegistered']);
    assert.deepEqual(Object.keys(await keyRecordOf(K)).sort(), ['erasedAt', 'gen']);
    assert.equal((await getUser(K)).error?.code, 'not_found');
  }, { timeout: 240_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'reapply-erasures finds the users erased since the backup in erased_users and erases them again', async () => {
    const tool = (...args: string[]) => runTool(['services/reporting/dist/reapply-erasures.js', '--json', ...args]);
    // Dry run: B, and only B, is named (not R, whose erased_users row is of an earlier key
    // generation than the one R was registered again with); nothing is erased.
    const dry = await tool('--dry-run');
    assert.equal(dry.code, 0, dry.stderr);
    type Listed = Array<{ tenantId: string; userId: string; gen: number }>;
    const planned = JSON.parse(dry.stdout) as { users: number; erasedInLog: number; erasedAgain: Listed; keyErasedOnly: Listed; keyErasuresCompleted: Listed };
    assert.deepEqual(planned.erasedAgain.filter((u) => u.tenantId === tenantId), [{ tenantId, userId: B.userId, gen: 1 }]);
    // K, whose erasure only the key store holds, is named with his tombstone's generation.
    assert.deepEqual(planned.keyErasedOnly.filter((u) => u.tenantId === tenantId), [{ tenantId, userId: K.userId, gen: 1 }]);
    assert.deepEqual(planned.keyErasuresCompleted, []);
    assert.ok((await getUser(B)).error === undefined, 'a dry run erases nothing');
    assert.deepEqual((await eventsOf(K)).map((e) => e.type), ['UserRegistered'], 'a dry run completes nothing');

    const ranAt = new Date();
    const done = await tool();
    assert.equal(done.code, 0, done.stderr);
    const report = JSON.parse(done.stdout) as { failed: unknown[]; withoutKey: unknown[]; keyErasedOnly: Listed; keyErasuresCompleted: Listed };
    // K's erasure is completed: counted, recorded in the log at his tombstone's generation, and the
    // report has projected that UserErased (its erasure time is the completion's).
    assert.deepEqual(report.keyErasuresCompleted.filter((u) => u.tenantId === tenantId), [{ tenantId, userId: K.userId, gen: 1 }]);
    assert.deepEqual([report.failed, report.withoutKey, report.keyErasedOnly], [[], [], []]);
    assert.equal((await getUser(B)).error?.code, 'not_found');
    const erasedK = (await eventsOf(K)).map((e) => [e.type, e.data.gen]);
    assert.deepEqual(erasedK, [['UserRegistered', undefined], ['UserErased', 1]]);
    const reported = await eventually(async () => {
      const row = await reportedErasure(K);
      return row && row.erased_at >= ranAt ? row : undefined;
    }, 20_000, 'the completed erasure of K in the report');
    assert.equal(reported.gen, 1);
    assert.deepEqual(Object.keys(await keyRecordOf(K)).sort(), ['erasedAt', 'gen'], 'still a tombstone');
    assert.equal((await getUser(K)).error?.code, 'not_found');
    const jsm = await jetstreamManager(nc!);
    const key = await jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: EventSubjects.userDataKey(userTag(keyring, tenantId, B.userId)) });
    assert.deepEqual(Object.keys(key!.json<object>()).sort(), ['erasedAt', 'gen'], 'the data key is a tombstone again');
    assert.equal((await getUser(A)).error, undefined, 'A is left alone');
    assert.equal((await getUser(R)).error, undefined, 'R is left alone');

    // Once more: the log now erases B, nothing is left to do.
    const again = JSON.parse((await tool('--dry-run')).stdout) as { erasedAgain: Array<{ tenantId: string }>; keyErasedOnly: Array<{ tenantId: string }> };
    assert.deepEqual(again.erasedAgain.filter((u) => u.tenantId === tenantId), []);
    assert.deepEqual(again.keyErasedOnly.filter((u) => u.tenantId === tenantId), [], 'K is erased in the log now');

    // A data key that does not read (wrapped with a master key the keyring lacks) is that user's
    // failure, and the run goes on: the others are still counted.
    const X = `unreadable-${randomBytes(4).toString('hex')}`;
    const registeredX = createEvent('UserRegistered', 1, { tenantId, aggregateId: X, now: new Date(), data: { userId: X } });
    await jsm.jetstream().publish(EventSubjects.user(tenantId, X), JSON.stringify(registeredX));
    const foreign = generateDataKey(keyringFromMasterKey(randomBytes(32)), tenantId, X, 1);
    await jsm.jetstream().publish(EventSubjects.userDataKey(userTag(keyring, tenantId, X)), JSON.stringify({ gen: 1, wrappedKey: foreign.wrapped }));
    const unreadable = await tool('--dry-run');
    assert.equal(unreadable.code, 3, unreadable.stderr);
    const listed = JSON.parse(unreadable.stdout) as { users: number; erasedInLog: number; failed: Array<{ userId: string; error: string }> };
    assert.deepEqual(listed.failed.map((f) => f.userId), [X]);
    assert.match(listed.failed[0]!.error, /^data key unreadable/);
    assert.ok(listed.erasedInLog >= 3, 'the other users are still counted');
  }, { timeout: 60_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'K, whose erasure the tool completed, registers again as a new user; his old personal data does not open', async () => {
    // The same user id, none of the old personal data.
    const K2 = { ...person('karin', 7), userId: K.userId, displayName: `Karin again ${run}`, email: `karin.again.${run}@mail.example` };
    await registered(K2);
    const k = await getUser(K2);
    assert.equal(k.error, undefined, JSON.stringify(k));
    assert.deepEqual([k.displayName, k.email, k.phoneNumber], [K2.displayName, K2.email, K2.phoneNumber]);
    // A new generation: the key store holds its key only, nothing of generation 1.
    const key = await keyRecordOf(K2);
    assert.deepEqual([key.gen, typeof key.wrappedKey, key.erasedAt], [2, 'string', undefined]);
    // His first registration stays in the log, sealed under generation 1, whose key is gone.
    const events = await eventsOf(K2);
    assert.deepEqual(events.map((e) => e.type), ['UserRegistered', 'UserErased', 'UserRegistered']);
    assert.deepEqual(events.map((e) => (e.data.pii ? dataKeyGeneration(e.data.pii) : e.data.gen)), [1, 1, 2]);
    assert.ok(![K.email, K.displayName, K.phoneNumber].some((v) => JSON.stringify(events).includes(v)), 'no personal data in clear');
    // The report counts him as a user again: his sign-in is under his user id, not the pseudonym.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: K2.userId, method: 'sms' }, idpKey)).status, 'pending');
    await eventually(async () => ((await signinsOf(K2)).length === 1 ? true : undefined), 20_000, "K's sign-in in the report");
  }, { timeout: 60_000 });
});
