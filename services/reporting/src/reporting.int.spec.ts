import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  ContractError,
  EventSubjects,
  MAX_REQUEST_BYTES,
  parseEvent,
  ResultDetail,
  SigninsQueryReply,
  Subjects,
  type AnyEvent,
  type ChallengeEvent,
  type DispatchEvent,
  type SigninItem,
  type EventVersion,
  type TenantEvent,
} from '@mfa/contracts';
import { keyringFromMasterKey, loadKeyring } from '@mfa/crypto';
import { connectNats, createEvent, EventPublisher, requestJson, type NatsClients } from '@mfa/messaging';
import { sealPersonalData, UserDataKeys, type RunningService } from '@mfa/service-kit';
import {
  challengeApproved,
  challengeAttemptsExhausted,
  challengeCodeRejected,
  challengeExpired,
  challengeRegistrationRequired,
  challengeStarted,
  challengeStartedV2,
  eventually,
  itWith,
  smsDeliveryFailed,
  smsSent,
  tenantCreated,
  testChallenge,
  testEnv,
  testTenant,
  testUser,
  uniqueTenant,
  uniqueUser,
  userErased,
  type TestChallenge,
} from '@mfa/testing';
import { boot } from './boot.js';
import { loadReportingConfig } from './config.js';
import { AuditRepository } from './adapters/audit.repository.js';
import { ErasuresRepository } from './adapters/erasures.repository.js';
import { REPORT_CONNECTIONS_ON_PRIMARY } from './adapters/database.js';
import { FraudReportRepository } from './adapters/fraud-report.repository.js';
import { SigninsRepository } from './adapters/signins.repository.js';
import { UsageRepository } from './adapters/usage.repository.js';
import { AuditReportService } from './application/audit-report.service.js';
import { knownPseudonyms, pseudonymizer } from './application/pseudonyms.js';
import { ReportProjection } from './application/report-projection.js';
import { foldChallengeEvents, foldDispatchEvents, type Sequenced } from './domain/signin-projection.js';

// Real NATS and Postgres (the test database). Events are fed to the projection directly, with
// stream sequences the test controls, except in the last test, which goes through JetStream.
process.env.LOG_LEVEL ??= 'warn';

let service: RunningService;
let projection: ReportProjection;
let nats: NatsClients;
let pool: pg.Pool;
let seq = 1;

const T0 = Date.parse('2025-06-01T12:00:00.000Z');
const at = (offsetSeconds: number) => new Date(T0 + offsetSeconds * 1000);

interface Start {
  tenantId: string;
  userId: string;
  challengeId?: string;
  at?: Date;
  lifetimeSeconds?: number;
  method?: 'sms' | 'totp';
}
/** A challenge of the factory's user, started at T0; TOTP unless said, as an SMS row also depends on its delivery. */
function challenge(s: Start): TestChallenge {
  const startedAt = s.at ?? at(0);
  return testChallenge(testUser({ tenantId: s.tenantId, userId: s.userId }), {
    method: s.method ?? 'totp',
    startedAt: startedAt.toISOString(),
    ...(s.challengeId ? { challengeId: s.challengeId } : {}),
    ...(s.lifetimeSeconds !== undefined
      ? { expiresAt: new Date(startedAt.getTime() + s.lifetimeSeconds * 1000).toISOString() }
      : {}),
  });
}
const later = (c: TestChallenge, offsetSeconds: number) => new Date(Date.parse(c.startedAt) + offsetSeconds * 1000).toISOString();

// Through the same validation as the consumers apply to stored events.
const parsed = <E extends AnyEvent>(event: E) => parseEvent(event) as E;
const started = (c: TestChallenge) => parsed(challengeStarted(c));
const approved = (c: TestChallenge, offset = 20) => parsed(challengeApproved(c, { occurredAt: later(c, offset) }));
const expired = (c: TestChallenge) => parsed(challengeExpired(c));
const rejected = (c: TestChallenge, attempt: number) =>
  parsed(challengeCodeRejected(c, { occurredAt: later(c, attempt), data: { attempt } }));
const exhausted = (c: TestChallenge, lastCause: 'mismatch' | 'reused') =>
  parsed(challengeAttemptsExhausted(c, { occurredAt: later(c, 30), data: { lastCause } }));
const smsFailed = (c: TestChallenge) => parsed(smsDeliveryFailed(c, { occurredAt: later(c, 2) }));
const smsDelivered = (c: TestChallenge) => parsed(smsSent(c, { occurredAt: later(c, 1) }));
const tenantCreatedEvent = (tenantId: string) => parsed(tenantCreated(testTenant({ tenantId })));

const sequence = <E>(events: E[]): Sequenced<E>[] => events.map((e) => ({ event: e, seq: seq++ }));

async function newTenant(): Promise<string> {
  const tenantId = uniqueTenant('rep');
  await projection.projectTenants(sequence<TenantEvent>([tenantCreatedEvent(tenantId)]));
  return tenantId;
}

type Reply = SigninsQueryReply | { error: { code: string; message: string } };
const query = (body: unknown) => requestJson<Reply>(nats.nc, Subjects.reportsSigninsQuery, body);

async function page(body: Record<string, unknown>): Promise<SigninsQueryReply> {
  const reply = await query(body);
  if ('error' in reply) assert.fail(`query failed: ${JSON.stringify(reply.error)}`);
  return SigninsQueryReply.parse(reply);
}

async function all(body: Record<string, unknown>, limit = 3): Promise<SigninItem[]> {
  const items: SigninItem[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const reply = await page({ ...body, limit, ...(cursor ? { cursor } : {}) });
    items.push(...reply.items);
    if (!reply.nextCursor) return items;
    cursor = reply.nextCursor;
  }
  assert.fail('pagination did not end');
}

/** Every stored column of a tenant's rows, for comparing states. */
async function snapshot(tenantId: string): Promise<unknown[]> {
  const signins = await pool.query('SELECT * FROM signins WHERE tenant_id = $1 ORDER BY challenge_id', [tenantId]);
  const deliveries = await pool.query('SELECT * FROM deliveries WHERE tenant_id = $1 ORDER BY challenge_id', [tenantId]);
  const tenants = await pool.query('SELECT * FROM tenants WHERE tenant_id = $1', [tenantId]);
  return [signins.rows, deliveries.rows, tenants.rows];
}

const expectError = async (body: unknown, code: string) => {
  const reply = await query(body);
  assert.ok('error' in reply, `expected ${code}, got ${JSON.stringify(reply).slice(0, 200)}`);
  assert.equal(reply.error.code, code);
};

