import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { ResultDetail, type ChallengeEvent, type DispatchEvent, type EventOf, type TenantEvent } from '@mfa/contracts';
import {
  foldChallengeEvents,
  foldDispatchEvents,
  foldTenantEvents,
  type Sequenced,
  type SigninPatch,
} from './signin-projection.js';

const tenantId = 'contoso';
const server = { name: 'mfa-1', ip: '10.0.0.5' };
const base = { tenantId, version: 1 as const, metadata: {} };

function started(challengeId: string, at = '2025-06-01T12:00:00.000Z'): EventOf<'ChallengeStarted'> {
  return {
    ...base,
    id: randomUUID(),
    type: 'ChallengeStarted',
    aggregateId: challengeId,
    occurredAt: at,
    data: {
      challengeId,
      userId: 'helga@contoso.com',
      clientIp: '203.0.113.7',
      application: 'VPN',
      requestId: 'req-1',
      profile: { displayName: 'Helga', email: 'helga@contoso.com', phoneNumber: '+14155550123' },
      server,
      method: 'sms',
      expiresAt: '2025-06-01T12:03:00.000Z',
      maxAttempts: 5,
    },
  };
}
const outcome = { userId: 'helga@contoso.com', method: 'sms' as const, server };
const approved = (challengeId: string, at = '2025-06-01T12:00:30.000Z'): EventOf<'ChallengeApproved'> => ({
  ...base,
  id: randomUUID(),
  type: 'ChallengeApproved',
  aggregateId: challengeId,
  occurredAt: at,
  data: { challengeId, ...outcome },
});
const expired = (challengeId: string): EventOf<'ChallengeExpired'> => ({
  ...base,
  id: randomUUID(),
  type: 'ChallengeExpired',
  aggregateId: challengeId,
  occurredAt: '2025-06-01T12:03:00.000Z',
  data: { challengeId, ...outcome },
});
const rejected = (challengeId: string, attempt: number): EventOf<'ChallengeCodeRejected'> => ({
  ...base,
  id: randomUUID(),
  type: 'ChallengeCodeRejected',
  aggregateId: challengeId,
  occurredAt: '2025-06-01T12:00:10.000Z',
  data: { challengeId, ...outcome, attempt, attemptsRemaining: 5 - attempt, cause: 'mismatch' },
});
const exhausted = (challengeId: string, lastCause: 'mismatch' | 'reused'): EventOf<'ChallengeAttemptsExhausted'> => ({
  ...base,
  id: randomUUID(),
  type: 'ChallengeAttemptsExhausted',
  aggregateId: challengeId,
  occurredAt: '2025-06-01T12:01:00.000Z',
  data: { challengeId, ...outcome, attempts: 5, lastCause },
});
const registrationRequired = (
  challengeId: string,
  reason: 'no_method_registered' | 'method_disabled',
): EventOf<'ChallengeRegistrationRequired'> => ({
  ...base,
  id: randomUUID(),
  type: 'ChallengeRegistrationRequired',
  aggregateId: challengeId,
  occurredAt: '2025-06-01T12:00:00.000Z',
  data: { challengeId, userId: 'helga@contoso.com', profile: {}, server, method: null, reason },
});

const seqd = <E>(...events: E[]): Sequenced<E>[] => events.map((event, i) => ({ event, seq: 100 + i }));
const only = (patches: SigninPatch[]) => {
  assert.equal(patches.length, 1);
  return patches[0]!;
};

