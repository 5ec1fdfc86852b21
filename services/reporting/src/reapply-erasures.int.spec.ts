import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { defaultTenantSettings, EventSubjects, Streams, Subjects, type UsersDeleteRequest } from '@mfa/contracts';
import { generateDataKey, loadKeyring, sealWithDataKey, userTag } from '@mfa/crypto';
import { connectNats, createEvent, ensureStream, requestJson, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, startStack, testEnv, uniqueTenant, type NatsServerProcess, type Stack } from '@mfa/testing';
import { prepareDatabase } from './adapters/database.js';
import { ErasureReapply, type ReapplyReport } from './application/erasure-reapply.js';
import { exitCodeOf, formatReapplyReport } from './reapply-erasures.js';

/**
 * reapply-erasures over a log and a key store restored from different moments (docs/operations.md,
 * "Backup and restore"): each user's events and data key record are written as user-settings
 * writes them, and the pass sorts the users it cannot erase again by what their key store holds.
 */
describe('reapply-erasures: users the event log and MFA_USER_KEYS disagree on (real NATS and Postgres)', () => {
  const { keyring } = loadKeyring(process.env);
  const log = createLogger('reapply-erasures-test', { level: 'error' });
  let nats: NatsClients;
  let db: pg.Pool;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-reapply-erasures-test' });
    await ensureStream(nats.jsm, Streams.userSettings);
    await ensureStream(nats.jsm, Streams.userKeys);
    await prepareDatabase(testEnv.databaseUrl, log);
    db = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 });
  });

  after(async () => {
    await db?.end();
    await nats?.nc.close();
  });

  /** The user's events, in order: registered (`r`) or erased at a generation (a number). */
  const logOf = async (tenantId: string, userId: string, events: Array<'r' | number>) => {
    for (const event of events) {
      const body =
        event === 'r'
          ? createEvent('UserRegistered', 1, { tenantId, aggregateId: userId, now: new Date(), data: { userId } })
          : createEvent('UserErased', 1, { tenantId, aggregateId: userId, now: new Date(), data: { userId, gen: event } });
      await nats.js.publish(EventSubjects.user(tenantId, userId), JSON.stringify(body));
    }
  };
  /** The user's data key records, the last one current: a key of a generation, or an erasure's tombstone. */
  const keysOf = async (tenantId: string, userId: string, records: Array<{ key: number } | { tombstone: number }>) => {
    for (const record of records) {
      const body =
        'key' in record
          ? { gen: record.key, wrappedKey: generateDataKey(keyring, tenantId, userId, record.key).wrapped }
          : { gen: record.tombstone, erasedAt: new Date().toISOString() };
      await nats.js.publish(EventSubjects.userDataKey(userTag(keyring, tenantId, userId)), JSON.stringify(body));
    }
  };
  type Reply = { error?: { code: string; message: string } };
  /**
   * One pass over the log; `answer` stands for user-settings (users.delete), by default answering
   * deleted and changing nothing. Only this tenant's users are returned (the streams are shared).
   */
  const reapply = async (
    tenantId: string,
    options: { dryRun?: boolean; answer?: (request: UsersDeleteRequest) => Promise<Reply>; tenants?: readonly string[]; answerTenant?: (tenantId: string) => Promise<Reply> } = {},
  ) => {
    const erased: UsersDeleteRequest[] = [];
    const tenantsDeleted: string[] = [];
    const ourTenants = new Set([tenantId, ...(options.tenants ?? [])]);
    const report = await new ErasureReapply(nats, keyring, db, {
      dryRun: options.dryRun ?? false,
      log,
      erase: async (request) => {
        if (!ourTenants.has(request.tenantId)) return {};
        erased.push(request);
        return options.answer ? options.answer(request) : {};
      },
      deleteTenant: async (request) => {
        if (!ourTenants.has(request.tenantId)) return {};
        tenantsDeleted.push(request.tenantId);
        return options.answerTenant ? options.answerTenant(request.tenantId) : {};
      },
    }).run();
    const ours = <U extends { tenantId: string; userId: string }>(users: U[]) => users.filter((u) => u.tenantId === tenantId).sort((a, b) => a.userId.localeCompare(b.userId));
    return {
      report,
      tenantsDeleted: tenantsDeleted.sort(),
      tenantsDeletedAgain: report.tenantsDeletedAgain.filter((t) => ourTenants.has(t.tenantId)).map((t) => t.tenantId).sort(),
      tenantsFailed: report.tenantsFailed.filter((t) => ourTenants.has(t.tenantId)),
      erased: erased.map((r) => r.userId),
      requests: erased.sort((a, b) => a.userId.localeCompare(b.userId)),
      withoutKey: ours(report.withoutKey),
      keyErasedOnly: ours(report.keyErasedOnly),
      keyErasuresCompleted: ours(report.keyErasuresCompleted),
      failed: ours(report.failed),
    };
  };

  itWith({ real: ['nats', 'postgres'] }, 'a user erased and registered again whose key store holds only the erasure’s tombstone lacks a data key: not listed as erased by the key store', async () => {
    const tenantId = uniqueTenant('reapply-gone');
    // Erased at generation 1 and registered again (generation 2) before the log's backup; the key
    // store's copy is from between the two: it holds the tombstone of 1 and no key of 2. The
    // tombstone is the log's own erasure, not one the log misses; what is missing is key 2.
    await logOf(tenantId, 'rut', ['r', 1, 'r']);
    await keysOf(tenantId, 'rut', [{ key: 1 }, { tombstone: 1 }]);
    const { withoutKey, keyErasedOnly, erased } = await reapply(tenantId);
    assert.deepEqual(keyErasedOnly, [], 'not a user the key store erased after the log’s backup');
    assert.deepEqual(withoutKey, [{ tenantId, userId: 'rut' }]);
    assert.deepEqual(erased, [], 'nobody erased');
  });

  itWith({ real: ['nats', 'postgres'] }, 'a dry run lists the users whose key store destroyed a key the log never erased, with the tombstone’s generation, and erases nothing', async () => {
    const tenantId = uniqueTenant('reapply-keyerased');
    // Bertil: erased after the log's backup. Erik: erased before it, registered again, and erased
    // again after it (the log records the erasure of 1, not of 2).
    await logOf(tenantId, 'bertil', ['r']);
    await keysOf(tenantId, 'bertil', [{ key: 1 }, { tombstone: 1 }]);
    await logOf(tenantId, 'erik', ['r', 1, 'r']);
    await keysOf(tenantId, 'erik', [{ key: 1 }, { tombstone: 1 }, { key: 2 }, { tombstone: 2 }]);
    const { report, withoutKey, keyErasedOnly, keyErasuresCompleted, erased } = await reapply(tenantId, { dryRun: true });
    assert.deepEqual(keyErasedOnly, [
      { tenantId, userId: 'bertil', gen: 1 },
      { tenantId, userId: 'erik', gen: 2 },
    ]);
    assert.deepEqual(withoutKey, []);
    assert.deepEqual(keyErasuresCompleted, []);
    assert.deepEqual(erased, [], 'a dry run erases nothing');
    const text = formatReapplyReport({ ...report, keyErasedOnly } satisfies ReapplyReport);
    assert.match(text, /erasure to complete: 2/);
    assert.match(text, new RegExp(`  ${tenantId} erik \\(key generation 2\\)`));
  });

  itWith({ real: ['nats', 'postgres'] }, 'a run completes those erasures with users.delete onlyIfKeyErased; a refusal is a failure; a second run has nothing left to do', async () => {
    const tenantId = uniqueTenant('reapply-complete');
    await logOf(tenantId, 'bertil', ['r']);
    await keysOf(tenantId, 'bertil', [{ key: 1 }, { tombstone: 1 }]);
    await logOf(tenantId, 'erik', ['r', 1, 'r']);
    await keysOf(tenantId, 'erik', [{ key: 1 }, { tombstone: 1 }, { key: 2 }, { tombstone: 2 }]);
    // Gustav's users.delete is refused (user-settings found his key live: registered again).
    await logOf(tenantId, 'gustav', ['r']);
    await keysOf(tenantId, 'gustav', [{ key: 1 }, { tombstone: 1 }]);
    // What user-settings records for a completed erasure: UserErased of the tombstone's generation.
    const userSettings = async (request: UsersDeleteRequest): Promise<Reply> => {
      if (request.userId === 'gustav') return { error: { code: 'conflict', message: 'the user’s data key (generation 2) is live: no erasure of generation 1 to complete; nothing erased' } };
      assert.ok(request.onlyIfKeyErased !== undefined, 'a conditional users.delete');
      await logOf(request.tenantId, request.userId, [request.onlyIfKeyErased]);
      return {};
    };

    const first = await reapply(tenantId, { answer: userSettings });
    assert.deepEqual(first.requests, [
      { tenantId, userId: 'bertil', onlyIfKeyErased: 1 },
      { tenantId, userId: 'erik', onlyIfKeyErased: 2 },
      { tenantId, userId: 'gustav', onlyIfKeyErased: 1 },
    ]);
    assert.deepEqual(first.keyErasuresCompleted, [
      { tenantId, userId: 'bertil', gen: 1 },
      { tenantId, userId: 'erik', gen: 2 },
    ]);
    assert.deepEqual(first.keyErasedOnly, [], 'each one completed or failed');
    assert.equal(first.failed.length, 1);
    assert.equal(first.failed[0]!.userId, 'gustav');
    assert.match(first.failed[0]!.error, /generation 1: conflict: the user’s data key \(generation 2\) is live/);
    assert.equal(exitCodeOf({ ...first.report, failed: first.failed, withoutKey: first.withoutKey }), 3, 'what remains undone: the failure');
    assert.equal(exitCodeOf({ ...first.report, failed: [], withoutKey: [] }), 0, 'completed erasures need no look');
    const text = formatReapplyReport({ ...first.report, keyErasuresCompleted: first.keyErasuresCompleted, failed: first.failed } satisfies ReapplyReport);
    assert.match(text, /completed: 2\n/);
    assert.match(text, new RegExp(`  ${tenantId} erik \\(key generation 2\\)`));
    assert.match(text, new RegExp(`  ${tenantId} gustav: completing`));

    // The log records those erasures now: nothing to do for them; Gustav is tried again.
    const second = await reapply(tenantId, { answer: userSettings });
    assert.deepEqual(second.erased, ['gustav']);
    assert.deepEqual([second.keyErasuresCompleted, second.keyErasedOnly, second.withoutKey], [[], [], []]);
    const dry = await reapply(tenantId, { dryRun: true });
    assert.deepEqual(dry.keyErasedOnly, [{ tenantId, userId: 'gustav', gen: 1 }]);
    assert.equal(exitCodeOf({ ...dry.report, failed: dry.failed, withoutKey: dry.withoutKey }), 0, 'a dry run’s erasures to make need no look');
  });

  itWith({ real: ['nats', 'postgres'] }, 'a tenant deleted after the backup and live again in the restored log is deleted again, its users left to its offboarding; one whose log holds the deletion, or created again since, is left alone', async () => {
    const [back, kept, recreated] = [uniqueTenant('reapply-t-back'), uniqueTenant('reapply-t-kept'), uniqueTenant('reapply-t-new')];
    const at = (minutes: number) => new Date(Date.now() - 60 * 60_000 + minutes * 60_000);
    const tenantEvent = async (tenantId: string, type: 'TenantCreated' | 'TenantDeleted', minutes: number) =>
      nats.js.publish(EventSubjects.tenant(tenantId), JSON.stringify(createEvent(type, 1, { tenantId, aggregateId: tenantId, now: at(minutes), data: type === 'TenantCreated' ? { settings: defaultTenantSettings() } : {} })));
    // The audit trail (Postgres, untouched by the restore): each deleted at minute 10.
    for (const tenantId of [back, kept, recreated]) {
      await db.query(
        `INSERT INTO audit_log (event_id, tenant_id, occurred_at, client_id, subject, outcome, event_seq) VALUES ($1, $2, $3, 'platform', $4, 'ok', 1)`,
        [randomUUID(), tenantId, at(10), Subjects.tenantsDelete],
      );
    }
    // The restored log: `back` as it was before its deletion, with a user; `kept` with its
    // deletion; `recreated` created again after it.
    await tenantEvent(back, 'TenantCreated', 0);
    await logOf(back, 'ulla', ['r']);
    await keysOf(back, 'ulla', [{ key: 1 }]);
    await tenantEvent(kept, 'TenantCreated', 0);
    await tenantEvent(kept, 'TenantDeleted', 10);
    await tenantEvent(recreated, 'TenantCreated', 20);
    const tenants = [back, kept, recreated];

    const dry = await reapply(back, { dryRun: true, tenants });
    assert.deepEqual([dry.tenantsDeletedAgain, dry.tenantsDeleted], [[back], []], 'listed, not deleted');
    assert.match(formatReapplyReport(dry.report), new RegExp(`Tenants deleted since the backup and back in the log: \\d+ \\(to delete again\\)[\\s\\S]*  ${back} \\(deleted `));

    const run = await reapply(back, { tenants });
    assert.deepEqual([run.tenantsDeletedAgain, run.tenantsDeleted, run.tenantsFailed], [[back], [back], []]);
    assert.deepEqual(run.erased, [], 'its users are left to its offboarding');
    // Refused: a failure, exit code 3.
    const refused = await reapply(back, { tenants, answerTenant: async () => ({ error: { code: 'unavailable', message: 'no answer' } }) });
    assert.deepEqual(refused.tenantsFailed, [{ tenantId: back, error: 'unavailable: no answer' }]);
    assert.equal(exitCodeOf({ ...refused.report, failed: [], withoutKey: [], tenantsFailed: refused.tenantsFailed }), 3);
  });
});

