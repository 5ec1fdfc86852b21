import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  EventSubjects,
  parseEvent,
  Subjects,
  type AnyEvent,
  type AuditQueryReply,
  type BlockedQueryReply,
  type ChallengeEvent,
  type DispatchEvent,
  type EventOf,
  type FraudQueryReply,
  type SigninsQueryReply,
  type TenantEvent,
  type UsageQueryReply,
} from '@mfa/contracts';
import { connectNats, createEvent, EventPublisher, requestJson, type NatsClients } from '@mfa/messaging';
import type { RunningService } from '@mfa/service-kit';
import {
  challengeApproved,
  challengeExpired,
  challengeStarted,
  eventually,
  itWith,
  smsSent,
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
import { FORMER_ROWS_PER_STATEMENT } from './adapters/signins.repository.js';
import { AuditReportService } from './application/audit-report.service.js';
import { FraudReportService } from './application/fraud-report.service.js';
import { ReportProjection } from './application/report-projection.js';
import type { FraudStreamEvent } from './domain/fraud-projection.js';
import type { Sequenced } from './domain/signin-projection.js';

process.env.LOG_LEVEL ??= 'warn';

/**
 * Tenant offboarding in the report (reportingTenants): TenantDeleted makes the tenant unknown to
 * every report query, TenantErased deletes its report rows but for its erased users and its audit
 * trail, and a TenantCreated after it is a new tenant with an empty report. Real NATS and Postgres;
 * events are fed to the projections directly, with stream sequences the test controls.
 */
describe('reporting: tenant offboarding (real NATS and Postgres)', () => {
  let service: RunningService;
  let projection: ReportProjection;
  let fraud: FraudReportService;
  let audit: AuditReportService;
  let nats: NatsClients;
  let pool: pg.Pool;
  let seq = 1;
  const sequence = <E>(events: E[]): Sequenced<E>[] => events.map((event) => ({ event, seq: seq++ }));
  const parsed = <E extends AnyEvent>(event: E) => parseEvent(event) as E;
  const ask = <R>(subject: string, body: unknown) => requestJson<R & { error?: { code: string; message: string } }>(nats.nc, subject, body);

  before(async () => {
    service = await boot(loadReportingConfig({ ...process.env, NATS_URL: testEnv.natsUrl, DATABASE_URL: testEnv.databaseUrl, HTTP_PORT: '0', NODE_ENV: 'test' }));
    projection = service.app.get(ReportProjection);
    fraud = service.app.get(FraudReportService);
    audit = service.app.get(AuditReportService);
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-offboarding-test' });
    pool = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 });
  });

  after(async () => {
    await service?.stop();
    await nats?.nc.close();
    await pool?.end();
  });

  const created = (tenantId: string, at: string) => parsed(tenantCreated(testTenant({ tenantId }), { occurredAt: at })) as TenantEvent;
  const deleted = (tenantId: string, at: string) => parsed(createEvent('TenantDeleted', 1, { tenantId, aggregateId: tenantId, now: new Date(at), data: {} })) as TenantEvent;
  const erased = (tenantId: string, at: string, deletedAt: string) =>
    parsed(createEvent('TenantErased', 1, { tenantId, aggregateId: tenantId, now: new Date(at), data: { deletedAt, users: 2, hardwareTokens: 0, recordings: 0, clients: 1 } })) as TenantEvent;
  const fraudEvent = <T extends FraudStreamEvent['type']>(type: T, tenantId: string, at: string, data: EventOf<T>['data']) =>
    parsed(createEvent(type as 'FraudReported', 1, { tenantId, aggregateId: 'x', now: new Date(at), data: data as never }) as AnyEvent) as FraudStreamEvent;
  const adminAction = (tenantId: string, at: string, userId: string) =>
    parsed(
      createEvent('AdminActionRecorded', 1, { tenantId, aggregateId: tenantId, now: new Date(at), data: { subject: Subjects.usersDelete, clientId: 'platform', userId, outcome: 'ok' } }),
    );

  const NOVEMBER = { from: '2026-11-01T00:00:00Z', to: '2026-12-01T00:00:00Z' };
  /** Each report of the tenant: its items, or the error it answers. */
  async function reports(tenantId: string) {
    const answer = <R extends { items: unknown[] }>(reply: R & { error?: { code: string; message: string } }) => (reply.error ? reply.error : reply.items);
    return {
      signins: answer(await ask<SigninsQueryReply>(Subjects.reportsSigninsQuery, { tenantId, limit: 50 })),
      fraud: answer(await ask<FraudQueryReply>(Subjects.reportsFraudQuery, { tenantId })),
      blocked: answer(await ask<BlockedQueryReply>(Subjects.reportsBlockedQuery, { tenantId })),
      usage: answer(await ask<UsageQueryReply>(Subjects.reportsUsageQuery, { tenantId, ...NOVEMBER, granularity: 'month' })),
    };
  }
  const UNKNOWN = { code: 'not_found', message: 'unknown tenant' };
  const unknownEverywhere = { signins: UNKNOWN, fraud: UNKNOWN, blocked: UNKNOWN, usage: UNKNOWN };
  const EMPTY_MONTH = { period: '2026-11-01', authentications: { total: 0, success: 0, failure: 0 }, byMethod: [], enabledUsers: 0 };
  const emptyReport = { signins: [], fraud: [], blocked: [], usage: [EMPTY_MONTH] };

  /** The tenant's rows in every table that has its id. */
  async function rowsOf(tenantId: string): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const table of ['signins', 'deliveries', 'fraud_alerts', 'fraud_notifications', 'block_history', 'user_lifetimes', 'user_erasures', 'erased_users', 'audit_log']) {
      const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE tenant_id = $1`, [tenantId]);
      counts[table] = rows[0]!.n;
    }
    return counts;
  }
  const auditTrail = async (tenantId: string) => (await ask<AuditQueryReply>(Subjects.reportsAuditQuery, { tenantId })).items.map((i) => [i.subject, i.userId]);

  /** A tenant with sign-ins (one delivered by SMS, one pending), a fraud alert and its e-mail, a block, usage, an erased user and an audit trail. */
  async function tenantWithReport() {
    const tenantId = uniqueTenant('rep-offboard');
    const [alice, bob] = [uniqueUser('alice'), uniqueUser('bob')];
    await projection.projectTenants(sequence([created(tenantId, '2026-10-01T00:00:00.000Z')]));
    await fraud.projectUsers(
      sequence([
        parsed(userRegistered(testUser({ tenantId, userId: alice }), { occurredAt: '2026-10-02T00:00:00.000Z' })),
        parsed(userRegistered(testUser({ tenantId, userId: bob }), { occurredAt: '2026-10-02T00:00:00.000Z' })),
      ]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[],
    );
    const signedIn = testChallenge(testUser({ tenantId, userId: alice }), { method: 'sms', startedAt: '2026-11-01T09:00:00.000Z' });
    const ofBob = testChallenge(testUser({ tenantId, userId: bob }), { method: 'totp', startedAt: '2026-11-01T09:30:00.000Z' });
    // Pending when the tenant is deleted: its expiry comes after the erasure.
    const pending = testChallenge(testUser({ tenantId, userId: alice }), {
      method: 'totp',
      startedAt: '2026-11-03T09:59:00.000Z',
      expiresAt: '2026-11-03T10:10:00.000Z',
    });
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        parsed(challengeStarted(signedIn)),
        parsed(challengeApproved(signedIn, { occurredAt: '2026-11-01T09:00:20.000Z' })),
        parsed(challengeStarted(ofBob)),
        parsed(challengeApproved(ofBob, { occurredAt: '2026-11-01T09:30:20.000Z' })),
        parsed(challengeStarted(pending)),
      ]),
    );
    await projection.projectDispatch(sequence<DispatchEvent>([parsed(smsSent(signedIn, { occurredAt: '2026-11-01T09:00:01.000Z' }))]));
    const alertId = randomUUID();
    await fraud.project(
      sequence([
        fraudEvent('FraudReported', tenantId, '2026-11-01T09:05:00.000Z', { userId: alice, alertId, source: 'app', challengeDenied: false, blocked: true }),
        fraudEvent('FraudNotificationSent', tenantId, '2026-11-01T09:05:01.000Z', { alertId, userId: alice, to: 'soc@contoso.example', messageId: '<1@x>', attempts: 1 }),
        fraudEvent('UserBlocked', tenantId, '2026-11-01T09:05:00.000Z', { userId: alice, reason: 'fraud reported', until: '2026-11-02T09:05:00.000Z', source: 'fraud_report' }),
      ]),
    );
    await audit.project(sequence([adminAction(tenantId, '2026-11-02T08:00:00.000Z', bob)]));
    // Bob erased (users.delete) before the tenant: his rows keep a pseudonym.
    const bobErased = parsed(userErased(testUser({ tenantId, userId: bob }), 1, '2026-11-02T08:00:00.000Z'));
    await projection.projectErasures(sequence([bobErased]));
    await fraud.projectUsers(sequence([bobErased]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[]);
    return { tenantId, alice, bob, pending, alertId };
  }

  itWith({ real: ['nats', 'postgres'] }, 'a deleted tenant is unknown to every report; once erased only its erased users and audit trail stay; created again it reports nothing of before', async () => {
    const { tenantId, alice, pending, alertId } = await tenantWithReport();
    const before = await reports(tenantId);
    assert.equal((before.signins as unknown[]).length, 3);
    assert.deepEqual((before.fraud as FraudQueryReply['items']).map((i) => i.alertId), [alertId]);
    assert.equal((before.blocked as unknown[]).length, 1);
    assert.deepEqual((before.usage as UsageQueryReply['items']).map((i) => [i.authentications, i.enabledUsers]), [[{ total: 3, success: 2, failure: 1 }, 2]], 'the pending sign-in has expired: a failure');
    const all = { signins: 3, deliveries: 1, fraud_alerts: 1, fraud_notifications: 1, block_history: 1, user_lifetimes: 2, user_erasures: 1, erased_users: 1, audit_log: 1 };
    assert.deepEqual(await rowsOf(tenantId), all);
    const trail = await auditTrail(tenantId);
    assert.equal(trail.length, 1);

    // tenants.delete: unknown at once, as a tenant never created; nothing deleted yet.
    const deletion = sequence([deleted(tenantId, '2026-11-03T10:00:00.000Z')]);
    await projection.projectTenants(deletion);
    assert.deepEqual(await reports(tenantId), unknownEverywhere);
    assert.deepEqual(await rowsOf(tenantId), all);
    // Its creation re-delivered (an older sequence) leaves it deleted.
    await projection.projectTenants([{ event: created(tenantId, '2026-10-01T00:00:00.000Z'), seq: 1 }]);
    assert.deepEqual(await reports(tenantId), unknownEverywhere);

    // The offboarding ends: every report row of the tenant goes, but its erased users and its audit trail.
    const erasure = sequence([erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z')]);
    await projection.projectTenants(erasure);
    const gone = { signins: 0, deliveries: 0, fraud_alerts: 0, fraud_notifications: 0, block_history: 0, user_lifetimes: 0, user_erasures: 0, erased_users: 1, audit_log: 1 };
    assert.deepEqual(await rowsOf(tenantId), gone);
    assert.deepEqual(await reports(tenantId), unknownEverywhere);
    assert.deepEqual(await auditTrail(tenantId), trail, 'the audit trail is kept for good');
    // Re-delivered: the same.
    await projection.projectTenants([...deletion, ...erasure]);
    assert.deepEqual(await rowsOf(tenantId), gone);

    // Late: the expiry of the challenge pending at the deletion, which occurred after the erasure
    // (10:10), projected before the id is created again: from after the erasure, it may be a new
    // tenant's whose creation is not projected yet, so it is stored, never served (the tenant is
    // unknown), until the id is created again.
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeExpired(pending))]));
    assert.deepEqual(await rowsOf(tenantId), { ...gone, signins: 1 });
    assert.deepEqual(await reports(tenantId), unknownEverywhere);

    // The id created again: a new tenant, known, with an empty report.
    const recreation = sequence([created(tenantId, '2026-11-10T00:00:00.000Z')]);
    await projection.projectTenants(recreation);
    assert.deepEqual(await reports(tenantId), emptyReport);
    assert.deepEqual(await rowsOf(tenantId), gone);

    // The new tenant's first sign-in (the same user id, a new user) is its report; the former
    // tenant's lifecycle re-delivered changes nothing.
    const fresh = testChallenge(testUser({ tenantId, userId: alice }), { method: 'totp', startedAt: '2026-11-11T09:00:00.000Z' });
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeStarted(fresh)), parsed(challengeApproved(fresh, { occurredAt: '2026-11-11T09:00:10.000Z' }))]));
    await projection.projectTenants([{ event: created(tenantId, '2026-10-01T00:00:00.000Z'), seq: 1 }, ...deletion, ...erasure]);
    const now = await reports(tenantId);
    assert.deepEqual((now.signins as SigninsQueryReply['items']).map((i) => [i.challengeId, i.userId, i.result]), [[fresh.challengeId, alice, 'success']]);
    assert.deepEqual(now.fraud, []);
    assert.deepEqual(now.blocked, []);
    assert.deepEqual((now.usage as UsageQueryReply['items']).map((i) => i.authentications), [{ total: 1, success: 1, failure: 0 }]);
    assert.deepEqual(await rowsOf(tenantId), { ...gone, signins: 1 });
  });

  /**
   * Everything of the tenant from before its deletion, as a consumer lagging behind the tenants'
   * lifecycle (or a full replay after TRUNCATE) projects it: a sign-in with its SMS, the start and
   * expiry of a challenge pending at the deletion, a fraud alert with its e-mail, a block, a
   * registration and the offboarding's erasure of a user. One event per table the erasure empties.
   */
  async function formerTenantsEvents(tenantId: string) {
    const carol = uniqueUser('carol');
    const user = testUser({ tenantId, userId: carol });
    const signedIn = testChallenge(user, { method: 'sms', startedAt: '2026-11-02T09:00:00.000Z' });
    const pending = testChallenge(user, { method: 'totp', startedAt: '2026-11-03T09:59:00.000Z', expiresAt: '2026-11-03T10:10:00.000Z' });
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        parsed(challengeStarted(signedIn)),
        parsed(challengeApproved(signedIn, { occurredAt: '2026-11-02T09:00:20.000Z' })),
        parsed(challengeStarted(pending)),
      ]),
    );
    // The expiry alone first (the start not projected yet: a row of the outcome's time), then both again.
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeExpired(pending, { occurredAt: '2026-11-03T09:59:59.000Z' }))]));
    await projection.projectDispatch(sequence<DispatchEvent>([parsed(smsSent(signedIn, { occurredAt: '2026-11-02T09:00:01.000Z' }))]));
    const alertId = randomUUID();
    await fraud.project(
      sequence([
        fraudEvent('FraudReported', tenantId, '2026-11-02T09:05:00.000Z', { userId: carol, alertId, source: 'app', challengeDenied: false, blocked: true }),
        fraudEvent('FraudNotificationSent', tenantId, '2026-11-02T09:05:01.000Z', { alertId, userId: carol, to: 'soc@contoso.example', messageId: '<2@x>', attempts: 1 }),
        fraudEvent('UserBlocked', tenantId, '2026-11-02T09:05:00.000Z', { userId: carol, reason: 'fraud reported', until: '2026-11-03T09:05:00.000Z', source: 'fraud_report' }),
      ]),
    );
    await fraud.projectUsers(
      sequence([
        parsed(userRegistered(user, { occurredAt: '2026-10-02T00:00:00.000Z' })),
        parsed(userErased(user, 1, '2026-11-03T10:01:00.000Z')),
      ]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[],
    );
    return { carol, signedIn, pending };
  }
  const NOTHING = { signins: 0, deliveries: 0, fraud_alerts: 0, fraud_notifications: 0, block_history: 0, user_lifetimes: 0, user_erasures: 0, erased_users: 0, audit_log: 0 };

  itWith({ real: ['nats', 'postgres'] }, 'events of a deleted tenant from before its deletion, projected once the deletion is known, are stored in no table', async () => {
    const tenantId = uniqueTenant('rep-offboard-late');
    await projection.projectTenants(sequence([created(tenantId, '2026-10-01T00:00:00.000Z'), deleted(tenantId, '2026-11-03T10:00:00.000Z')]));
    // Deleted, not erased yet: only the offboarding's erasure of the user, which comes after the
    // deletion, is stored (until the erasure ends the offboarding).
    await formerTenantsEvents(tenantId);
    assert.deepEqual(await rowsOf(tenantId), { ...NOTHING, user_erasures: 1 });
    await projection.projectTenants(sequence([erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z')]));
    // Erased: the same events again (a lagging consumer, a redelivery).
    await formerTenantsEvents(tenantId);
    assert.deepEqual(await rowsOf(tenantId), NOTHING);
    assert.deepEqual(await reports(tenantId), unknownEverywhere);
    // Created again: a new tenant with an empty report, and still nothing stored of the former one,
    // now also of what occurred after the erasure but before the creation (the expiry, at 10:10, of
    // the challenge pending at the deletion).
    await projection.projectTenants(sequence([created(tenantId, '2026-11-10T00:00:00.000Z')]));
    const { pending } = await formerTenantsEvents(tenantId);
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeExpired(pending))]));
    assert.deepEqual(await rowsOf(tenantId), NOTHING);
    assert.deepEqual(await reports(tenantId), emptyReport);
  });

  itWith({ real: ['nats', 'postgres'] }, 'a full replay projects the lifecycle and the other streams in any order: a tenant created again reports only its own rows', async () => {
    const tenantId = uniqueTenant('rep-offboard-replay');
    const lifecycle = [
      created(tenantId, '2026-10-01T00:00:00.000Z'),
      deleted(tenantId, '2026-11-03T10:00:00.000Z'),
      erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z'),
      created(tenantId, '2026-11-10T00:00:00.000Z'),
    ];
    // reporting-tenants caught up first (in one batch), the other consumers after it.
    await projection.projectTenants(sequence(lifecycle));
    await formerTenantsEvents(tenantId);
    // The new tenant's own sign-in, its SMS, its fraud alert and block, its user.
    const dave = testUser({ tenantId, userId: uniqueUser('dave') });
    const own = testChallenge(dave, { method: 'sms', startedAt: '2026-11-11T09:00:00.000Z' });
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeStarted(own)), parsed(challengeApproved(own, { occurredAt: '2026-11-11T09:00:10.000Z' }))]));
    await projection.projectDispatch(sequence<DispatchEvent>([parsed(smsSent(own, { occurredAt: '2026-11-11T09:00:01.000Z' }))]));
    const alertId = randomUUID();
    await fraud.project(
      sequence([
        fraudEvent('FraudReported', tenantId, '2026-11-11T09:05:00.000Z', { userId: dave.userId, alertId, source: 'app', challengeDenied: false, blocked: true }),
        fraudEvent('FraudNotificationSent', tenantId, '2026-11-11T09:05:01.000Z', { alertId, userId: dave.userId, to: 'soc@contoso.example', messageId: '<3@x>', attempts: 1 }),
        fraudEvent('UserBlocked', tenantId, '2026-11-11T09:05:00.000Z', { userId: dave.userId, reason: 'fraud reported', until: '2026-11-12T09:05:00.000Z', source: 'fraud_report' }),
      ]),
    );
    await fraud.projectUsers(sequence([parsed(userRegistered(dave, { occurredAt: '2026-11-10T01:00:00.000Z' }))]) as Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[]);
    const ownRows = { ...NOTHING, signins: 1, deliveries: 1, fraud_alerts: 1, fraud_notifications: 1, block_history: 1, user_lifetimes: 1 };
    assert.deepEqual(await rowsOf(tenantId), ownRows);
    const replayed = await reports(tenantId);
    assert.deepEqual((replayed.signins as SigninsQueryReply['items']).map((i) => [i.challengeId, i.result, i.delivery?.status]), [[own.challengeId, 'success', 'sent']]);
    assert.deepEqual((replayed.fraud as FraudQueryReply['items']).map((i) => [i.alertId, i.notifications]), [[alertId, { sent: 1, failed: 0 }]]);
    assert.deepEqual((replayed.blocked as BlockedQueryReply['items']).map((i) => i.userId), [dave.userId]);
    assert.deepEqual((replayed.usage as UsageQueryReply['items']).map((i) => [i.authentications, i.enabledUsers]), [[{ total: 1, success: 1, failure: 0 }, 1]]);
    // The lifecycle replayed once more changes nothing.
    await projection.projectTenants(sequence(lifecycle));
    assert.deepEqual(await rowsOf(tenantId), ownRows);
  });

  itWith({ real: ['nats', 'postgres'] }, 'a former tenant’s rows not deleted yet are never reported to the tenant created again', async () => {
    // The erasure and the re-creation committed (one batch of a full replay), the deletes not done
    // yet: a large tenant's take many statements, and an instance stopped midway leaves the rest
    // until the event is delivered again. The new tenant's reports read none of them meanwhile.
    const tenantId = uniqueTenant('rep-offboard-pending-deletes');
    await projection.projectTenants(sequence([created(tenantId, '2026-10-01T00:00:00.000Z')]));
    const { carol } = await formerTenantsEvents(tenantId);
    const before = { ...NOTHING, signins: 2, deliveries: 1, fraud_alerts: 1, fraud_notifications: 1, block_history: 1, user_lifetimes: 1, user_erasures: 1 };
    assert.deepEqual(await rowsOf(tenantId), before);
    // The tenants row as that batch leaves it, before any delete.
    await pool.query(
      "UPDATE tenants SET state = 'active', created_at = '2026-11-10T00:00:00Z', deleted_at = '2026-11-03T10:00:00Z', erased_at = '2026-11-03T10:05:00Z' WHERE tenant_id = $1",
      [tenantId],
    );
    assert.deepEqual(await rowsOf(tenantId), before);
    const now = await reports(tenantId);
    assert.deepEqual(now, emptyReport, `nothing of ${carol} reported`);
    // The batch delivered again completes the deletes.
    await projection.projectTenants(sequence([created(tenantId, '2026-11-10T00:00:00.000Z')]));
    assert.deepEqual(await rowsOf(tenantId), NOTHING);
  });

  itWith({ real: ['nats', 'postgres'] }, 'a former tenant’s row whose write began before its erasure committed is deleted with the others', async () => {
    const tenantId = uniqueTenant('rep-offboard-inflight');
    await projection.projectTenants(sequence([created(tenantId, '2026-10-01T00:00:00.000Z'), deleted(tenantId, '2026-11-03T10:00:00.000Z')]));
    // A projection's insert in flight: it read the tenants before the erasure committed, and
    // commits after the erasure's deletes would have looked.
    const writer = await pool.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(
        `INSERT INTO signins (tenant_id, challenge_id, occurred_at, user_id, result, result_detail, completed_at, result_seq, context_seq, last_event_seq)
         VALUES ($1, 'in-flight', '2026-11-03T09:00:00Z', 'u', 'success', 'ok', '2026-11-03T09:00:10Z', 1, 1, 1)`,
        [tenantId],
      );
      let ended = false;
      const erasing = projection.projectTenants(sequence([erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z')])).finally(() => {
        ended = true;
      });
      // The erasure waits for the write to end (one that did not would delete before the write
      // commits, and the row would stay): give it the time to get there, then end the write.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(ended, false, 'the erasure waits for the write begun before it');
      await writer.query('COMMIT');
      await erasing;
    } finally {
      writer.release();
    }
    assert.equal((await rowsOf(tenantId)).signins, 0);
  });

  itWith({ real: ['nats', 'postgres'] }, 'one batch holding the whole lifecycle is folded in stream order: created, deleted, erased, created again', async () => {
    const { tenantId } = await tenantWithReport();
    const [firstCreated] = await pool.query<{ seq: string }>('SELECT state_seq AS seq FROM tenants WHERE tenant_id = $1', [tenantId]).then((r) => r.rows);
    const lifecycle = sequence([
      deleted(tenantId, '2026-11-03T10:00:00.000Z'),
      erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z'),
      created(tenantId, '2026-11-10T00:00:00.000Z'),
    ]);
    const whole = [{ event: created(tenantId, '2026-10-01T00:00:00.000Z'), seq: Number(firstCreated!.seq) }, ...lifecycle];
    // In one batch, in any order: known again, nothing of before.
    await projection.projectTenants([...whole].reverse());
    assert.deepEqual(await reports(tenantId), emptyReport);
    assert.deepEqual(await rowsOf(tenantId), { signins: 0, deliveries: 0, fraud_alerts: 0, fraud_notifications: 0, block_history: 0, user_lifetimes: 0, user_erasures: 0, erased_users: 1, audit_log: 1 });
    // A batch that stops at the deletion: unknown.
    const other = await tenantWithReport();
    await projection.projectTenants(sequence([created(other.tenantId, '2026-10-01T00:00:00.000Z'), deleted(other.tenantId, '2026-11-03T10:00:00.000Z')]));
    assert.deepEqual(await reports(other.tenantId), unknownEverywhere);
  });

  itWith({ real: ['nats', 'postgres'] }, 'after a restore of the event log, which hands out sequences again, a later deletion or creation still counts', async () => {
    const { tenantId } = await tenantWithReport();
    // The report saw the deletion and erasure at high sequences; the restored log is behind them.
    const high = seq + 1_000_000;
    await projection.projectTenants([
      { event: deleted(tenantId, '2026-11-03T10:00:00.000Z'), seq: high },
      { event: erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z'), seq: high + 1 },
    ]);
    assert.deepEqual(await reports(tenantId), unknownEverywhere);
    // The id created again after the restore, at a sequence the report has seen: a new tenant all the same.
    await projection.projectTenants(sequence([created(tenantId, '2026-11-10T00:00:00.000Z')]));
    assert.deepEqual(await reports(tenantId), emptyReport);
    // And deleted again.
    await projection.projectTenants(sequence([deleted(tenantId, '2026-11-12T00:00:00.000Z')]));
    assert.deepEqual(await reports(tenantId), unknownEverywhere);
  });

  itWith({ real: ['nats', 'postgres'] }, 'a large tenant’s rows are deleted in several statements, every one of them', async () => {
    const tenantId = uniqueTenant('rep-offboard-large');
    await projection.projectTenants(sequence([created(tenantId, '2026-10-01T00:00:00.000Z')]));
    const many = FORMER_ROWS_PER_STATEMENT * 2 + 1;
    await pool.query(
      `INSERT INTO signins (tenant_id, challenge_id, occurred_at, user_id, result, result_detail, completed_at, result_seq, context_seq, last_event_seq)
       SELECT $1, 'c-' || g, $2::timestamptz + g * interval '1 second', 'u-' || (g % 100), 'success', 'ok', $2::timestamptz + g * interval '1 second', g, g, g
         FROM generate_series(1, $3::int) g`,
      [tenantId, '2026-11-01T00:00:00.000Z', many],
    );
    assert.equal((await rowsOf(tenantId)).signins, many);
    await projection.projectTenants(sequence([deleted(tenantId, '2026-11-03T10:00:00.000Z'), erased(tenantId, '2026-11-03T10:05:00.000Z', '2026-11-03T10:00:00.000Z')]));
    assert.equal((await rowsOf(tenantId)).signins, 0);
  });

  itWith({ real: ['nats', 'postgres'] }, 'the tenants consumer takes TenantDeleted and TenantErased from the stream', async () => {
    const tenantId = uniqueTenant('rep-offboard-js');
    const publisher = new EventPublisher(nats.js);
    const publish = (event: TenantEvent) => publisher.publish(EventSubjects.tenant(tenantId), event);
    const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
    const signins = () => ask<SigninsQueryReply>(Subjects.reportsSigninsQuery, { tenantId });
    await publish(created(tenantId, ago(10)));
    await eventually(async () => ((await signins()).error ? undefined : true), 60_000, 'the tenant to be known');
    const c = testChallenge(testUser({ tenantId, userId: uniqueUser() }), { method: 'totp', startedAt: ago(8) });
    await projection.projectChallenges(sequence<ChallengeEvent>([parsed(challengeStarted(c)), parsed(challengeApproved(c, { occurredAt: ago(7) }))]));
    assert.equal((await signins()).items.length, 1);

    await publish(deleted(tenantId, ago(6)));
    assert.deepEqual(await eventually(async () => (await signins()).error, 60_000, 'the tenant to be unknown'), UNKNOWN);
    await publish(erased(tenantId, ago(5), ago(6)));
    await eventually(async () => ((await rowsOf(tenantId)).signins === 0 ? true : undefined), 60_000, 'the report rows to be deleted');
    await publish(created(tenantId, ago(4)));
    assert.deepEqual(await eventually(async () => (await signins()).items, 60_000, 'the tenant to be known again'), []);
  });
});
