import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  parseEvent,
  Subjects,
  type AnyEvent,
  type BlockedQueryReply,
  type ChallengeEvent,
  type EventOf,
  type FraudQueryReply,
  type SigninsQueryReply,
  type TenantEvent,
  type UsageQueryReply,
} from '@mfa/contracts';
import { keyringFromMasterKey, loadKeyring, userTag } from '@mfa/crypto';
import { connectNats, createEvent, requestJson, type NatsClients } from '@mfa/messaging';
import type { RunningService } from '@mfa/service-kit';
import {
  challengeApproved,
  challengeCodeRejected,
  challengeStarted,
  eventually,
  itWith,
  tenantCreated,
  testChallenge,
  testEnv,
  testTenant,
  testUser,
  uniqueTenant,
  uniqueUser,
  userErased,
  userRegistered,
} from '@mfa/testing';
import { boot } from './boot.js';
import { loadReportingConfig } from './config.js';
import { FraudReportService } from './application/fraud-report.service.js';
import { ErasuresRepository } from './adapters/erasures.repository.js';
import { FraudReportRepository } from './adapters/fraud-report.repository.js';
import { PG_POOL } from './tokens.js';
import { UsageRepository } from './adapters/usage.repository.js';
import { knownPseudonyms, pseudonymizer } from './application/pseudonyms.js';
import { ReportProjection } from './application/report-projection.js';
import { foldFraudEvents, type FraudStreamEvent } from './domain/fraud-projection.js';
import type { Sequenced } from './domain/signin-projection.js';

process.env.LOG_LEVEL ??= 'warn';