describe('sign-in projection', () => {
  it('given a start, then the row holds its context and no outcome', () => {
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(started('c1'))));
    assert.deepEqual(patch, {
      tenantId,
      challengeId: 'c1',
      occurredAt: '2025-06-01T12:00:00.000Z',
      userId: 'helga@contoso.com',
      displayName: 'Helga',
      email: 'helga@contoso.com',
      phoneNumber: '+14155550123',
      deviceToken: null,
      authMethod: 'sms',
      serverName: 'mfa-1',
      serverIp: '10.0.0.5',
      clientIp: '203.0.113.7',
      application: 'VPN',
      requestId: 'req-1',
      expiresAt: '2025-06-01T12:03:00.000Z',
      contextSeq: 100,
      result: null,
      resultDetail: null,
      completedAt: null,
      resultSeq: null,
      failedAttempts: 0,
      lastEventSeq: 100,
    });
  });

  it('given start and approval in one batch, then one row, completed with success', () => {
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(started('c1'), approved('c1'))));
    assert.equal(patch.result, 'success');
    assert.equal(patch.resultDetail, ResultDetail.success);
    assert.equal(patch.completedAt, '2025-06-01T12:00:30.000Z');
    assert.equal(patch.contextSeq, 100);
    assert.equal(patch.resultSeq, 101);
    assert.equal(patch.occurredAt, '2025-06-01T12:00:00.000Z');
  });

  it('given events out of order, then they are applied in stream order', () => {
    const items = seqd<ChallengeEvent>(started('c1'), approved('c1'), expired('c1')).reverse();
    const patch = only(foldChallengeEvents(items));
    assert.equal(patch.result, 'success', 'the first outcome wins');
    assert.equal(patch.displayName, 'Helga');
    assert.equal(patch.lastEventSeq, 102);
  });

  it('given only an outcome, then a placeholder row carries its identity until the start arrives', () => {
    const patch = only(foldChallengeEvents([{ seq: 7, event: approved('c1') }]));
    assert.equal(patch.contextSeq, null);
    assert.equal(patch.occurredAt, '2025-06-01T12:00:30.000Z');
    assert.equal(patch.userId, 'helga@contoso.com');
    assert.equal(patch.authMethod, 'sms');
    assert.equal(patch.displayName, null);
    assert.equal(patch.result, 'success');
  });

  it('given wrong codes then exhaustion, then failed attempts is the highest seen and the detail says why', () => {
    const mismatch = only(
      foldChallengeEvents(seqd<ChallengeEvent>(started('c1'), rejected('c1', 2), rejected('c1', 1), exhausted('c1', 'mismatch'))),
    );
    assert.equal(mismatch.failedAttempts, 5);
    assert.equal(mismatch.result, 'failure');
    assert.equal(mismatch.resultDetail, ResultDetail.invalidCode);
    const reused = only(foldChallengeEvents(seqd<ChallengeEvent>(exhausted('c2', 'reused'))));
    assert.equal(reused.resultDetail, ResultDetail.duplicateCode);
    const attempts = only(foldChallengeEvents(seqd<ChallengeEvent>(rejected('c3', 3), rejected('c3', 2))));
    assert.equal(attempts.failedAttempts, 3);
    assert.equal(attempts.result, null);
  });

  it('given expiry, then timed out', () => {
    const patch = only(foldChallengeEvents(seqd<ChallengeEvent>(started('c1'), expired('c1'))));
    assert.equal(patch.resultDetail, ResultDetail.timedOut);
  });

  it('given registration required, then a complete failed row with the reason', () => {
    const none = only(foldChallengeEvents(seqd<ChallengeEvent>(registrationRequired('c1', 'no_method_registered'))));
    assert.equal(none.contextSeq, 100);
    assert.equal(none.result, 'failure');
    assert.equal(none.resultDetail, ResultDetail.registrationRequired);
    assert.equal(none.completedAt, '2025-06-01T12:00:00.000Z');
    assert.equal(none.authMethod, null);
    const disabled = only(foldChallengeEvents(seqd<ChallengeEvent>(registrationRequired('c2', 'method_disabled'))));
    assert.equal(disabled.resultDetail, ResultDetail.methodDisabled);
  });

  it('given a re-delivered event in the same batch, then still one patch per challenge', () => {
    const start = started('c1');
    const patches = foldChallengeEvents([
      { seq: 5, event: start },
      { seq: 5, event: start },
      { seq: 6, event: started('c2') },
    ]);
    assert.deepEqual(patches.map((p) => p.challengeId).sort(), ['c1', 'c2']);
  });
});

describe('delivery projection', () => {
  const sent = (challengeId: string): EventOf<'SmsSent'> => ({
    ...base,
    id: randomUUID(),
    type: 'SmsSent',
    aggregateId: challengeId,
    occurredAt: '2025-06-01T12:00:01.000Z',
    data: { challengeId, provider: 'twilio', providerMessageId: 'SM123', attempts: 1 },
  });
  const failed = (challengeId: string): EventOf<'SmsDeliveryFailed'> => ({
    ...base,
    id: randomUUID(),
    type: 'SmsDeliveryFailed',
    aggregateId: challengeId,
    occurredAt: '2025-06-01T12:00:02.000Z',
    data: {
      challengeId,
      attempts: 2,
      failures: [
        { provider: 'twilio', error: '503', transient: true },
        { provider: 'console', error: 'down', transient: false },
      ],
    },
  });

  it('keeps the latest outcome per challenge by stream order', () => {
    const patches = foldDispatchEvents(seqd<DispatchEvent>(failed('c1'), sent('c1'), failed('c2')).reverse());
    const byId = new Map(patches.map((p) => [p.challengeId, p]));
    assert.deepEqual(byId.get('c1'), {
      tenantId,
      challengeId: 'c1',
      status: 'sent',
      provider: 'twilio',
      messageId: 'SM123',
      attempts: 1,
      occurredAt: '2025-06-01T12:00:01.000Z',
      seq: 101,
    });
    assert.equal(byId.get('c2')?.status, 'failed');
    assert.equal(byId.get('c2')?.provider, 'console', 'the last provider tried');
    assert.equal(byId.get('c2')?.messageId, null);
  });
});

describe('tenant projection', () => {
  it('records created tenants once and ignores settings changes', () => {
    const settings = { codeLifetimeSeconds: 180, maxAttempts: 5, enabledMethods: ['sms' as const] };
    const created: TenantEvent = {
      ...base,
      id: randomUUID(),
      type: 'TenantCreated',
      aggregateId: tenantId,
      occurredAt: '2025-01-01T00:00:00.000Z',
      data: { settings },
    };
    const changed: TenantEvent = { ...created, id: randomUUID(), type: 'TenantSettingsChanged', occurredAt: '2025-02-01T00:00:00.000Z' };
    assert.deepEqual(foldTenantEvents(seqd<TenantEvent>(created, changed, created)), [{ tenantId, createdAt: '2025-01-01T00:00:00.000Z' }]);
    assert.deepEqual(foldTenantEvents(seqd<TenantEvent>(changed)), []);
  });
});