/**
 * The conditional users.delete the pass sends (onlyIfKeyErased) answered by a real user-settings
 * (a process of the test's own, on a nats-server of its own, so that no other instance answers and
 * the streams hold only this test's users; Redis database 15). user-settings refuses it with
 * `conflict` when the generations do not match: the key store's is not the one the log's data is
 * sealed under, or not a tombstone any more.
 */
describe('reapply-erasures against a real user-settings: conditional erasures whose generations do not match', () => {
  const { keyring } = loadKeyring(process.env);
  const log = createLogger('reapply-erasures-test', { level: 'error' });
  let server: NatsServerProcess;
  let stack: Stack;
  let nats: NatsClients;
  let db: pg.Pool;

  before(async () => {
    server = await startNatsServer();
    stack = await startStack({
      services: ['user-settings'],
      env: { NODE_ENV: 'test', NATS_URL: server.url, REDIS_URL: `${testEnv.redisUrl.replace(/\/\d*$/, '')}/15`, MFA_AUTH: 'off' },
    });
    nats = await connectNats({ url: server.url, name: 'reporting-reapply-erasures-real-test', connectTimeoutMs: 5_000 });
    await prepareDatabase(testEnv.databaseUrl, log);
    db = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 });
  });

  after(async () => {
    await stack?.stop();
    await db?.end();
    await nats?.nc.drain();
    await server?.stop();
  });

  /** One pass, its users.delete requests sent to user-settings; `beforeErase` runs before each is sent. */
  const reapply = async (options: { dryRun?: boolean; beforeErase?: (request: UsersDeleteRequest) => Promise<void> } = {}) => {
    const sent: UsersDeleteRequest[] = [];
    const report = await new ErasureReapply(nats, keyring, db, {
      dryRun: options.dryRun ?? false,
      log,
      erase: async (request) => {
        sent.push(request);
        await options.beforeErase?.(request);
        return requestJson(nats.nc, Subjects.usersDelete, request, { timeoutMs: 10_000 });
      },
      deleteTenant: (request) => requestJson(nats.nc, Subjects.tenantsDelete, request, { timeoutMs: 10_000 }),
    }).run();
    return { report, sent };
  };
  const created = async (tenantId: string) =>
    nats.js.publish(EventSubjects.tenant(tenantId), JSON.stringify(createEvent('TenantCreated', 1, { tenantId, aggregateId: tenantId, now: new Date(), data: { settings: defaultTenantSettings() } })));
  /** The user registered in the log with personal data sealed under data key generation `gen`. */
  const registeredUnder = async (tenantId: string, userId: string, gen: number) => {
    const pii = sealWithDataKey(generateDataKey(keyring, tenantId, userId, gen).dataKey, new TextEncoder().encode(JSON.stringify({ displayName: 'Gustav Berg' })), 'reapply-erasures-test');
    await nats.js.publish(EventSubjects.user(tenantId, userId), JSON.stringify(createEvent('UserRegistered', 2, { tenantId, aggregateId: userId, now: new Date(), data: { userId, pii } })));
  };
  /** What the key store holds for the user: a key of a generation, or an erasure's tombstone. */
  const keyRecord = async (tenantId: string, userId: string, record: { key: number } | { tombstone: number }) =>
    nats.js.publish(
      EventSubjects.userDataKey(userTag(keyring, tenantId, userId)),
      JSON.stringify('key' in record ? { gen: record.key, wrappedKey: generateDataKey(keyring, tenantId, userId, record.key).wrapped } : { gen: record.tombstone, erasedAt: new Date().toISOString() }),
    );
  /** The user's events (how many, the last one's type) and data key record (sequence and body), as the streams hold them. */
  const stored = async (tenantId: string, userId: string) => {
    const info = await nats.jsm.streams.info(Streams.userSettings.name, { subjects_filter: EventSubjects.user(tenantId, userId) });
    const last = await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.user(tenantId, userId) });
    const key = await nats.jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: EventSubjects.userDataKey(userTag(keyring, tenantId, userId)) });
    return { events: info.state.subjects?.[EventSubjects.user(tenantId, userId)] ?? 0, lastType: last?.json<{ type: string }>().type, keySeq: key?.seq, key: key?.json<Record<string, unknown>>() };
  };
  const ours = <U extends { tenantId: string }>(tenantId: string, users: U[]) => users.filter((u) => u.tenantId === tenantId);

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'a key store’s key changed after the pass read its tombstone: user-settings refuses, the refusal is listed with its reason, nothing is erased', async () => {
    const tenantId = uniqueTenant('reapply-mismatch');
    const userId = 'ulrika';
    await created(tenantId);
    // The log: Ulrika registered (generation 1), no erasure; the key store: the tombstone of 1.
    await registeredUnder(tenantId, userId, 1);
    await keyRecord(tenantId, userId, { tombstone: 1 });
    const dry = await reapply({ dryRun: true });
    assert.deepEqual(ours(tenantId, dry.report.keyErasedOnly), [{ tenantId, userId, gen: 1 }], 'an erasure to complete');
    assert.deepEqual(dry.sent, []);

    // Between the pass's read and its users.delete, MFA_USER_KEYS holds a live key of generation 2
    // (restored again meanwhile): the generation asked for is not the key store's.
    let keyBefore: Awaited<ReturnType<typeof stored>> | undefined;
    const { report, sent } = await reapply({
      beforeErase: async (request) => {
        if (request.tenantId !== tenantId) return;
        await keyRecord(tenantId, userId, { key: 2 });
        keyBefore = await stored(tenantId, userId);
      },
    });
    assert.deepEqual(ours(tenantId, sent), [{ tenantId, userId, onlyIfKeyErased: 1 }]);
    assert.deepEqual(ours(tenantId, report.keyErasuresCompleted), []);
    assert.deepEqual(
      ours(tenantId, report.failed),
      [{ tenantId, userId, error: 'completing the key store’s erasure of generation 1: conflict: the user’s data key (generation 2) is live: no erasure of generation 1 to complete; nothing erased' }],
    );
    assert.equal(exitCodeOf(report), 3, 'the user needs a look');
    assert.match(formatReapplyReport(report), new RegExp(`Failed \\(.*\\): 1\\n  ${tenantId} ulrika: completing the key store’s erasure of generation 1: conflict: the user’s data key \\(generation 2\\) is live`));
    const after = await stored(tenantId, userId);
    assert.deepEqual(after, keyBefore, 'nothing erased: no UserErased, the key as it was');
    assert.deepEqual([after.events, after.lastType, after.key?.gen, typeof after.key?.wrappedKey], [1, 'UserRegistered', 2, 'string']);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'a log whose data is sealed under a newer generation than the key store’s tombstone lacks that key: listed without a data key, not sent to users.delete, nothing erased', async () => {
    const tenantId = uniqueTenant('reapply-newer');
    const userId = 'gustav';
    await created(tenantId);
    // The log: Gustav's data sealed under generation 2, no erasure; the key store: the tombstone of
    // 1 only. user-settings refuses its conditional erasure (the key of 2 is missing, not erased).
    await registeredUnder(tenantId, userId, 2);
    await keyRecord(tenantId, userId, { tombstone: 1 });
    const before = await stored(tenantId, userId);
    const refused = await requestJson<{ error?: { code: string; message: string } }>(nats.nc, Subjects.usersDelete, { tenantId, userId, onlyIfKeyErased: 1 }, { timeoutMs: 10_000 });
    assert.deepEqual(refused.error, {
      code: 'conflict',
      message: 'the user’s events are sealed under data key generation 2, newer than the key store’s erasure of 1: that key is missing, not erased; nothing erased',
    });

    for (const dryRun of [true, false]) {
      const { report, sent } = await reapply({ dryRun });
      assert.deepEqual(ours(tenantId, report.withoutKey), [{ tenantId, userId }], `dry run ${dryRun}: no data key`);
      assert.deepEqual([ours(tenantId, report.keyErasedOnly), ours(tenantId, report.keyErasuresCompleted), ours(tenantId, report.failed), ours(tenantId, sent)], [[], [], [], []]);
      assert.equal(exitCodeOf(report), 3, 'the user needs a look');
    }
    assert.deepEqual(await stored(tenantId, userId), before, 'nothing erased');
  });
});