/** reports.fraud.query, reports.blocked.query and reports.usage.query on the real NATS and Postgres. */
describe('reporting: fraud, blocked and usage reports (real NATS and Postgres)', () => {
  let service: RunningService;
  let projection: ReportProjection;
  let reports: FraudReportService;
  let nats: NatsClients;
  let seq = 1;
  const sequence = <E>(events: E[]): Sequenced<E>[] => events.map((event) => ({ event, seq: seq++ }));
  const parsed = <E extends AnyEvent>(event: E) => parseEvent(event) as E;
  const ask = <R>(subject: string, body: unknown) => requestJson<R & { error?: { code: string } }>(nats.nc, subject, body);

  before(async () => {
    service = await boot(loadReportingConfig({ ...process.env, NATS_URL: testEnv.natsUrl, DATABASE_URL: testEnv.databaseUrl, HTTP_PORT: '0', NODE_ENV: 'test' }));
    projection = service.app.get(ReportProjection);
    reports = service.app.get(FraudReportService);
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-fraud-test' });
  });

  after(async () => {
    await service?.stop();
    await nats?.nc.close();
  });

  async function newTenant(): Promise<string> {
    const tenantId = uniqueTenant('frep');
    await projection.projectTenants(sequence<TenantEvent>([parsed(tenantCreated(testTenant({ tenantId })))]));
    return tenantId;
  }
  const fraudEvent = <T extends FraudStreamEvent['type']>(type: T, tenantId: string, at: string, data: EventOf<T>['data'], id = randomUUID()) =>
    parsed(createEvent(type as 'FraudReported', 1, { tenantId, aggregateId: 'x', now: new Date(at), id, data: data as never }) as AnyEvent) as FraudStreamEvent;

  itWith({ real: ['nats', 'postgres'] }, 'fraud alerts: user, time, source, phone, client IP, action and e-mails; idempotent under replay; filters and cursors', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser('victim');
    const c = testChallenge(testUser({ tenantId, userId }), { method: 'sms', startedAt: '2026-11-30T09:00:00.000Z' });
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeStarted(c))]));
    const alertIds = [randomUUID(), randomUUID(), randomUUID()];
    const batch = sequence([
      fraudEvent('FraudReported', tenantId, '2026-11-30T09:01:00.000Z', {
        userId, alertId: alertIds[0]!, challengeId: c.challengeId, source: 'phone', clientIp: '203.0.113.7', application: 'VPN',
        challengeDenied: true, blocked: true, blockedUntil: '2027-02-28T09:01:00.000Z', by: { clientId: 'idp-1' },
      }),
      fraudEvent('FraudNotificationSent', tenantId, '2026-11-30T09:01:01.000Z', { alertId: alertIds[0]!, userId, to: 'soc@x.example', messageId: '<1@x>', attempts: 1 }),
      fraudEvent('FraudNotificationFailed', tenantId, '2026-11-30T09:02:00.000Z', { alertId: alertIds[0]!, userId, to: 'old@x.example', error: '550 no', attempts: 10 }),
      fraudEvent('FraudReported', tenantId, '2026-11-30T10:00:00.000Z', { userId, alertId: alertIds[1]!, source: 'idp', challengeDenied: false, blocked: false }),
      fraudEvent('FraudReported', tenantId, '2026-11-30T11:00:00.000Z', { userId: uniqueUser('other'), alertId: alertIds[2]!, source: 'app', challengeDenied: false, blocked: true }),
    ]);
    await reports.project(batch);
    await reports.project(batch); // a replay

    const all = await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId });
    assert.deepEqual(all.items.map((i) => i.alertId), [alertIds[2], alertIds[1], alertIds[0]]);
    assert.deepEqual(all.items[2], {
      alertId: alertIds[0],
      occurredAt: '2026-11-30T09:01:00.000Z',
      userId,
      displayName: 'Helga Nordin',
      email: 'helga.nordin@contoso.com',
      phoneNumber: '+14155550123',
      deviceId: null,
      source: 'phone',
      clientIp: '203.0.113.7',
      application: 'VPN',
      challengeId: c.challengeId,
      comment: null,
      challengeDenied: true,
      blocked: true,
      blockedUntil: '2027-02-28T09:01:00.000Z',
      reportedBy: 'idp-1',
      notifications: { sent: 1, failed: 1 },
    });
    assert.deepEqual((await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId, userId })).items.length, 2);
    assert.deepEqual((await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId, source: 'idp' })).items.map((i) => i.alertId), [alertIds[1]]);
    assert.deepEqual((await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId, from: '2026-11-30T09:30:00Z', to: '2026-11-30T10:30:00Z' })).items.map((i) => i.alertId), [alertIds[1]]);
    const first = await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId, limit: 2 });
    assert.equal(first.items.length, 2);
    const second = await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId, limit: 2, cursor: first.nextCursor });
    assert.deepEqual(second.items.map((i) => i.alertId), [alertIds[0]]);
    assert.equal(second.nextCursor, undefined);
    // Bad input: unknown tenant, another tenant's cursor, a bad source.
    assert.equal((await ask(Subjects.reportsFraudQuery, { tenantId: uniqueTenant('none') })).error?.code, 'not_found');
    const other = await newTenant();
    assert.equal((await ask(Subjects.reportsFraudQuery, { tenantId: other, cursor: first.nextCursor })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.reportsFraudQuery, { tenantId, source: 'email' })).error?.code, 'invalid_request');
  });

  itWith({ real: ['nats', 'postgres'] }, 'blocked history: blocks, unblocks, automatic unblocks and IP locks with reason, actor and end; filters; an erased user by pseudonym', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser('blocked');
    await reports.project(
      sequence([
        fraudEvent('UserBlocked', tenantId, '2026-11-01T08:00:00.000Z', { userId, reason: 'stolen phone', until: '2027-01-30T08:00:00.000Z', source: 'admin', by: { clientId: 'c1', operator: 'ops@x' } }),
        fraudEvent('UserUnblocked', tenantId, '2026-11-02T08:00:00.000Z', { userId, reason: 'found it', by: { clientId: 'c1' } }),
        fraudEvent('UserBlocked', tenantId, '2026-11-03T08:00:00.000Z', { userId, reason: 'fraud reported', until: '2026-11-04T08:00:00.000Z', source: 'fraud_report' }),
        fraudEvent('UserUnblocked', tenantId, '2026-11-04T08:00:00.000Z', { userId, automatic: true }),
        fraudEvent('IpLocked', tenantId, '2026-11-05T08:00:00.000Z', { ip: '198.51.100.4', until: '2026-11-05T09:00:00.000Z', failures: 50, users: 48, windowMinutes: 15, dryRun: true }),
        fraudEvent('IpUnlocked', tenantId, '2026-11-05T08:30:00.000Z', { ip: '198.51.100.4', reason: 'office NAT', by: { clientId: 'c2' } }),
      ]),
    );
    const history = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId });
    assert.deepEqual(history.items.map((i) => [i.action, i.userId ?? i.ip, i.reason, i.source, i.until, i.dryRun]), [
      ['ip_unlock', '198.51.100.4', 'office NAT', null, null, false],
      ['ip_lock', '198.51.100.4', '50 denials from 48 users within 15 min', 'ip_lockout', '2026-11-05T09:00:00.000Z', true],
      ['auto_unblock', userId, 'the block ended', null, null, false],
      ['block', userId, 'fraud reported', 'fraud_report', '2026-11-04T08:00:00.000Z', false],
      ['unblock', userId, 'found it', null, null, false],
      ['block', userId, 'stolen phone', 'admin', '2027-01-30T08:00:00.000Z', false],
    ]);
    assert.deepEqual(history.items[5]!.actor, { clientId: 'c1', operator: 'ops@x' });
    assert.deepEqual((await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, action: 'block' })).items.length, 2);
    assert.deepEqual((await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, ip: '198.51.100.4' })).items.length, 2);
    const paged = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, userId, limit: 3 });
    const rest = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, userId, limit: 3, cursor: paged.nextCursor });
    assert.deepEqual([paged.items.length, rest.items.length, rest.nextCursor], [3, 1, undefined]);
    assert.equal((await ask(Subjects.reportsBlockedQuery, { tenantId, action: 'ban' })).error?.code, 'invalid_request');

    // Erased: the rows keep the pseudonym, not the admin's free text about the user.
    await projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, '2026-11-10T00:00:00.000Z'))]));
    const after = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, action: 'block' });
    const pseudonym = pseudonymizer(loadKeyring({}).keyring)(tenantId, userId);
    assert.deepEqual(after.items.map((i) => [i.userId, i.reason]), [[pseudonym, null], [pseudonym, null]]);
  });

  describe('the end of an erased user’s block', () => {
    const pseudonymOf = pseudonymizer(loadKeyring({}).keyring);
    const ERASED_AT = '2026-11-10T00:00:00.000Z';
    /**
     * A user blocked, erased while blocked (users.delete leaves the block in force), the block
     * ending automatically after the erasure; then the same id registered again: its lockout lifted,
     * blocked and unblocked on its own. With the stream sequences the fraud stream gives them.
     */
    function history(tenantId: string, userId: string) {
      const [block, autoUnblock, lockoutLifted, blockAgain, unblockAgain] = sequence([
        fraudEvent('UserBlocked', tenantId, '2026-11-01T08:00:00.000Z', { userId, reason: 'fraud reported', until: '2027-01-30T08:00:00.000Z', source: 'fraud_report' }),
        fraudEvent('UserUnblocked', tenantId, '2027-01-30T08:00:00.000Z', { userId, automatic: true }),
        fraudEvent('UserUnblocked', tenantId, '2027-02-01T08:00:00.000Z', { userId, reason: 'lockout lifted', by: { clientId: 'c1' } }),
        fraudEvent('UserBlocked', tenantId, '2027-02-10T08:00:00.000Z', { userId, reason: 'lost phone', until: '2027-05-11T08:00:00.000Z', source: 'admin', by: { clientId: 'c1' } }),
        fraudEvent('UserUnblocked', tenantId, '2027-02-12T08:00:00.000Z', { userId, reason: 'found it', by: { clientId: 'c1' } }),
      ]);
      return { block: block!, autoUnblock: autoUnblock!, lockoutLifted: lockoutLifted!, blockAgain: blockAgain!, unblockAgain: unblockAgain! };
    }
    const erase = (tenantId: string, userId: string) =>
      projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, ERASED_AT))]));
    /** The history as reported, and what a query by the user id finds. */
    async function reported(tenantId: string, userId: string) {
      const all = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId });
      const byUser = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, userId });
      return { all: all.items.map((i) => [i.action, i.userId, i.reason]), byUser: byUser.items.map((i) => i.action) };
    }
    const expected = (userId: string, pseudonym: string) => ({
      all: [
        ['unblock', userId, 'found it'],
        ['block', userId, 'lost phone'],
        ['unblock', userId, 'lockout lifted'],
        ['auto_unblock', pseudonym, null],
        ['block', pseudonym, null],
      ],
      byUser: ['unblock', 'block', 'unblock'],
    });

    itWith({ real: ['nats', 'postgres'] }, 'keeps the pseudonym whether the unblock is projected after the erasure, before it, or before its own block; replays change nothing', async () => {
      type Step = 'erase' | keyof ReturnType<typeof history>;
      const orders: Record<string, Step[][]> = {
        'in stream order': [['block'], ['erase'], ['autoUnblock'], ['lockoutLifted'], ['blockAgain'], ['unblockAgain']],
        'the erasure last': [['block', 'autoUnblock', 'lockoutLifted', 'blockAgain', 'unblockAgain'], ['erase']],
        'the unblock before its block, after the erasure': [['erase'], ['autoUnblock'], ['lockoutLifted'], ['unblockAgain'], ['blockAgain'], ['block']],
        'the unblock before its block, before the erasure': [['unblockAgain', 'autoUnblock'], ['lockoutLifted', 'blockAgain'], ['block'], ['erase']],
      };
      for (const [order, batches] of Object.entries(orders)) {
        const tenantId = await newTenant();
        const userId = uniqueUser('erased-blocked');
        const events = history(tenantId, userId);
        for (const batch of batches) {
          if (batch[0] === 'erase') await erase(tenantId, userId);
          else await reports.project(batch.map((step) => events[step as Exclude<Step, 'erase'>]));
        }
        const want = expected(userId, pseudonymOf(tenantId, userId));
        assert.deepEqual(await reported(tenantId, userId), want, order);
        // Replays: the whole history at once, one event at a time backwards, and the erasure again.
        const all = Object.values(events);
        await reports.project(all);
        for (const item of [...all].reverse()) await reports.project([item]);
        await erase(tenantId, userId);
        assert.deepEqual(await reported(tenantId, userId), want, `${order}, replayed`);
      }
    });

    itWith({ real: ['nats', 'postgres'] }, 'keeps the pseudonym of a user erased before a master key rotation in the history projected after it', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('erased-rotated');
      const events = history(tenantId, userId);
      await erase(tenantId, userId);
      // An instance after the rotation: a new master key, the one of the erasure kept as previous.
      const rotated = keyringFromMasterKey(randomBytes(32), [loadKeyring({}).keyring]);
      const afterRotation = new FraudReportRepository(service.app.get(PG_POOL));
      await afterRotation.apply(foldFraudEvents([events.block]), knownPseudonyms(rotated));
      await afterRotation.apply(foldFraudEvents([events.autoUnblock, events.lockoutLifted, events.blockAgain, events.unblockAgain]), knownPseudonyms(rotated));
      assert.deepEqual(await reported(tenantId, userId), expected(userId, pseudonymOf(tenantId, userId)));
    });

    itWith({ real: ['nats', 'postgres'] }, 'keeps the first pseudonym in the history projected once the key of the erasure has left the keyring', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('erased-key-removed');
      const events = history(tenantId, userId);
      await erase(tenantId, userId);
      // After the rotation the erasure is replayed (operations.md, "Removing a previous master
      // key"), then the old key removed: only the record under the new key matches from then on.
      const newKey = randomBytes(32);
      const rotated = keyringFromMasterKey(newKey, [loadKeyring({}).keyring]);
      const pool = service.app.get<pg.Pool>(PG_POOL);
      await new ErasuresRepository(pool).erase({ tenantId, userId, pseudonyms: knownPseudonyms(rotated)(tenantId, userId), gen: 1, erasedAt: ERASED_AT });
      const oldKeyRemoved = knownPseudonyms(keyringFromMasterKey(newKey));
      const afterRemoval = new FraudReportRepository(pool);
      await afterRemoval.apply(foldFraudEvents([events.block]), oldKeyRemoved);
      // The automatic unblock, in its own batch: it ends a block already named by the first pseudonym.
      await afterRemoval.apply(foldFraudEvents([events.autoUnblock]), oldKeyRemoved);
      await afterRemoval.apply(foldFraudEvents([events.lockoutLifted, events.blockAgain, events.unblockAgain]), oldKeyRemoved);
      assert.deepEqual(await reported(tenantId, userId), expected(userId, pseudonymOf(tenantId, userId)));
    });

    itWith({ real: ['nats', 'postgres'] }, 'an erasure ends a block named by any of the user’s pseudonyms', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('erased-other-pseudonym');
      const events = history(tenantId, userId);
      await erase(tenantId, userId);
      const rotated = keyringFromMasterKey(randomBytes(32), [loadKeyring({}).keyring]);
      const pool = service.app.get<pg.Pool>(PG_POOL);
      // The block as an earlier release wrote it after the rotation: by the new key's pseudonym.
      await reports.project([events.block]);
      await pool.query("UPDATE block_history SET user_id = $2 WHERE tenant_id = $1 AND action = 'block'", [tenantId, pseudonymizer(rotated)(tenantId, userId)]);
      // Its automatic unblock, projected by an instance still on the old key alone, which finds no
      // block under the pseudonyms it computes: kept in clear for now.
      await reports.project([events.autoUnblock]);
      assert.deepEqual((await reported(tenantId, userId)).byUser, ['auto_unblock']);
      // The erasure replayed after the rotation finds the block by the new key's pseudonym.
      await new ErasuresRepository(pool).erase({ tenantId, userId, pseudonyms: knownPseudonyms(rotated)(tenantId, userId), gen: 1, erasedAt: ERASED_AT });
      const { all, byUser } = await reported(tenantId, userId);
      assert.deepEqual(byUser, [], 'the user id finds nothing');
      assert.deepEqual(all[0], ['auto_unblock', pseudonymOf(tenantId, userId), null]);
    });

    itWith({ real: ['nats', 'postgres'] }, 'keeps the pseudonym when the block and its unblock are projected at once by two instances', async () => {
      const tenantId = await newTenant();
      // Several users, each one's block and unblock in two batches running at once: a race that
      // nothing but the batches' user locks orders.
      const users = [1, 2, 3, 4].map(() => uniqueUser('erased-blocked'));
      const histories = users.map((userId) => history(tenantId, userId));
      for (const userId of users) await erase(tenantId, userId);
      const application = `reporting-two-instances-${randomUUID().slice(0, 8)}`;
      const instances = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 * users.length, application_name: application });
      const holder = new pg.Client({ connectionString: testEnv.databaseUrl });
      const watcher = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 1 });
      await holder.connect();
      try {
        // Every batch waits while the table is held (as by an erasure), then they go on together.
        await holder.query('BEGIN');
        await holder.query('LOCK TABLE block_history IN SHARE ROW EXCLUSIVE MODE');
        const batches = histories.flatMap(({ block, autoUnblock }) =>
          [block, autoUnblock].map((item) => new FraudReportRepository(instances).apply(foldFraudEvents([item]), pseudonymOf)),
        );
        await eventually(async () => {
          // From outside the holder's transaction, which would see the same snapshot of activity each time.
          const { rows } = await watcher.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            [application],
          );
          return rows[0]!.n === batches.length ? true : undefined;
        }, 10_000, 'every batch waiting');
        await holder.query('COMMIT');
        await Promise.all(batches);
      } finally {
        await holder.end();
        await watcher.end();
        await instances.end();
      }
      const stored = await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId, action: 'auto_unblock' });
      assert.deepEqual(stored.items.map((i) => i.userId).sort(), users.map((userId) => pseudonymOf(tenantId, userId)).sort());
    });
  });

  itWith({ real: ['nats', 'postgres'] }, 'usage per day and month: authentications per method and result, enabled users; partial periods; cursors', async () => {
    const tenantId = await newTenant();
    const users = [uniqueUser('u1'), uniqueUser('u2'), uniqueUser('u3')];
    const registered = (userId: string, at: string) => parsed(userRegistered(testUser({ tenantId, userId }), { occurredAt: at }));
    await reports.projectUsers(
      sequence([
        registered(users[0]!, '2026-10-20T00:00:00.000Z'),
        registered(users[1]!, '2026-11-02T12:00:00.000Z'),
        registered(users[2]!, '2026-11-02T13:00:00.000Z'),
        parsed(userErased(testUser({ tenantId, userId: users[2]! }), 1, '2026-11-02T18:00:00.000Z')),
      ]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[],
    );
    const sms = testChallenge(testUser({ tenantId, userId: users[0]! }), { method: 'sms', startedAt: '2026-11-01T10:00:00.000Z' });
    const totp = testChallenge(testUser({ tenantId, userId: users[1]! }), { method: 'totp', startedAt: '2026-11-02T12:30:00.000Z' });
    const failed = testChallenge(testUser({ tenantId, userId: users[1]! }), { method: 'totp', startedAt: '2026-11-02T14:00:00.000Z' });
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        parsed(challengeStarted(sms)),
        parsed(challengeApproved(sms, { occurredAt: '2026-11-01T10:00:20.000Z' })),
        parsed(challengeStarted(totp)),
        parsed(challengeApproved(totp, { occurredAt: '2026-11-02T12:30:10.000Z' })),
        parsed(challengeStarted(failed)),
        parsed(challengeCodeRejected(failed, { occurredAt: '2026-11-02T14:00:10.000Z', data: { attempt: 1 } })),
      ]),
    );
    const days = await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-11-01T00:00:00Z', to: '2026-11-04T00:00:00Z', granularity: 'day' });
    assert.deepEqual(days.items, [
      { period: '2026-11-01', authentications: { total: 1, success: 1, failure: 0 }, byMethod: [{ method: 'sms', success: 1, failure: 0 }], enabledUsers: 1 },
      {
        period: '2026-11-02',
        // The rejected code leaves its challenge pending; past its expiry it is a failure, as the sign-in report says.
        authentications: { total: 2, success: 1, failure: 1 },
        byMethod: [{ method: 'totp', success: 1, failure: 1 }],
        enabledUsers: 3,
      },
      { period: '2026-11-03', authentications: { total: 0, success: 0, failure: 0 }, byMethod: [], enabledUsers: 2 },
    ]);
    const months = await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-10-15T00:00:00Z', to: '2026-12-01T00:00:00Z', granularity: 'month' });
    assert.deepEqual(months.items.map((i) => [i.period, i.authentications.total, i.enabledUsers]), [['2026-10-01', 0, 1], ['2026-11-01', 3, 3]]);
    const page1 = await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-11-01T00:00:00Z', to: '2026-11-04T00:00:00Z', granularity: 'day', limit: 2 });
    const page2 = await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-11-01T00:00:00Z', to: '2026-11-04T00:00:00Z', granularity: 'day', limit: 2, cursor: page1.nextCursor });
    assert.deepEqual([...page1.items, ...page2.items], days.items);
    assert.equal(page2.nextCursor, undefined);
    // Bad input: no range, a range backwards or too long, another granularity's cursor.
    assert.equal((await ask(Subjects.reportsUsageQuery, { tenantId, granularity: 'day' })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.reportsUsageQuery, { tenantId, from: '2026-11-04T00:00:00Z', to: '2026-11-01T00:00:00Z', granularity: 'day' })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.reportsUsageQuery, { tenantId, from: '2020-01-01T00:00:00Z', to: '2026-11-01T00:00:00Z', granularity: 'day' })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.reportsUsageQuery, { tenantId, from: '2026-11-01T00:00:00Z', to: '2026-11-04T00:00:00Z', granularity: 'month', cursor: page1.nextCursor })).error?.code, 'invalid_request');
  });
  itWith({ real: ['nats', 'postgres'] }, 'usage counts the sign-ins the sign-in report lists: one only an outcome has written so far once its start is projected, or a minute on', async () => {
    const tenantId = await newTenant();
    const user = testUser({ tenantId, userId: uniqueUser() });
    const early = testChallenge(user, { method: 'sms', startedAt: '2026-11-01T10:00:00.000Z' });
    const orphan = testChallenge(user, { method: 'totp', startedAt: '2026-11-01T11:00:00.000Z' });
    const [start, outcome] = sequence<ChallengeEvent>([parsed(challengeStarted(early)), parsed(challengeApproved(early, { occurredAt: '2026-11-01T10:00:20.000Z' }))]);
    await projection.projectChallenges([outcome!]);
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeApproved(orphan, { occurredAt: '2026-11-01T11:00:20.000Z' }))]));
    const usage = async () => {
      const days = await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-11-01T00:00:00Z', to: '2026-11-02T00:00:00Z', granularity: 'day' });
      const signins = await ask<SigninsQueryReply>(Subjects.reportsSigninsQuery, { tenantId });
      return { usage: days.items.map((i) => [i.authentications, i.byMethod]), listed: signins.items.length };
    };
    assert.deepEqual(await usage(), { usage: [[{ total: 0, success: 0, failure: 0 }, []]], listed: 0 }, 'outcomes without their start: neither listed nor counted');
    await projection.projectChallenges([start!]);
    assert.deepEqual(await usage(), { usage: [[{ total: 1, success: 1, failure: 0 }, [{ method: 'sms', success: 1, failure: 0 }]]], listed: 1 }, 'counted by its method once its start is projected');
    // The other's start never comes (dead-lettered, say): as if its outcome was projected two minutes ago.
    await service.app.get<pg.Pool>(PG_POOL).query(
      "UPDATE signins SET projected_at = projected_at - interval '2 minutes' WHERE tenant_id = $1 AND challenge_id = $2",
      [tenantId, orphan.challengeId],
    );
    const { usage: counted, listed } = await usage();
    assert.deepEqual([counted[0]![0], listed], [{ total: 2, success: 2, failure: 0 }, 2], 'a start that never comes hides no sign-in');
  });

  itWith({ real: ['nats', 'postgres'] }, 'usage: a user registered before a rotation of the master key and erased after it is no longer an enabled user', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser('rotated');
    // Registered under the key the service runs with (the development key here)...
    await reports.projectUsers(sequence([parsed(userRegistered(testUser({ tenantId, userId }), { occurredAt: '2026-04-10T00:00:00.000Z' }))]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[]);
    // ...erased by a reporting that runs with a new key, the old one among its previous keys.
    const pool = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 1 });
    try {
      const rotated = keyringFromMasterKey(randomBytes(32), [loadKeyring({}).keyring]);
      const afterRotation = new FraudReportService(undefined as never, new UsageRepository(pool), undefined as never, undefined as never, undefined as never, rotated);
      await afterRotation.projectUsers(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, '2026-05-15T00:00:00.000Z'))]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[]);
    } finally {
      await pool.end();
    }
    const months = await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-04-01T00:00:00Z', to: '2026-07-01T00:00:00Z', granularity: 'month' });
    assert.deepEqual(months.items.map((i) => [i.period, i.enabledUsers]), [['2026-04-01', 1], ['2026-05-01', 1], ['2026-06-01', 0]]);
  });
  itWith({ real: ['nats', 'postgres'] }, 'usage: erasures seen before their registrations (instances, retries, replays) give the same enabled users', async () => {
    const tenantId = await newTenant();
    const [once, twice] = [uniqueUser('once'), uniqueUser('twice')];
    const registered = (userId: string, at: string) => parsed(userRegistered(testUser({ tenantId, userId }), { occurredAt: at }));
    const erased = (userId: string, at: string) => parsed(userErased(testUser({ tenantId, userId }), 1, at));
    const project = (...events: (EventOf<'UserRegistered'> | EventOf<'UserErased'>)[]) =>
      reports.projectUsers(sequence(events) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[]);
    // In the stream: `once` registered in May, erased in June; `twice` registered in May, erased
    // in June, registered again in July, erased in August. The projection sees them backwards,
    // each in its own batch as two instances or a retry would.
    await project(erased(twice, '2026-08-10T00:00:00.000Z'));
    await project(erased(once, '2026-06-10T00:00:00.000Z'));
    await project(registered(twice, '2026-07-10T00:00:00.000Z'));
    await project(erased(twice, '2026-06-10T00:00:00.000Z'));
    await project(registered(twice, '2026-05-10T00:00:00.000Z'), registered(once, '2026-05-10T00:00:00.000Z'));
    // A period's enabled users: registered before its end, not erased before its start.
    const expected = [['2026-04-01', 0], ['2026-05-01', 2], ['2026-06-01', 2], ['2026-07-01', 1], ['2026-08-01', 1]];
    const enabled = async () =>
      (await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, from: '2026-04-01T00:00:00Z', to: '2026-09-01T00:00:00Z', granularity: 'month' })).items.map((i) => [
        i.period,
        i.enabledUsers,
      ]);
    assert.deepEqual(await enabled(), expected);
    // Delivered again, in order this time: nothing changes.
    await project(registered(once, '2026-05-10T00:00:00.000Z'), erased(once, '2026-06-10T00:00:00.000Z'), registered(twice, '2026-05-10T00:00:00.000Z'));
    await project(erased(twice, '2026-06-10T00:00:00.000Z'), registered(twice, '2026-07-10T00:00:00.000Z'), erased(twice, '2026-08-10T00:00:00.000Z'));
    assert.deepEqual(await enabled(), expected);

    // Delivered again after a rotation of the master key, the old key among the previous ones:
    // the facts stored under the old key's hash are not stored a second time.
    const pool = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 1 });
    try {
      const rotated = keyringFromMasterKey(randomBytes(32), [loadKeyring({}).keyring]);
      const afterRotation = new FraudReportService(undefined as never, new UsageRepository(pool), undefined as never, undefined as never, undefined as never, rotated);
      await afterRotation.projectUsers(
        sequence([registered(once, '2026-05-10T00:00:00.000Z'), erased(once, '2026-06-10T00:00:00.000Z'), erased(twice, '2026-08-10T00:00:00.000Z')]) as Sequenced<
          EventOf<'UserRegistered' | 'UserErased'>
        >[],
      );
      assert.deepEqual(await enabled(), expected);

      // A reporting of the previous release, during a rolling upgrade, writes an erasure into
      // its registration's row: the migration's trigger keeps it as an erasure.
      const third = uniqueUser('upgrade');
      await project(registered(third, '2026-05-20T00:00:00.000Z'));
      const updated = await pool.query(
        `UPDATE user_lifetimes u SET erased_at = $3
          WHERE (u.tenant_id, u.user_key, u.registered_at) = (
            SELECT tenant_id, user_key, registered_at FROM user_lifetimes
             WHERE tenant_id = $1 AND user_key = ANY($2::text[]) AND registered_at <= $3
             ORDER BY registered_at DESC LIMIT 1)`,
        [tenantId, [userTag(loadKeyring({}).keyring, tenantId, third)], '2026-07-20T00:00:00.000Z'],
      );
      assert.equal(updated.rowCount, 1);
    } finally {
      await pool.end();
    }
    assert.deepEqual(await enabled(), [['2026-04-01', 0], ['2026-05-01', 3], ['2026-06-01', 3], ['2026-07-01', 2], ['2026-08-01', 1]]);
  });
});
