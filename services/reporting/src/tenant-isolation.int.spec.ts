import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parseEvent, SigninsQueryReply, Subjects, UsageQueryReply, type AnyEvent, type ChallengeEvent, type TenantEvent } from '@mfa/contracts';
import { connectNats, requestJson, type NatsClients } from '@mfa/messaging';
import type { RunningService } from '@mfa/service-kit';
import {
  challengeApproved,
  challengeAttemptsExhausted,
  challengeCodeRejected,
  challengeStarted,
  itWith,
  tenantCreated,
  testChallenge,
  testEnv,
  testTenant,
  testUser,
  uniqueTenant,
} from '@mfa/testing';
import { boot } from './boot.js';
import { loadReportingConfig } from './config.js';
import { ReportProjection } from './application/report-projection.js';
import type { Sequenced } from './domain/signin-projection.js';

/**
 * The reports of two tenants whose users share an id, and whose challenges even share one (ids
 * are unique by construction; the report keys rows by tenant all the same): each tenant's
 * sign-ins, filters and usage figures are its own.
 */
describe('reporting: tenant isolation (real NATS and Postgres)', () => {
  let service: RunningService;
  let projection: ReportProjection;
  let nats: NatsClients;
  let seq = 1_000_000;
  const T0 = Date.parse('2025-07-01T12:00:00.000Z');
  const tenantA = uniqueTenant('rep-iso-a');
  const tenantB = uniqueTenant('rep-iso-b');
  const alice = 'alice@contoso.example';

  const parsed = <E extends AnyEvent>(event: E) => parseEvent(event) as E;
  const sequence = <E>(events: E[]): Sequenced<E>[] => events.map((event) => ({ event, seq: seq++ }));
  const challengeOf = (tenantId: string, challengeId: string) =>
    testChallenge(testUser({ tenantId, userId: alice }), { method: 'totp', startedAt: new Date(T0).toISOString(), challengeId });
  const later = (startedAt: string, s: number) => new Date(Date.parse(startedAt) + s * 1000).toISOString();

  before(async () => {
    service = await boot(loadReportingConfig({ ...process.env, NATS_URL: testEnv.natsUrl, DATABASE_URL: testEnv.databaseUrl, HTTP_PORT: '0', NODE_ENV: 'test', LOG_LEVEL: 'error' }));
    projection = service.app.get(ReportProjection);
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-tenant-isolation-test' });
    await projection.projectTenants(sequence<TenantEvent>([tenantA, tenantB].map((tenantId) => parsed(tenantCreated(testTenant({ tenantId }))))));
  });

  after(async () => {
    await service?.stop();
    await nats?.nc.close();
  });

  const signins = async (body: Record<string, unknown>) => SigninsQueryReply.parse(await requestJson(nats.nc, Subjects.reportsSigninsQuery, body)).items;
  const usage = async (tenantId: string) =>
    UsageQueryReply.parse(await requestJson(nats.nc, Subjects.reportsUsageQuery, { tenantId, from: '2025-07-01T00:00:00Z', to: '2025-07-02T00:00:00Z', granularity: 'day' })).items;

  itWith({ real: ['nats', 'postgres'] }, 'the same user id and even the same challenge id in two tenants: each tenant reports and counts only its own', async () => {
    const shared = `${randomBytes(16).toString('base64url').slice(0, 22)}.${randomBytes(16).toString('base64url').slice(0, 22)}`;
    const onlyA = `${randomBytes(16).toString('base64url').slice(0, 22)}.${randomBytes(16).toString('base64url').slice(0, 22)}`;
    const a1 = challengeOf(tenantA, shared);
    const a2 = challengeOf(tenantA, onlyA);
    const b1 = challengeOf(tenantB, shared);
    await projection.projectChallenges(
      sequence<ChallengeEvent>([
        parsed(challengeStarted(a1)),
        parsed(challengeApproved(a1, { occurredAt: later(a1.startedAt, 20) })),
        parsed(challengeStarted(a2)),
        parsed(challengeApproved(a2, { occurredAt: later(a2.startedAt, 25) })),
        parsed(challengeStarted(b1)),
        parsed(challengeCodeRejected(b1, { occurredAt: later(b1.startedAt, 5), data: { attempt: 1 } })),
        parsed(challengeAttemptsExhausted(b1, { occurredAt: later(b1.startedAt, 30), data: { lastCause: 'mismatch' } })),
      ]),
    );
    const ofA = await signins({ tenantId: tenantA, userId: alice, limit: 50 });
    assert.deepEqual(ofA.map((i) => [i.challengeId, i.result]).sort(), [[onlyA, 'success'], [shared, 'success']].sort());
    const ofB = await signins({ tenantId: tenantB, userId: alice, limit: 50 });
    assert.deepEqual(ofB.map((i) => [i.challengeId, i.result]), [[shared, 'failure']]);
    assert.deepEqual(await signins({ tenantId: tenantB, challengeId: onlyA }), [], "B finds none of A's challenges");
    assert.deepEqual((await signins({ tenantId: tenantA, challengeId: shared })).map((i) => i.result), ['success']);
    const [dayA] = await usage(tenantA);
    const [dayB] = await usage(tenantB);
    assert.deepEqual(dayA?.authentications, { total: 2, success: 2, failure: 0 });
    assert.deepEqual(dayB?.authentications, { total: 1, success: 0, failure: 1 });
  });
});
