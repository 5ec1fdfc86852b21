import { describe, it } from 'node:test';
import { randomUUID } from 'node:crypto';
import assert from 'node:assert/strict';
import { ResultDetail, type ChallengeEvent, type DispatchEvent, type TenantEvent } from '@mfa/contracts';
import { createEvent } from '@mfa/messaging';
import {
  challengeApproved,
  challengeAttemptsExhausted,
  challengeCodeRejected,
  challengeExpired,
  challengeRegistrationRequired,
  challengeResendRequested,
  challengeStarted,
  challengeStartedV2,
  challengeUserBlocked,
  challengeVoided,
  smsDeliveryFailed,
  smsSent,
  tenantCreated,
  tenantSettingsChanged,
  testChallenge,
  testTenant,
  testUser,
  type TestChallenge,
} from '@mfa/testing';
import {
  foldChallengeEvents,
  foldDispatchEvents,
  foldTenantEvents,
  type Sequenced,
  type SigninPatch,
} from './signin-projection.js';

const helga = testUser();
const { tenantId } = helga;
const signin = () => testChallenge(helga);
// Outcomes at their own times, so a test can tell whose time a row took.
const thirtySecondsIn = '2025-06-01T12:00:30.000Z';

const seqd = <E>(...events: E[]): Sequenced<E>[] => events.map((event, i) => ({ event, seq: 100 + i }));
const only = (patches: SigninPatch[]) => {
  assert.equal(patches.length, 1);
  return patches[0]!;
};