describe('reporting service (real NATS and Postgres)', () => {
  before(async () => {
    const config = loadReportingConfig({
      ...process.env,
      NATS_URL: testEnv.natsUrl,
      DATABASE_URL: testEnv.databaseUrl,
      HTTP_PORT: '0',
      NODE_ENV: 'test',
    });
    service = await boot(config);
    projection = service.app.get(ReportProjection);
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-test' });
    pool = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 });
  });

  after(async () => {
    await service?.stop();
    await nats?.nc.close();
    await pool?.end();
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports a start and its approval as one success row with every field', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const start = challenge({ tenantId, userId, method: 'sms' });
    await projection.projectChallenges(sequence<ChallengeEvent>([started(start), approved(start)]));
    await projection.projectDispatch(sequence<DispatchEvent>([smsDelivered(start)]));

    const reply = await page({ tenantId });
    assert.deepEqual(reply, {
      items: [
        {
          challengeId: start.challengeId,
          occurredAt: '2025-06-01T12:00:00.000Z',
          userId,
          displayName: 'Helga Nordin',
          email: 'helga.nordin@contoso.com',
          phoneNumber: '+14155550123',
          deviceToken: null,
          authMethod: 'sms',
          result: 'success',
          resultDetail: ResultDetail.success,
          serverName: 'mfa-1',
          serverIp: '10.0.0.5',
          via: 'nats',
          clientIp: '203.0.113.7',
          application: 'VPN',
          delivery: { status: 'sent', provider: 'twilio', error: null },
        },
      ],
    });
  });

  itWith({ real: ['nats', 'postgres'] }, 'converges on the same rows under re-delivery, re-ordering and full replay', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const a = challenge({ tenantId, userId, at: at(0) });
    const b = challenge({ tenantId, userId, at: at(10), method: 'sms' });
    const c = challenge({ tenantId, userId, at: at(20) });
    const batch1 = sequence<ChallengeEvent>([started(a), approved(a), started(b), rejected(b, 1)]);
    const batch2 = sequence<ChallengeEvent>([rejected(b, 2), exhausted(b, 'mismatch'), started(c), expired(c), approved(c, 500)]);
    const dispatch = sequence<DispatchEvent>([smsFailed(b), smsDelivered(b)]);

    await projection.projectChallenges(batch1);
    await projection.projectChallenges(batch2);
    await projection.projectDispatch(dispatch);
    const first = await snapshot(tenantId);
    const reported = await all({ tenantId });
    assert.equal(reported.length, 3);

    // Re-delivery of whole batches.
    await projection.projectChallenges(batch2);
    await projection.projectChallenges(batch1);
    await projection.projectDispatch(dispatch);
    assert.deepEqual(await snapshot(tenantId), first);

    // Full replay, one event at a time in reverse (outcomes before starts), then all at once.
    for (const item of [...batch1, ...batch2].reverse()) await projection.projectChallenges([item]);
    for (const item of [...dispatch].reverse()) await projection.projectDispatch([item]);
    await projection.projectChallenges([...batch1, ...batch2, ...batch1]);
    assert.deepEqual(await snapshot(tenantId), first);
    assert.deepEqual(await all({ tenantId }), reported);

    const byId = new Map(reported.map((i) => [i.challengeId, i]));
    assert.equal(byId.get(c.challengeId)?.resultDetail, ResultDetail.timedOut, 'the first outcome wins');
    assert.equal(byId.get(b.challengeId)?.resultDetail, ResultDetail.invalidCode);
    const stored = await pool.query('SELECT failed_attempts FROM signins WHERE tenant_id = $1 AND challenge_id = $2', [
      tenantId,
      b.challengeId,
    ]);
    assert.equal(stored.rows[0].failed_attempts, 5);
  });

  itWith({ real: ['nats', 'postgres'] }, 'builds a complete row when the outcome is projected before its start', async () => {
    const tenantId = await newTenant();
    const start = challenge({ tenantId, userId: uniqueUser() });
    const [s, o] = sequence<ChallengeEvent>([started(start), approved(start)]);
    await projection.projectChallenges([o!]);
    // Until its start is projected the row has the approval's time and no context: left out.
    assert.deepEqual((await page({ tenantId })).items, [], 'a row without its start is not reported');
    assert.deepEqual((await page({ tenantId, challengeId: start.challengeId })).items, []);
    await projection.projectChallenges([s!]);
    const [item] = (await page({ tenantId })).items;
    assert.equal(item?.occurredAt, start.startedAt);
    assert.equal(item?.displayName, 'Helga Nordin');
    assert.equal(item?.clientIp, '203.0.113.7');
    assert.equal(item?.result, 'success');
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports a row whose start never comes a minute after its outcome was projected, as the outcome has it', async () => {
    const tenantId = await newTenant();
    const start = challenge({ tenantId, userId: uniqueUser() });
    await projection.projectChallenges(sequence<ChallengeEvent>([approved(start)]));
    assert.deepEqual((await page({ tenantId })).items, []);
    // As if written two minutes ago (its start dead-lettered, say): no sign-in stays hidden for good.
    await pool.query("UPDATE signins SET projected_at = projected_at - interval '2 minutes' WHERE tenant_id = $1", [tenantId]);
    const [item] = (await page({ tenantId })).items;
    assert.deepEqual([item?.challengeId, item?.occurredAt, item?.result, item?.clientIp], [start.challengeId, later(start, 20), 'success', null]);
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports expired pending challenges as timed out or not delivered, and leaves in-progress ones out', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const timedOut = challenge({ tenantId, userId, at: at(0) });
    const undelivered = challenge({ tenantId, userId, at: at(1), method: 'sms' });
    const undeliveredExpired = challenge({ tenantId, userId, at: at(2), method: 'sms' });
    // Still running: expires long after any clock this test runs on.
    const inProgress = challenge({ tenantId, userId, at: new Date(), lifetimeSeconds: 10 * 365 * 24 * 3600 });
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        started(timedOut),
        started(undelivered),
        started(undeliveredExpired),
        expired(undeliveredExpired),
        started(inProgress),
      ]),
    );
    await projection.projectDispatch(sequence<DispatchEvent>([smsFailed(undelivered), smsFailed(undeliveredExpired)]));

    const items = (await page({ tenantId })).items;
    assert.deepEqual(
      items.map((i) => [i.challengeId, i.result, i.resultDetail]),
      [
        [undeliveredExpired.challengeId, 'failure', ResultDetail.smsNotDelivered],
        [undelivered.challengeId, 'failure', ResultDetail.smsNotDelivered],
        [timedOut.challengeId, 'failure', ResultDetail.timedOut],
      ],
    );
    // The derived result is what the filter matches.
    assert.equal((await page({ tenantId, result: 'failure' })).items.length, 3);
    assert.equal((await page({ tenantId, result: 'success' })).items.length, 0);
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports exhausted attempts and registration required with their details', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const wrong = challenge({ tenantId, userId, at: at(0) });
    const reused = challenge({ tenantId, userId, at: at(1) });
    const registration = (reason: 'no_method_registered' | 'method_disabled', offset: number) => {
      const c = testChallenge(testUser({ tenantId, userId }), {
        startedAt: at(offset).toISOString(),
        clientIp: '198.51.100.4',
        application: 'Outlook',
      });
      return parsed(challengeRegistrationRequired(c, { data: { method: reason === 'method_disabled' ? 'sms' : null, reason } }));
    };
    const none = registration('no_method_registered', 2);
    const disabled = registration('method_disabled', 3);
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        started(wrong),
        rejected(wrong, 1),
        exhausted(wrong, 'mismatch'),
        started(reused),
        exhausted(reused, 'reused'),
        none,
        disabled,
      ]),
    );

    const items = (await page({ tenantId })).items;
    assert.deepEqual(
      items.map((i) => [i.challengeId, i.result, i.resultDetail, i.authMethod]),
      [
        [disabled.data.challengeId, 'failure', ResultDetail.methodDisabled, 'sms'],
        [none.data.challengeId, 'failure', ResultDetail.registrationRequired, null],
        [reused.challengeId, 'failure', ResultDetail.duplicateCode, 'totp'],
        [wrong.challengeId, 'failure', ResultDetail.invalidCode, 'totp'],
      ],
    );
    const reg = items[1]!;
    assert.equal(reg.clientIp, '198.51.100.4');
    assert.equal(reg.application, 'Outlook');
    assert.equal(reg.occurredAt, at(2).toISOString());
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports a push reported as fraud from the app with the app’s device id as its device token; one reported otherwise, or by an older fraud, with none', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const push = (offset: number) => testChallenge(testUser({ tenantId, userId }), { method: 'push', startedAt: at(offset).toISOString() });
    const fraudReported = (c: TestChallenge, deviceId?: string) =>
      parsed(
        createEvent('ChallengeFraudReported', 1, {
          tenantId,
          aggregateId: c.challengeId,
          now: new Date(later(c, 15)),
          data: { challengeId: c.challengeId, userId, method: 'push', server: c.server, alertId: randomUUID(), ...(deviceId !== undefined ? { deviceId } : {}) },
        }),
      );
    const fromApp = push(0);
    const older = push(1);
    const deviceId = `${randomBytes(8).toString('base64url')}.${randomBytes(16).toString('base64url')}`;
    await projection.projectChallenges(sequence<ChallengeEvent>([started(fromApp), fraudReported(fromApp, deviceId), started(older), fraudReported(older)]));
    const items = (await page({ tenantId })).items;
    assert.deepEqual(
      items.map((i) => [i.challengeId, i.authMethod, i.result, i.resultDetail, i.deviceToken]),
      [
        [older.challengeId, 'push', 'failure', ResultDetail.fraud, null],
        [fromApp.challengeId, 'push', 'failure', ResultDetail.fraud, deviceId],
      ],
    );
  });

  itWith({ real: ['nats', 'postgres'] }, 'pages through every row exactly once, in order, also across equal timestamps', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    // Seven rows, three of them at the same instant: challenge id breaks the tie. Lowercase hex
    // ids, which Postgres orders as JavaScript does under any collation (mixed-case base64url
    // ids, as the factory makes, sort differently under a linguistic one such as en_US).
    const offsets = [0, 5, 5, 5, 9, 12, 30];
    const starts = offsets.map((o) => challenge({ tenantId, userId, at: at(o), challengeId: randomUUID() }));
    await projection.projectChallenges(sequence<ChallengeEvent>(starts.flatMap((s) => [started(s), approved(s)])));

    const expected = [...starts]
      .sort((x, y) => Date.parse(y.startedAt) - Date.parse(x.startedAt) || (y.challengeId < x.challengeId ? -1 : 1))
      .map((s) => s.challengeId);
    const first = await page({ tenantId, limit: 3 });
    assert.equal(first.items.length, 3);
    assert.ok(first.nextCursor);
    const items = await all({ tenantId }, 3);
    assert.deepEqual(
      items.map((i) => i.challengeId),
      expected,
    );
    assert.equal(new Set(items.map((i) => i.challengeId)).size, 7);
    const exact = await page({ tenantId, limit: 7 });
    assert.equal(exact.items.length, 7);
    assert.equal(exact.nextCursor, undefined, 'no cursor when nothing follows');
  });

  itWith({ real: ['nats', 'postgres'] }, 'takes only the cursors it issued, for this tenant: forged, truncated, tampered or foreign ones are invalid_request', async () => {
    const tenantId = await newTenant();
    const otherTenant = await newTenant();
    const userId = uniqueUser();
    for (const t of [tenantId, otherTenant]) {
      const starts = [0, 10, 20, 30].map((o) => challenge({ tenantId: t, userId, at: at(o), challengeId: randomUUID() }));
      await projection.projectChallenges(sequence<ChallengeEvent>(starts.flatMap((c) => [started(c), approved(c)])));
    }
    const first = await page({ tenantId, limit: 2 });
    const cursor = first.nextCursor!;
    assert.ok(cursor);
    const second = await page({ tenantId, limit: 2, cursor });
    assert.deepEqual(
      [...first.items, ...second.items].map((i) => i.occurredAt),
      [at(30), at(20), at(10), at(0)].map((d) => d.toISOString()),
      'an issued cursor continues where the page ended',
    );

    const [body, tag] = cursor.split('.') as [string, string];
    const last = first.items.at(-1)!;
    const position = [`${last.occurredAt.slice(0, -1)}000Z`, last.challengeId];
    // The unsigned form this report issued before its cursors were authenticated.
    await expectError({ tenantId, limit: 2, cursor: Buffer.from(JSON.stringify(position)).toString('base64url') }, 'invalid_request');
    // Forged: a position of the attacker's choosing, with the tag of another.
    const forged = Buffer.from(JSON.stringify(['2030-01-01T00:00:00.000000Z', last.challengeId])).toString('base64url');
    await expectError({ tenantId, limit: 2, cursor: `${forged}.${tag}` }, 'invalid_request');
    // Truncated.
    await expectError({ tenantId, limit: 2, cursor: cursor.slice(0, -1) }, 'invalid_request');
    await expectError({ tenantId, limit: 2, cursor: body }, 'invalid_request');
    // Tampered.
    await expectError({ tenantId, limit: 2, cursor: `${body}.${tag[0] === 'A' ? 'B' : 'A'}${tag.slice(1)}` }, 'invalid_request');
    await expectError({ tenantId, limit: 2, cursor: `${body.slice(0, -1)}${body.endsWith('A') ? 'B' : 'A'}.${tag}` }, 'invalid_request');
    // Another tenant's.
    await expectError({ tenantId: otherTenant, limit: 2, cursor }, 'invalid_request');
    const foreign = await query({ tenantId: otherTenant, cursor });
    assert.deepEqual(foreign, { error: { code: 'invalid_request', message: 'cursor: not a cursor this report issued' } });
    // The other tenant's own cursors still work for it.
    const other = await page({ tenantId: otherTenant, limit: 3 });
    assert.equal((await page({ tenantId: otherTenant, limit: 3, cursor: other.nextCursor! })).items.length, 1);
  });

  itWith({ real: ['nats', 'postgres'] }, 'filters by user, result and time range (from inclusive, to exclusive)', async () => {
    const tenantId = await newTenant();
    const helga = uniqueUser('helga');
    const sven = uniqueUser('sven');
    const h1 = challenge({ tenantId, userId: helga, at: at(0) });
    const h2 = challenge({ tenantId, userId: helga, at: at(60) });
    const s1 = challenge({ tenantId, userId: sven, at: at(120) });
    const s2 = challenge({ tenantId, userId: sven, at: at(180) });
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        started(h1),
        approved(h1),
        started(h2),
        exhausted(h2, 'mismatch'),
        started(s1),
        approved(s1),
        started(s2),
        expired(s2),
      ]),
    );
    const ids = async (body: Record<string, unknown>) => (await all({ tenantId, ...body })).map((i) => i.challengeId);
    const id = (c: TestChallenge) => c.challengeId;

    assert.deepEqual(await ids({ userId: helga }), [id(h2), id(h1)]);
    assert.deepEqual(await ids({ result: 'success' }), [id(s1), id(h1)]);
    assert.deepEqual(await ids({ result: 'failure', userId: sven }), [id(s2)]);
    assert.deepEqual(await ids({ from: at(60).toISOString(), to: at(180).toISOString() }), [id(s1), id(h2)]);
    assert.deepEqual(await ids({ from: '2025-06-01T14:01:00+02:00' }), [id(s2), id(s1), id(h2)], 'offsets are honoured');
    assert.deepEqual(await ids({ to: at(0).toISOString() }), []);
    assert.deepEqual(await ids({ userId: 'nobody@contoso.example' }), []);
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports RADIUS sign-ins via radius with the RADIUS client as server, whatever order the events come in, and filters on via', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const radius: TestChallenge = { ...challenge({ tenantId, userId, at: at(0) }), server: { name: 'vpn-gateway', ip: '192.0.2.10' }, via: 'radius' };
    const overNats = challenge({ tenantId, userId, at: at(10) });
    // The approval was decided by an auth-challenge instance, and is projected before the start.
    const decidedHere = parsed(challengeApproved({ ...radius, server: { name: 'auth-challenge-1', ip: '10.0.0.5' } }, { occurredAt: later(radius, 20) }));
    const [approval, start] = sequence<ChallengeEvent>([decidedHere, started(radius)]);
    await projection.projectChallenges([approval!]);
    await projection.projectChallenges([start!]);
    await projection.projectChallenges(sequence<ChallengeEvent>([started(overNats), approved(overNats)]));

    const items = await all({ tenantId });
    const byId = new Map(items.map((i) => [i.challengeId, i]));
    const r = byId.get(radius.challengeId)!;
    assert.deepEqual([r.via, r.serverName, r.serverIp, r.result, r.clientIp], ['radius', 'vpn-gateway', '192.0.2.10', 'success', '203.0.113.7']);
    assert.deepEqual([byId.get(overNats.challengeId)?.via, byId.get(overNats.challengeId)?.serverName], ['nats', 'mfa-1']);
    const stored = await pool.query('SELECT via, server_name FROM signins WHERE tenant_id = $1 AND challenge_id = $2', [tenantId, radius.challengeId]);
    assert.deepEqual(stored.rows, [{ via: 'radius', server_name: 'vpn-gateway' }]);

    assert.deepEqual((await all({ tenantId, via: 'radius' })).map((i) => i.challengeId), [radius.challengeId]);
    assert.deepEqual((await all({ tenantId, via: 'nats' })).map((i) => i.challengeId), [overNats.challengeId]);
    await expectError({ tenantId, via: 'ldap' }, 'invalid_request');
  });

  itWith({ real: ['nats', 'postgres'] }, 'answers not_found for an unknown tenant', async () => {
    await expectError({ tenantId: uniqueTenant('never') }, 'not_found');
    const reply = await query({ tenantId: uniqueTenant('never') });
    assert.deepEqual(reply, { error: { code: 'not_found', message: 'unknown tenant' } });
  });

  itWith({ real: ['nats', 'postgres'] }, 'answers invalid_request to bad input and keeps answering', async () => {
    const tenantId = await newTenant();
    await expectError('{"tenantId": ', 'invalid_request');
    await expectError('[]', 'invalid_request');
    await expectError(new Uint8Array([0xff, 0xfe, 0x00]), 'invalid_request');
    await expectError({}, 'invalid_request');
    await expectError({ tenantId: 42 }, 'invalid_request');
    await expectError({ tenantId, limit: 0 }, 'invalid_request');
    await expectError({ tenantId, limit: 1000 }, 'invalid_request');
    await expectError({ tenantId, limit: '5' }, 'invalid_request');
    await expectError({ tenantId, result: 'maybe' }, 'invalid_request');
    await expectError({ tenantId, from: 'yesterday' }, 'invalid_request');
    await expectError({ tenantId, from: '2025-06-02T00:00:00Z', to: '2025-06-01T00:00:00Z' }, 'invalid_request');
    await expectError({ tenantId, from: '0000-01-01T00:00:00Z' }, 'invalid_request');
    await expectError({ tenantId, cursor: 'not-a-cursor' }, 'invalid_request');
    await expectError({ tenantId, cursor: Buffer.from('["x","y"]').toString('base64url') }, 'invalid_request');
    await expectError({ tenantId, userId: 'x'.repeat(MAX_REQUEST_BYTES) }, 'invalid_request');

    assert.deepEqual(await page({ tenantId }), { items: [] });
    const health = await fetch(`${service.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', checks: { nats: 'ok', postgres: 'ok' } });
  });

  itWith({ real: ['nats', 'postgres'] }, 'projects events published to the streams through its durable consumers', async () => {
    const tenantId = uniqueTenant('rep-js');
    const publisher = new EventPublisher(nats.js);
    const start = challenge({ tenantId, userId: uniqueUser(), at: new Date(Date.now() - 60_000) });
    const publish = (subject: string, e: AnyEvent) => publisher.publish(subject, e);
    await publish(EventSubjects.tenant(tenantId), tenantCreatedEvent(tenantId));
    await publish(EventSubjects.challengeStarted('totp'), started(start));
    await publish(EventSubjects.challengeApproved, approved(start));
    // Published again (a producer retry with the same id is de-duplicated by JetStream; a new
    // id is a second delivery the projection must absorb).
    await publish(EventSubjects.challengeApproved, { ...approved(start), id: randomUUID() });

    const items = await eventually(
      async () => {
        const reply = await query({ tenantId });
        return 'items' in reply && reply.items.length > 0 ? reply.items : undefined;
      },
      60_000,
      'the consumers to project the published events',
    );
    assert.equal(items.length, 1);
    assert.equal(items[0]?.challengeId, start.challengeId);
    assert.equal(items[0]?.result, 'success');
  });

  itWith({ real: ['nats', 'postgres'] }, 'reports a receipt recorded before the SmsSent of its own message, whichever of the two is projected first', async () => {
    const tenantId = await newTenant();
    const c = challenge({ tenantId, userId: uniqueUser(), method: 'sms' });
    await projection.projectChallenges(sequence<ChallengeEvent>([started(c)]));
    const sent = parsed(smsSent(c, { occurredAt: later(c, 1.2) }));
    const receipt = parsed({
      ...sent,
      id: randomUUID(),
      type: 'SmsDeliveryReported',
      occurredAt: later(c, 1),
      data: { challengeId: c.challengeId, provider: 'twilio', providerMessageId: sent.data.providerMessageId, status: 'undelivered', errorCode: '30005' },
    } as AnyEvent) as DispatchEvent;
    // In the stream the receipt comes first: the SMSC answered before dispatch recorded the send.
    const [r, s] = sequence<DispatchEvent>([receipt, sent]);
    const stored = async () =>
      (await pool.query('SELECT status, provider, message_id, attempts, error, occurred_at, event_seq FROM deliveries WHERE tenant_id = $1 AND challenge_id = $2', [tenantId, c.challengeId])).rows;
    // What projecting the stream in order stores: the receipt.
    const inOrder = [{ status: 'undelivered', provider: 'twilio', message_id: sent.data.providerMessageId, attempts: 1, error: '30005', occurred_at: new Date(later(c, 1)), event_seq: String(r!.seq) }];

    // Two instances, or a batch retried event by event: the SmsSent is written first.
    await projection.projectDispatch([s!]);
    await projection.projectDispatch([r!]);
    assert.deepEqual(await stored(), inOrder);
    const [item] = (await page({ tenantId })).items;
    assert.deepEqual([item?.resultDetail, item?.delivery], [ResultDetail.smsNotDelivered, { status: 'undelivered', provider: 'twilio', error: '30005' }]);
    // Replays converge on it: both at once, and each again in either order.
    await projection.projectDispatch([r!, s!]);
    await projection.projectDispatch([s!]);
    await projection.projectDispatch([r!]);
    assert.deepEqual(await stored(), inOrder);

    // A later send of another message (a resend) replaces the receipt, and the earlier events redelivered leave it.
    const resent = sequence<DispatchEvent>([parsed(smsSent(c, { occurredAt: later(c, 40) }))]);
    await projection.projectDispatch(resent);
    await projection.projectDispatch([s!]);
    await projection.projectDispatch([r!]);
    assert.deepEqual((await stored()).map((row) => [row.status, row.event_seq]), [['sent', String(resent[0]!.seq)]]);
    assert.equal((await page({ tenantId })).items[0]?.resultDetail, ResultDetail.timedOut);
  });

  /**
   * Whether a batch's upsert locks its rows in key order: a row of the batch later in key order is
   * held by another transaction, so the upsert waits there; the rows before it are locked by then,
   * the rows after it not yet.
   */
  async function locksInKeyOrder(table: 'signins' | 'deliveries', write: (pool: pg.Pool) => Promise<void>, first: string, second: string, tenantId: string): Promise<boolean> {
    const application = `reporting-lock-order-${randomUUID().slice(0, 8)}`;
    const writer = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 1, application_name: application });
    const [holder, prober] = [new pg.Client({ connectionString: testEnv.databaseUrl }), new pg.Client({ connectionString: testEnv.databaseUrl })];
    await Promise.all([holder.connect(), prober.connect()]);
    const row = `SELECT 1 FROM ${table} WHERE tenant_id = $1 AND challenge_id = $2 FOR UPDATE`;
    try {
      await holder.query('BEGIN');
      await holder.query(row, [tenantId, second]);
      const writing = write(writer);
      await eventually(async () => {
        const { rows } = await pool.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [application]);
        return rows.length === 1 ? true : undefined;
      }, 10_000, 'the upsert to wait for the held row');
      await prober.query('BEGIN');
      const firstLocked = await prober.query(`${row} NOWAIT`, [tenantId, first]).then(
        () => false,
        (error: { code?: string }) => (error.code === '55P03' ? true : Promise.reject(error)),
      );
      await prober.query('ROLLBACK');
      await holder.query('ROLLBACK');
      await writing;
      return firstLocked;
    } finally {
      await Promise.all([holder.end(), prober.end()]);
      await writer.end();
    }
  }

  itWith({ real: ['nats', 'postgres'] }, 'writes the rows of a batch in key order, whatever order their first events came in, so two instances never deadlock', async () => {
    const tenantId = await newTenant();
    const userId = uniqueUser();
    const suffix = randomUUID();
    const [a, b] = ['a', 'b'].map((k) => challenge({ tenantId, userId, method: 'sms', challengeId: `${k}-${suffix}` })) as [TestChallenge, TestChallenge];
    // The batch meets b's events first.
    const starts = sequence<ChallengeEvent>([started(b), started(a)]);
    const sends = sequence<DispatchEvent>([smsDelivered(b), smsDelivered(a)]);
    await projection.projectChallenges(starts);
    await projection.projectDispatch(sends);
    const before = await snapshot(tenantId);

    const pseudonymOf = pseudonymizer(loadKeyring({}).keyring);
    const signins = (writer: pg.Pool) =>
      new SigninsRepository(writer).applySignins(foldChallengeEvents(starts).map((p) => ({ ...p, pseudonym: pseudonymOf(p.tenantId, p.userId) })));
    const deliveries = (writer: pg.Pool) => new SigninsRepository(writer).applyDeliveries(foldDispatchEvents(sends));
    assert.equal(await locksInKeyOrder('signins', signins, a.challengeId, b.challengeId, tenantId), true, 'sign-ins: a locked while b is waited for');
    assert.equal(await locksInKeyOrder('deliveries', deliveries, a.challengeId, b.challengeId, tenantId), true, 'deliveries: a locked while b is waited for');
    assert.deepEqual(await snapshot(tenantId), before);
  });

  itWith({ real: ['postgres'] }, 'answers unavailable to a report query stopped by the statement timeout, in every report', async () => {
    const tenantId = await newTenant();
    // Report reads on a pool with a short statement timeout, while another session holds their tables.
    const impatient = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2, statement_timeout: 200 });
    const holder = new pg.Client({ connectionString: testEnv.databaseUrl });
    await holder.connect();
    const unavailable = (e: unknown) => e instanceof ContractError && e.code === 'unavailable' && /took too long/.test(e.message);
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE signins, audit_log, fraud_alerts, block_history IN ACCESS EXCLUSIVE MODE');
      await assert.rejects(new SigninsRepository(pool, impatient).findSignins({ tenantId, now: new Date(), limit: 10 }), unavailable, 'sign-ins');
      await assert.rejects(new AuditRepository(pool, impatient).find({ tenantId, limit: 10 }), unavailable, 'audit');
      await assert.rejects(new FraudReportRepository(pool, impatient).findAlerts({ tenantId, limit: 10 }), unavailable, 'fraud');
      await assert.rejects(new FraudReportRepository(pool, impatient).findBlocks({ tenantId, limit: 10 }), unavailable, 'blocked');
      await assert.rejects(new UsageRepository(pool, impatient).counts(tenantId, at(0), at(86_400), 'day', at(0)), unavailable, 'usage');
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
      await impatient.end();
    }
  });

  itWith({ real: ['nats', 'postgres'] }, 'keeps projecting while slow report queries take every connection reports may have', async () => {
    const tenantId = await newTenant();
    const audit = service.app.get(AuditReportService);
    const holder = new pg.Client({ connectionString: testEnv.databaseUrl });
    await holder.connect();
    try {
      // Ten report queries that cannot finish while the audit trail is held.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE');
      const reports = Array.from({ length: 10 }, () => audit.query({ tenantId, limit: 10 }, loadKeyring({}).keyring));
      await eventually(async () => {
        const { rows } = await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE NOT l.granted AND l.relation = 'audit_log'::regclass AND a.application_name LIKE 'mfa-reporting%'`,
        );
        return rows[0]!.n >= REPORT_CONNECTIONS_ON_PRIMARY ? true : undefined;
      }, 10_000, 'the report queries to wait for the audit trail');
      // A projection batch meanwhile gets a connection (it would wait for one, then fail, on a shared pool).
      const created = uniqueTenant('rep-busy');
      await projection.projectTenants(sequence<TenantEvent>([tenantCreatedEvent(created)]));
      assert.equal((await pool.query('SELECT 1 FROM tenants WHERE tenant_id = $1', [created])).rowCount, 1);
      await holder.query('ROLLBACK');
      assert.deepEqual(await Promise.all(reports), Array.from({ length: 10 }, () => ({ items: [] })));
    } finally {
      await holder.end();
    }
  });

  describe('erased users', () => {
    const keyring = loadKeyring({}).keyring;
    const pseudonymOf = pseudonymizer(keyring);
    let keys: UserDataKeys;
    const personalValues = ['Helga Nordin', 'helga.nordin@contoso.com', '+14155550123'];

    before(() => {
      keys = new UserDataKeys(nats, keyring);
    });

    /** A v2 start, its personal data sealed under the user's current data key, as auth-challenge records it. */
    async function startedV2(c: TestChallenge, minGen = 1): Promise<EventVersion<'ChallengeStarted', 2>> {
      const key = await keys.getOrCreate(c.tenantId, c.userId, { minGen });
      return parsed(challengeStartedV2(c, sealPersonalData(key, { tenantId: c.tenantId, userId: c.userId, purpose: 'challenge' }, c.profile)));
    }
    const erasedAt = (offsetSeconds: number) => at(offsetSeconds).toISOString();
    async function rowsOf(tenantId: string): Promise<Array<Record<string, unknown>>> {
      const { rows } = await pool.query('SELECT challenge_id, user_id, display_name, email, phone_number, pii, user_gen FROM signins WHERE tenant_id = $1', [tenantId]);
      return rows;
    }
    const noPersonalData = (rows: Array<Record<string, unknown>>) =>
      rows.every((r) => r.display_name === null && r.email === null && r.phone_number === null && r.pii === null);

    itWith({ real: ['nats', 'postgres'] }, 'stores the personal data of v2 starts sealed, and opens it with the user’s data key when the report is read', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser();
      const start = challenge({ tenantId, userId, method: 'sms' });
      const event = await startedV2(start);
      await projection.projectChallenges(sequence<ChallengeEvent>([event, approved(start)]));
      const [stored] = await rowsOf(tenantId);
      assert.deepEqual([stored?.display_name, stored?.email, stored?.phone_number, stored?.pii, stored?.user_gen], [null, null, null, event.data.pii, 1]);
      const { rows: clear } = await pool.query('SELECT 1 FROM signins WHERE tenant_id = $1 AND row_to_json(signins)::text ~ $2', [tenantId, 'Helga Nordin|helga.nordin@contoso.com|4155550123']);
      assert.equal(clear.length, 0, 'nothing personal in clear in the stored row');
      const [item] = (await page({ tenantId })).items;
      assert.deepEqual([item?.userId, item?.displayName, item?.email, item?.phoneNumber], [userId, ...personalValues]);
    });

    itWith({ real: ['nats', 'postgres'] }, 'reports a row whose key was destroyed before the erasure reached the report by pseudonym, without personal data', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('shredded');
      const start = challenge({ tenantId, userId, method: 'sms' });
      await projection.projectChallenges(sequence<ChallengeEvent>([await startedV2(start), approved(start)]));
      // users.delete destroyed the key; its UserErased has not been projected yet.
      await keys.erase(tenantId, userId, 1, at(5));
      const [item] = (await page({ tenantId })).items;
      assert.deepEqual([item?.userId, item?.displayName, item?.email, item?.phoneNumber], [pseudonymOf(tenantId, userId), null, null, null]);
    });

    itWith({ real: ['nats', 'postgres'] }, 'reports a row whose sealed value does not open without its personal data, and the rest of the page in full', async () => {
      const tenantId = await newTenant();
      const [damaged, fine] = [challenge({ tenantId, userId: uniqueUser('damaged'), at: at(0) }), challenge({ tenantId, userId: uniqueUser('fine'), at: at(1) })];
      const good = await startedV2(fine);
      // Sealed for another user: it does not open under this user's key (the AAD names the user).
      const foreign = await startedV2({ ...damaged, userId: fine.userId });
      const misplaced = parsed({ ...(await startedV2(damaged)), data: { ...(await startedV2(damaged)).data, pii: foreign.data.pii } });
      await projection.projectChallenges(sequence<ChallengeEvent>([misplaced, approved(damaged), good, approved(fine)]));
      const items = (await page({ tenantId })).items;
      assert.deepEqual(
        items.map((i) => [i.userId, i.displayName]),
        [
          [fine.userId, 'Helga Nordin'],
          [damaged.userId, null],
        ],
      );
    });

    itWith({ real: ['nats', 'postgres'] }, 'keeps only the pseudonym in the rows of an erased user, also in rows projected afterwards', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('gone');
      const other = uniqueUser('stays');
      const pseudonym = pseudonymOf(tenantId, userId);
      assert.match(pseudonym, /^erased:[A-Za-z0-9_-]{16}$/);
      const v1 = challenge({ tenantId, userId, at: at(0) });
      const v2 = challenge({ tenantId, userId, at: at(10), method: 'sms' });
      const late = challenge({ tenantId, userId, at: at(20) });
      const lateOutcomeFirst = challenge({ tenantId, userId, at: at(30) });
      const theirs = challenge({ tenantId, userId: other, at: at(40) });
      await projection.projectChallenges(sequence<ChallengeEvent>([started(v1), approved(v1), await startedV2(v2), approved(v2), started(theirs)]));
      const lateStart = await startedV2(late);

      // users.delete: the key is destroyed, then reporting handles UserErased.
      await keys.erase(tenantId, userId, 1, at(35));
      await projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(35)))]));
      const rows = await rowsOf(tenantId);
      const erased = rows.filter((r) => r.challenge_id !== theirs.challengeId);
      assert.equal(erased.length, 2);
      assert.ok(erased.every((r) => r.user_id === pseudonym) && noPersonalData(erased));
      const kept = rows.find((r) => r.challenge_id === theirs.challengeId)!;
      assert.deepEqual([kept.user_id, kept.display_name], [other, 'Helga Nordin'], 'another user keeps everything');

      // Events of the erased user projected afterwards: a v2 start (its key is gone), a v1 start
      // with the profile in clear, an outcome ahead of its start.
      await projection.projectChallenges(sequence<ChallengeEvent>([lateStart, approved(late), approved(lateOutcomeFirst), started(lateOutcomeFirst)]));
      const after = (await rowsOf(tenantId)).filter((r) => r.challenge_id !== theirs.challengeId);
      assert.equal(after.length, 4);
      assert.ok(after.every((r) => r.user_id === pseudonym) && noPersonalData(after), JSON.stringify(after));
      // The report answers by pseudonym; the user id finds nothing.
      assert.equal((await page({ tenantId, userId })).items.length, 0);
      assert.equal((await page({ tenantId, userId: pseudonym })).items.length, 4);

      // The same user id registered again is a new user (key generation 2): reported in full.
      const again = challenge({ tenantId, userId, at: at(50) });
      const renewed = await startedV2(again, 2);
      assert.match(renewed.data.pii!, /^d1\.2\./);
      await projection.projectChallenges(sequence<ChallengeEvent>([renewed]));
      const row = (await rowsOf(tenantId)).find((r) => r.challenge_id === again.challengeId)!;
      assert.deepEqual([row.user_id, row.pii, row.user_gen], [userId, renewed.data.pii, 2]);
      const renewedItem = (await page({ tenantId, userId })).items.find((i) => i.challengeId === again.challengeId);
      assert.equal(renewedItem?.displayName, 'Helga Nordin');
      // A sign-in of the new user whose start sealed nothing (a user without a name, e-mail or
      // phone, or a tenant reporting none of them) is theirs too: its start names the key's generation.
      const bare = challenge({ tenantId, userId, at: at(60) });
      const bareStart = challengeStartedV2(bare);
      bareStart.data.keyGen = 2;
      await projection.projectChallenges(sequence<ChallengeEvent>([parsed(bareStart), approved(bare)]));
      const bareRow = (await rowsOf(tenantId)).find((r) => r.challenge_id === bare.challengeId)!;
      assert.deepEqual([bareRow.user_id, bareRow.user_gen], [userId, 2]);
      assert.deepEqual((await page({ tenantId, userId })).items.map((i) => i.challengeId).sort(), [again.challengeId, bare.challengeId].sort());
      // Replaying the old erasure changes nothing of the new user.
      await projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(35)))]));
      assert.deepEqual(
        (await rowsOf(tenantId)).filter((r) => r.challenge_id === again.challengeId || r.challenge_id === bare.challengeId).map((r) => r.user_id),
        [userId, userId],
      );
    });

    itWith({ real: ['nats', 'postgres'] }, 'keeps the pseudonym of a user erased before a master key rotation in rows projected after it, and on the erasure replayed', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('rotated');
      const pseudonym = pseudonymOf(tenantId, userId);
      const before = challenge({ tenantId, userId, at: at(0) });
      await projection.projectChallenges(sequence<ChallengeEvent>([started(before), approved(before)]));
      await projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(35)))]));

      // A reporting instance after the rotation: new master key, the one erasing above kept as previous.
      const newKey = randomBytes(32);
      const rotated = keyringFromMasterKey(newKey, [keyring]);
      assert.notEqual(pseudonymizer(rotated)(tenantId, userId), pseudonym, 'the rotation changes the tag');
      const afterRotation = new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, knownPseudonyms(rotated), new ErasuresRepository(pool));
      // Events of the erased user projected only now (a lagging consumer, a replay of the report):
      // a v1 start with the profile in clear and its outcome, an outcome ahead of its start.
      const late = challenge({ tenantId, userId, at: at(20) });
      const outcomeFirst = challenge({ tenantId, userId, at: at(30) });
      await afterRotation.projectChallenges(sequence<ChallengeEvent>([started(late), approved(late), approved(outcomeFirst)]));
      await afterRotation.projectChallenges(sequence<ChallengeEvent>([started(outcomeFirst)]));
      // An audited action on the user before the erasure, projected now.
      const action = parsed({ id: randomUUID(), type: 'AdminActionRecorded', version: 1, tenantId, aggregateId: tenantId, occurredAt: erasedAt(10), metadata: {}, data: { subject: Subjects.usersUnblock, userId, outcome: 'ok', clientId: 'platform' } } as const);
      await new AuditRepository(pool).append(sequence([action]), knownPseudonyms(rotated));
      assert.deepEqual((await rowsOf(tenantId)).map((r) => r.user_id), [pseudonym, pseudonym, pseudonym], 'projected after the rotation: by the pseudonym');
      // A row an earlier release projected after the rotation (matching the current key's
      // pseudonym only) kept the user id; the erasure delivered again (a replay of
      // reporting-erasures) gives it the pseudonym recorded at the erasure.
      const legacy = challenge({ tenantId, userId, at: at(31) });
      await new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, pseudonymizer(rotated), new ErasuresRepository(pool))
        .projectChallenges(sequence<ChallengeEvent>([started(legacy), approved(legacy)]));
      assert.equal((await rowsOf(tenantId)).find((r) => r.challenge_id === legacy.challengeId)?.user_id, userId);
      await afterRotation.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(35)))]));

      const rows = await rowsOf(tenantId);
      assert.equal(rows.length, 4);
      assert.deepEqual(rows.map((r) => r.user_id), [pseudonym, pseudonym, pseudonym, pseudonym], 'every row by the pseudonym recorded at the erasure');
      assert.ok(noPersonalData(rows), JSON.stringify(rows));
      const { rows: audited } = await pool.query('SELECT user_id FROM audit_log WHERE tenant_id = $1', [tenantId]);
      assert.deepEqual(audited.map((r) => r.user_id), [pseudonym]);
      assert.equal((await page({ tenantId, userId })).items.length, 0, 'the user id finds nothing');

      // Once the key of the erasure has left MFA_PREVIOUS_ENCRYPTION_KEYS, the erasure replayed
      // above under the new key still matches the user's rows, which keep the first pseudonym.
      const oldKeyDropped = keyringFromMasterKey(newKey);
      const afterRemoval = new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, knownPseudonyms(oldKeyDropped), new ErasuresRepository(pool));
      const latest = challenge({ tenantId, userId, at: at(32) });
      await afterRemoval.projectChallenges(sequence<ChallengeEvent>([started(latest), approved(latest)]));
      const lateAction = parsed({ id: randomUUID(), type: 'AdminActionRecorded', version: 1, tenantId, aggregateId: tenantId, occurredAt: erasedAt(11), metadata: {}, data: { subject: Subjects.usersUnblock, userId, outcome: 'ok', clientId: 'platform' } } as const);
      await new AuditRepository(pool).append(sequence([lateAction]), knownPseudonyms(oldKeyDropped));
      // A second rotation, the removed key's successor kept as previous: the erasure replayed once
      // more is recorded under the newest key too, still naming the first pseudonym.
      const thirdKey = randomBytes(32);
      const third = keyringFromMasterKey(thirdKey, [oldKeyDropped]);
      await new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, knownPseudonyms(third), new ErasuresRepository(pool))
        .projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(35)))]));
      const newest = challenge({ tenantId, userId, at: at(33) });
      await new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, knownPseudonyms(keyringFromMasterKey(thirdKey)), new ErasuresRepository(pool))
        .projectChallenges(sequence<ChallengeEvent>([started(newest), approved(newest)]));
      const final = await rowsOf(tenantId);
      assert.equal(final.length, 6);
      assert.deepEqual(final.map((r) => r.user_id), Array(6).fill(pseudonym), 'one erased user, one pseudonym: the first erasure\'s, never the user id');
      assert.ok(noPersonalData(final), JSON.stringify(final));
      const { rows: auditedLater } = await pool.query('SELECT user_id FROM audit_log WHERE tenant_id = $1', [tenantId]);
      assert.deepEqual(auditedLater.map((r) => r.user_id), [pseudonym, pseudonym]);
      assert.equal((await page({ tenantId, userId: pseudonym })).items.length, 6, 'countable together');
    });

    itWith({ real: ['nats', 'postgres'] }, 'records an erasure replayed after a rotation under the new key with the latest erasure of the user, not the replayed one', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('twice');
      // Erased, registered again and erased again (generation 2), all before the rotation.
      await projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 2, erasedAt(100)))]));
      const newKey = randomBytes(32);
      const rotated = keyringFromMasterKey(newKey, [keyring]);
      // Only the first erasure is delivered again after the rotation.
      await new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, knownPseudonyms(rotated), new ErasuresRepository(pool))
        .projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(35)))]));
      // The old key dropped: a sign-in of the second registration, projected late, is still theirs.
      const second = challenge({ tenantId, userId, at: at(90) });
      const start = challengeStartedV2(second);
      start.data.keyGen = 2;
      await new ReportProjection(new SigninsRepository(pool), { evict: () => undefined }, knownPseudonyms(keyringFromMasterKey(newKey)), new ErasuresRepository(pool))
        .projectChallenges(sequence<ChallengeEvent>([parsed(start), approved(second)]));
      const [row] = await rowsOf(tenantId);
      assert.deepEqual([row?.user_id, row?.user_gen], [pseudonymOf(tenantId, userId), 2], 'by the pseudonym of the erasure, recorded before the rotation');
    });

    itWith({ real: ['nats', 'postgres'] }, 'leaves no row behind when an erasure runs while batches of that user are projected', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('race');
      const batches = Array.from({ length: 20 }, (_, i) => {
        const c = challenge({ tenantId, userId, at: at(i) });
        return sequence<ChallengeEvent>([started(c), approved(c)]);
      });
      const erasure = parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(600)));
      await Promise.all([
        ...batches.map((b, i) => new Promise((r) => setTimeout(r, i * 2)).then(() => projection.projectChallenges(b))),
        new Promise((r) => setTimeout(r, 15)).then(() => projection.projectErasures(sequence([erasure]))),
      ]);
      const rows = await rowsOf(tenantId);
      assert.equal(rows.length, 20);
      assert.ok(rows.every((r) => r.user_id === pseudonymOf(tenantId, userId)) && noPersonalData(rows));
    });

    /** An admin request as the audit trail records it, by the platform key. */
    const adminAction = (tenantId: string, occurredAt: string, data: { subject: string; userId: string; outcome: string }) =>
      parsed({ id: randomUUID(), type: 'AdminActionRecorded', version: 1, tenantId, aggregateId: tenantId, occurredAt, metadata: {}, data: { ...data, clientId: 'platform' } } as const);

    itWith({ real: ['nats', 'postgres'] }, 'keeps only the pseudonym as the target user of audited actions before the erasure', async () => {
      const tenantId = uniqueTenant('rep-audit');
      const userId = uniqueUser('audited');
      const action = (subject: string, occurredAt: string) => adminAction(tenantId, occurredAt, { subject, userId, outcome: 'ok' });
      const audit = service.app.get(AuditReportService);
      await audit.project(sequence([action(Subjects.usersUnblock, erasedAt(10))]));
      await projection.projectErasures(sequence([parsed(userErased(testUser({ tenantId, userId }), 1, erasedAt(20)))]));
      // The audit record of users.delete itself arrives after the erasure, with the erasure's time.
      await audit.project(sequence([action(Subjects.usersDelete, erasedAt(20)), action(Subjects.usersUnblock, erasedAt(30))]));
      const { rows } = await pool.query('SELECT subject, user_id FROM audit_log WHERE tenant_id = $1 ORDER BY occurred_at, subject', [tenantId]);
      assert.deepEqual(
        rows.map((r) => [r.subject, r.user_id]),
        [
          [Subjects.usersUnblock, pseudonymOf(tenantId, userId)],
          [Subjects.usersDelete, pseudonymOf(tenantId, userId)],
          [Subjects.usersUnblock, userId],
        ],
      );
    });

    itWith({ real: ['nats', 'postgres'] }, 'stores an audited action whose target user id holds a NUL (a refused request recorded by an older version), with the rest of its batch', async () => {
      const tenantId = uniqueTenant('rep-audit-nul');
      const action = (userId: string) => adminAction(tenantId, erasedAt(5), { subject: Subjects.usersBlock, userId, outcome: 'forbidden' });
      const audit = service.app.get(AuditReportService);
      await audit.project(sequence([action('x\u0000y'), action('plain')]));
      const { rows } = await pool.query('SELECT user_id FROM audit_log WHERE tenant_id = $1 ORDER BY user_id', [tenantId]);
      assert.deepEqual(rows.map((r) => r.user_id), ['plain', 'x\uFFFDy']);
    });

    itWith({ real: ['nats', 'postgres'] }, 'acts on UserErased through its durable consumer on the user subjects', async () => {
      const tenantId = await newTenant();
      const userId = uniqueUser('js');
      const c = challenge({ tenantId, userId });
      await projection.projectChallenges(sequence<ChallengeEvent>([started(c), approved(c)]));
      await new EventPublisher(nats.js).publish(EventSubjects.user(tenantId, userId), parsed(userErased(testUser({ tenantId, userId }), 1, new Date().toISOString())));
      const rows = await eventually(async () => {
        const r = await rowsOf(tenantId);
        return r[0]?.user_id === pseudonymOf(tenantId, userId) ? r : undefined;
      }, 30_000, 'the erasure projected');
      assert.ok(noPersonalData(rows));
    });
  });
});
