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
import { generateDataKey, keyringFromMasterKey, loadKeyring, userTag } from '@mfa/crypto';
import { connectClient, createEvent, requestJson } from '@mfa/messaging';
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
 * `erased_users` (kept in Postgres, outside the restored log) makes exact.
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
  // B: erased after it. C: registered after it.
  const A = person('anna', 1);
  const B = person('bertil', 2);
  const C = person('cecilia', 3);
  const E = person('erik', 4);
  const R = person('rut', 5);
  const services = ['user-settings', 'auth-challenge', 'fraud', 'reporting'] as const;
  let nats: NatsServerProcess;
  let redisServer: RedisServerProcess;
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  let redis: Redis;
  let pool: pg.Pool;
  let backupDir = '';
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

  before(async () => {
    nats = await startNatsServer();
    redisServer = await startRedisServer();
    redis = new Redis(redisServer.url);
    pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    backupDir = await mkdtemp(join(tmpdir(), 'mfa-backup-'));
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
    for (const user of [A, B, E, R]) await registered(user);
    for (const user of [E, R]) assert.deepEqual(await ask(Subjects.usersDelete, { tenantId, userId: user.userId }), { userId: user.userId, deleted: true });
    await registered(R);
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: A.userId, method: 'sms' }, idpKey)).status, 'pending');
    await eventually(async () => ((await signinsOf(A)).length === 1 ? true : undefined), 20_000, "A's sign-in in the report");
    await erasedInReport(E);
    await erasedInReport(R);

    await down();
    await cp(nats.storeDir, backupDir, { recursive: true });
    backupAt = new Date();
    await nats.restart();
    await up();
  }, { timeout: 240_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'after the backup: a registration, an erasure, a revocation and a sign-in', async () => {
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
    assert.deepEqual(done.map((s) => s.replace(/^mfa\.v1\./, '')), ['users.delete', 'clients.revoke'], JSON.stringify(rows));
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'restored: the log is back at the backup; Redis, emptied, is rebuilt from it', async () => {
    await down();
    await rm(nats.storeDir, { recursive: true, force: true });
    await cp(backupDir, nats.storeDir, { recursive: true });
    await nats.restart();
    await up();
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
  }, { timeout: 240_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'reapply-erasures finds the users erased since the backup in erased_users and erases them again', async () => {
    const tool = (...args: string[]) => runTool(['services/reporting/dist/reapply-erasures.js', '--json', ...args]);
    // Dry run: B, and only B, is named (not R, whose erased_users row is of an earlier key
    // generation than the one R was registered again with); nothing is erased.
    const dry = await tool('--dry-run');
    assert.equal(dry.code, 0, dry.stderr);
    const planned = JSON.parse(dry.stdout) as { users: number; erasedInLog: number; erasedAgain: Array<{ tenantId: string; userId: string; gen: number }> };
    assert.deepEqual(planned.erasedAgain.filter((u) => u.tenantId === tenantId), [{ tenantId, userId: B.userId, gen: 1 }]);
    assert.ok((await getUser(B)).error === undefined, 'a dry run erases nothing');

    const done = await tool();
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual((JSON.parse(done.stdout) as { failed: unknown[] }).failed, []);
    assert.equal((await getUser(B)).error?.code, 'not_found');
    const jsm = await jetstreamManager(nc!);
    const key = await jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: EventSubjects.userDataKey(userTag(keyring, tenantId, B.userId)) });
    assert.deepEqual(Object.keys(key!.json<object>()).sort(), ['erasedAt', 'gen'], 'the data key is a tombstone again');
    assert.equal((await getUser(A)).error, undefined, 'A is left alone');
    assert.equal((await getUser(R)).error, undefined, 'R is left alone');

    // Once more: the log now erases B, nothing is left to do.
    const again = JSON.parse((await tool('--dry-run')).stdout) as { erasedAgain: Array<{ tenantId: string }> };
    assert.deepEqual(again.erasedAgain.filter((u) => u.tenantId === tenantId), []);

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
    assert.ok(listed.erasedInLog >= 2, 'the other users are still counted');
  }, { timeout: 60_000 });
});