describe('sign-in projection', () => {
  it('given a start, then the row holds its context and no outcome', () => {
    const start = challengeStarted(signin());
    const { data } = start;
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(start)));
    assert.deepEqual(patch, {
      tenantId,
      challengeId: data.challengeId,
      occurredAt: start.occurredAt,
      userId: helga.userId,
      displayName: helga.profile.displayName,
      email: helga.profile.email,
      phoneNumber: helga.profile.phoneNumber,
      deviceToken: null,
      authMethod: 'sms',
      serverName: data.server.name,
      serverIp: data.server.ip,
      via: 'nats',
      clientIp: data.clientIp,
      application: data.application,
      requestId: data.requestId,
      expiresAt: data.expiresAt,
      pii: null,
      userGen: null,
      contextSeq: 100,
      result: null,
      resultDetail: null,
      completedAt: null,
      resultSeq: null,
      deviceId: null,
      failedAttempts: 0,
      resends: 0,
      lastEventSeq: 100,
    });
  });

  it('given a v2 start, then the row keeps its personal data sealed, with the key generation, and nothing in clear', () => {
    const start = challengeStartedV2(signin(), 'd1.3.iv.ct.tag');
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(start)));
    assert.deepEqual(
      [patch.userId, patch.displayName, patch.email, patch.phoneNumber, patch.pii, patch.userGen],
      [helga.userId, null, null, null, 'd1.3.iv.ct.tag', 3],
    );
  });

  it('given a v2 start without personal data, then the row has none, sealed or not', () => {
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStartedV2(signin(), undefined))));
    assert.deepEqual([patch.userId, patch.displayName, patch.phoneNumber, patch.pii, patch.userGen], [helga.userId, null, null, null, null]);
  });

  it('given an outcome before its v2 start in a later batch, then the start still brings the sealed value', () => {
    const c = signin();
    const [first] = foldChallengeEvents([{ seq: 101, event: challengeApproved(c) }]);
    assert.equal(first?.pii, null);
    const [second] = foldChallengeEvents([{ seq: 100, event: challengeStartedV2(c, 'd1.1.iv.ct.tag') }]);
    assert.deepEqual([second?.pii, second?.userGen, second?.contextSeq], ['d1.1.iv.ct.tag', 1, 100]);
  });

  it('given start and approval in one batch, then one row, completed with success', () => {
    const c = signin();
    const start = challengeStarted(c);
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(start, challengeApproved(c, { occurredAt: thirtySecondsIn }))));
    assert.equal(patch.result, 'success');
    assert.equal(patch.resultDetail, ResultDetail.success);
    assert.equal(patch.completedAt, thirtySecondsIn);
    assert.equal(patch.contextSeq, 100);
    assert.equal(patch.resultSeq, 101);
    assert.equal(patch.occurredAt, start.occurredAt);
  });

  it('given events out of order, then they are applied in stream order', () => {
    const c = signin();
    const items = seqd<ChallengeEvent>(challengeStarted(c), challengeApproved(c), challengeExpired(c)).reverse();
    const patch = only(foldChallengeEvents(items));
    assert.equal(patch.result, 'success', 'the first outcome wins');
    assert.equal(patch.displayName, helga.profile.displayName);
    assert.equal(patch.lastEventSeq, 102);
  });

  it('given only an outcome, then a placeholder row carries its identity until the start arrives', () => {
    const patch = only(foldChallengeEvents([{ seq: 7, event: challengeApproved(signin(), { occurredAt: thirtySecondsIn }) }]));
    assert.equal(patch.contextSeq, null);
    assert.equal(patch.occurredAt, thirtySecondsIn);
    assert.equal(patch.userId, helga.userId);
    assert.equal(patch.authMethod, 'sms');
    assert.equal(patch.displayName, null);
    assert.equal(patch.result, 'success');
  });

  it('given a RADIUS start (v1 or v2, registration required, bypassed), then the row says radius with the RADIUS client as its server, whatever the outcome carries', () => {
    const radius = { name: 'vpn-gateway', ip: '192.0.2.10' };
    const c = testChallenge(helga, { server: radius, via: 'radius' });
    // The verify was decided by an auth-challenge instance: its outcome names that instance.
    const approvedHere = challengeApproved({ ...c, server: { name: 'auth-challenge-1', ip: '10.0.0.5' } });
    for (const items of [seqd<ChallengeEvent>(challengeStarted(c), approvedHere), seqd<ChallengeEvent>(approvedHere, challengeStartedV2(c, 'd1.1.iv.ct.tag'))]) {
      const patch = only(foldChallengeEvents(items));
      assert.deepEqual([patch.via, patch.serverName, patch.serverIp, patch.result], ['radius', 'vpn-gateway', '192.0.2.10', 'success']);
    }
    // Until its start is projected, a row is taken for one over NATS.
    assert.equal(only(foldChallengeEvents(seqd<ChallengeEvent>(approvedHere))).via, 'nats');
    const required = challengeRegistrationRequired(c, { data: { method: null, reason: 'method_disabled' } });
    assert.equal(only(foldChallengeEvents(seqd<ChallengeEvent>(required))).via, 'radius');
    const { id, tenantId: t, aggregateId, occurredAt, metadata } = challengeStartedV2(c);
    const bypassed: ChallengeEvent = {
      id,
      tenantId: t,
      aggregateId,
      occurredAt,
      metadata,
      type: 'ChallengeBypassed',
      version: 1,
      data: { challengeId: c.challengeId, userId: c.userId, server: radius, via: 'radius', clientIp: '198.51.100.4', reason: 'trusted_ip' },
    };
    const bypass = only(foldChallengeEvents(seqd(bypassed)));
    assert.deepEqual([bypass.via, bypass.serverName, bypass.result, bypass.resultDetail], ['radius', 'vpn-gateway', 'success', ResultDetail.trustedIp]);
  });

  it('given wrong codes then exhaustion, then failed attempts is the highest seen and the detail says why', () => {
    const c1 = signin();
    const wrong = (c: TestChallenge, attempt: number) => challengeCodeRejected(c, { data: { attempt } });
    const exhausted = (c: TestChallenge, lastCause: 'mismatch' | 'reused') =>
      challengeAttemptsExhausted(c, { data: { attempts: 5, lastCause } });
    const mismatch = only(
      foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c1), wrong(c1, 2), wrong(c1, 1), exhausted(c1, 'mismatch'))),
    );
    assert.equal(mismatch.failedAttempts, 5);
    assert.equal(mismatch.result, 'failure');
    assert.equal(mismatch.resultDetail, ResultDetail.invalidCode);
    const reused = only(foldChallengeEvents(seqd<ChallengeEvent>(exhausted(signin(), 'reused'))));
    assert.equal(reused.resultDetail, ResultDetail.duplicateCode);
    const c3 = signin();
    const attempts = only(foldChallengeEvents(seqd<ChallengeEvent>(wrong(c3, 3), wrong(c3, 2))));
    assert.equal(attempts.failedAttempts, 3);
    assert.equal(attempts.result, null);
  });

  it('given resends of the code, then the row counts the highest resend number seen, whatever the order and repeats', () => {
    const c = signin();
    const resent = (resend: number) => challengeResendRequested(c, { data: { resend } });
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), resent(2), resent(1), resent(2), challengeApproved(c))));
    assert.equal(patch.resends, 2);
    assert.equal(patch.result, 'success');
    assert.equal(patch.authMethod, 'sms');
    // A resend alone (its start in a later batch) keeps the count on the placeholder row.
    assert.equal(only(foldChallengeEvents(seqd<ChallengeEvent>(resent(3)))).resends, 3);
  });

  it('given the wrong code that locked the user out, then the detail says the account is locked out', () => {
    const c = signin();
    const locked = challengeAttemptsExhausted(c, { data: { attempts: 3, lastCause: 'mismatch', lockedOut: true } });
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), locked)));
    assert.equal(patch.result, 'failure');
    assert.equal(patch.resultDetail, ResultDetail.lockedOut);
    assert.equal(patch.failedAttempts, 3);
  });

  it('given expiry, then timed out', () => {
    const c = signin();
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), challengeExpired(c))));
    assert.equal(patch.resultDetail, ResultDetail.timedOut);
  });

  it('given a push decided by a device, then the row names the device with the outcome', () => {
    const c = signin();
    const approved = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), challengeApproved(c, { data: { deviceId: 'dev-approving' } }))));
    assert.deepEqual([approved.result, approved.deviceId], ['success', 'dev-approving']);
    const code = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), challengeApproved(c))));
    assert.equal(code.deviceId, null, 'a code names no device');
  });

  it('given a push reported as fraud from the app, then the row names the reporting device; an event without one names none', () => {
    const c = signin();
    const reported = (deviceId?: string) =>
      createEvent('ChallengeFraudReported', 1, {
        tenantId,
        aggregateId: c.challengeId,
        now: new Date(thirtySecondsIn),
        data: { challengeId: c.challengeId, userId: c.userId, method: 'push', server: c.server, alertId: 'alert-1', ...(deviceId !== undefined ? { deviceId } : {}) },
      });
    const fromApp = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), reported('dev-reporting'))));
    assert.deepEqual([fromApp.resultDetail, fromApp.deviceId], [ResultDetail.fraud, 'dev-reporting']);
    assert.equal(only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), reported()))).deviceId, null);
  });

  it('given a block after the start, then denied as a blocked user', () => {
    const c = signin();
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), challengeUserBlocked(c))));
    assert.equal(patch.result, 'failure');
    assert.equal(patch.resultDetail, ResultDetail.userBlocked);
  });

  it('given a reset of the user after the start, then denied as reset, with its time', () => {
    const c = signin();
    const at = new Date(Date.parse(c.startedAt) + 30_000).toISOString();
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(challengeStarted(c), challengeVoided(c, { occurredAt: at }))));
    assert.deepEqual([patch.result, patch.resultDetail, patch.completedAt], ['failure', ResultDetail.userReset, at]);
  });

  it('given registration required, then a complete failed row with the reason', () => {
    const required = (reason: 'no_method_registered' | 'method_disabled') =>
      challengeRegistrationRequired(signin(), { data: { method: null, reason } });
    const noMethod = required('no_method_registered');
    const none = only(foldChallengeEvents(seqd<ChallengeEvent>(noMethod)));
    assert.equal(none.contextSeq, 100);
    assert.equal(none.result, 'failure');
    assert.equal(none.resultDetail, ResultDetail.registrationRequired);
    assert.equal(none.completedAt, noMethod.occurredAt);
    assert.equal(none.authMethod, null);
    const disabled = only(foldChallengeEvents(seqd<ChallengeEvent>(required('method_disabled'))));
    assert.equal(disabled.resultDetail, ResultDetail.methodDisabled);
  });

  it('given a re-delivered event in the same batch, then still one patch per challenge', () => {
    const [c1, c2] = [signin(), signin()];
    const start = challengeStarted(c1);
    const patches = foldChallengeEvents([
      { seq: 5, event: start },
      { seq: 5, event: start },
      { seq: 6, event: challengeStarted(c2) },
    ]);
    assert.deepEqual(patches.map((p) => p.challengeId).sort(), [c1.challengeId, c2.challengeId].sort());
  });
});

describe('delivery projection', () => {
  const failed = (c: TestChallenge) =>
    smsDeliveryFailed(c, {
      occurredAt: '2025-06-01T12:00:02.000Z',
      data: {
        failures: [
          { provider: 'twilio', error: '503', transient: true },
          { provider: 'console', error: 'down', transient: false },
        ],
      },
    });

  it('keeps the latest outcome per challenge by stream order', () => {
    const [c1, c2] = [signin(), signin()];
    const sent = smsSent(c1, { occurredAt: '2025-06-01T12:00:01.000Z' });
    const patches = foldDispatchEvents(seqd<DispatchEvent>(failed(c1), sent, failed(c2)).reverse());
    const byId = new Map(patches.map((p) => [p.challengeId, p]));
    assert.deepEqual(byId.get(c1.challengeId), {
      tenantId,
      challengeId: c1.challengeId,
      status: 'sent',
      provider: 'twilio',
      messageId: sent.data.providerMessageId,
      attempts: 1,
      occurredAt: sent.occurredAt,
      seq: 101,
      error: null,
    });
    assert.equal(byId.get(c2.challengeId)?.status, 'failed');
    assert.equal(byId.get(c2.challengeId)?.provider, 'console', 'the last provider tried');
    assert.equal(byId.get(c2.challengeId)?.messageId, null);
  });

  /** The handset's receipt of a sent SMS. */
  const receiptOf = (sent: ReturnType<typeof smsSent>, data: { provider: string; status: 'delivered' | 'undelivered'; errorCode?: string }) =>
    ({
      ...sent,
      id: randomUUID(),
      type: 'SmsDeliveryReported',
      version: 1,
      data: { challengeId: sent.data.challengeId, providerMessageId: sent.data.providerMessageId, ...data },
    }) as DispatchEvent;

  it("given a receipt after the send, then the handset's answer with the provider's error", () => {
    const c = signin();
    const sent = smsSent(c);
    const receipt = receiptOf(sent, { provider: 'twilio', status: 'undelivered', errorCode: '30005' });
    const [patch, ...more] = foldDispatchEvents(seqd<DispatchEvent>(sent, receipt));
    assert.equal(more.length, 0);
    assert.ok(patch);
    assert.deepEqual([patch.status, patch.error, patch.messageId], ['undelivered', '30005', sent.data.providerMessageId]);
  });

  it('given a receipt recorded before the SmsSent of its message (an SMSC answers at once), then the receipt stands; a send of another message replaces it', () => {
    const c = signin();
    const sent = smsSent(c);
    const receipt = receiptOf(sent, { provider: 'smpp', status: 'delivered' });
    const [patch] = foldDispatchEvents(seqd<DispatchEvent>(receipt, sent));
    assert.deepEqual([patch?.status, patch?.provider, patch?.messageId], ['delivered', 'smpp', sent.data.providerMessageId]);
    const another = { ...sent, id: randomUUID(), data: { ...sent.data, providerMessageId: 'another-message' } } as DispatchEvent;
    const [resent] = foldDispatchEvents(seqd<DispatchEvent>(receipt, another));
    assert.deepEqual([resent?.status, resent?.messageId], ['sent', 'another-message']);
  });
});

describe('tenant projection', () => {
  const tenant = testTenant({ tenantId });
  const created = (at: string) => tenantCreated(tenant, { occurredAt: at });
  const deleted = (at: string) => createEvent('TenantDeleted', 1, { tenantId, aggregateId: tenantId, now: new Date(at), data: {} }) as TenantEvent;
  const erased = (at: string, deletedAt: string) =>
    createEvent('TenantErased', 1, { tenantId, aggregateId: tenantId, now: new Date(at), data: { deletedAt, users: 1, hardwareTokens: 0, recordings: 0, clients: 1 } }) as TenantEvent;

  it('records created tenants and ignores settings changes', () => {
    const changed = tenantSettingsChanged(tenant, { occurredAt: '2025-02-01T00:00:00.000Z' });
    assert.deepEqual(foldTenantEvents(seqd<TenantEvent>(created('2025-01-01T00:00:00.000Z'), changed, created('2025-01-01T00:00:00.000Z'))), [
      { tenantId, state: 'active', stateAt: '2025-01-01T00:00:00.000Z', stateSeq: 102, createdAt: '2025-01-01T00:00:00.000Z', deletedAt: null, erasedAt: null },
    ]);
    assert.deepEqual(foldTenantEvents(seqd<TenantEvent>(changed)), []);
  });

  it('follows a tenant deleted, erased and created again in stream order, whatever order the batch holds them in', () => {
    const events = seqd<TenantEvent>(
      created('2025-01-01T00:00:00.000Z'),
      deleted('2025-03-01T00:00:00.000Z'),
      erased('2025-03-01T00:05:00.000Z', '2025-03-01T00:00:00.000Z'),
      created('2025-04-01T00:00:00.000Z'),
    );
    const expected = { tenantId, state: 'active', stateAt: '2025-04-01T00:00:00.000Z', stateSeq: 103, createdAt: '2025-04-01T00:00:00.000Z', deletedAt: '2025-03-01T00:00:00.000Z', erasedAt: '2025-03-01T00:05:00.000Z' };
    assert.deepEqual(foldTenantEvents(events), [expected]);
    assert.deepEqual(foldTenantEvents([...events].reverse()), [expected]);
    assert.deepEqual(foldTenantEvents(events.slice(0, 2)), [{ ...expected, state: 'deleted', stateAt: '2025-03-01T00:00:00.000Z', stateSeq: 101, createdAt: '2025-01-01T00:00:00.000Z', erasedAt: null }]);
    assert.deepEqual(foldTenantEvents(events.slice(1, 3)), [{ ...expected, state: 'erased', stateAt: '2025-03-01T00:05:00.000Z', stateSeq: 102, createdAt: null }]);
  });
});
