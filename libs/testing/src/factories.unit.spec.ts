import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseEvent, type AnyEvent } from '@mfa/contracts';
import { parseChallengeId } from '@mfa/projection';
import * as make from './factories.js';

describe('test-data factory', () => {
  const user = make.testUser();
  const sms = make.testChallenge(user);
  const totp = make.testChallenge(user, { method: 'totp' });
  const every: AnyEvent[] = [
    make.tenantCreated(make.testTenant()),
    make.tenantSettingsChanged(make.testTenant()),
    make.userRegistered(user),
    make.userProfileChanged(user),
    make.totpTokenEnrolled(user),
    make.totpTokenActivated(user),
    make.challengeStarted(sms),
    make.challengeStarted(totp),
    make.challengeRegistrationRequired(sms),
    make.challengeApproved(totp),
    make.challengeCodeRejected(sms),
    make.challengeAttemptsExhausted(sms),
    make.challengeExpired(sms),
    make.smsSent(sms),
    make.smsDeliveryFailed(sms),
  ];

  it('builds events the contract accepts unchanged', () => {
    for (const event of every) assert.deepEqual(parseEvent(event), event, event.type);
  });

  it('gives every event its own id', () => {
    assert.equal(new Set(every.map((e) => e.id)).size, every.length);
  });

  it('issues challenge ids of the real form, and shares them across the events of one sign-in', () => {
    assert.ok(parseChallengeId(sms.challengeId), sms.challengeId);
    assert.notEqual(sms.challengeId, totp.challengeId);
    for (const event of [make.challengeStarted(sms), make.challengeApproved(sms), make.smsSent(sms)]) {
      assert.equal(event.aggregateId, sms.challengeId);
      assert.equal(event.data.challengeId, sms.challengeId);
      assert.equal(event.tenantId, user.tenantId);
    }
  });

  it('delivers an SMS start to the phone number, a TOTP start not at all', () => {
    assert.equal(make.challengeStarted(sms).data.delivery?.to, user.profile.phoneNumber);
    assert.equal(make.challengeStarted(totp).data.delivery, undefined);
  });

  it('applies overrides of envelope and data fields, keeping the other defaults', () => {
    const at = '2025-06-01T12:00:10.000Z';
    const rejected = make.challengeCodeRejected(sms, { occurredAt: at, data: { attempt: 2, cause: 'reused' } });
    assert.equal(rejected.occurredAt, at);
    assert.deepEqual(
      { attempt: rejected.data.attempt, remaining: rejected.data.attemptsRemaining, cause: rejected.data.cause, method: rejected.data.method },
      { attempt: 2, remaining: sms.maxAttempts - 2, cause: 'reused', method: 'sms' },
    );
    const enrolled = make.totpTokenEnrolled(user, { data: { tokenId: 'tok' } });
    assert.equal(enrolled.data.tokenId, 'tok');
    assert.deepEqual(parseEvent(enrolled), enrolled);
  });

  it('takes a given profile change as the whole change', () => {
    assert.deepEqual(make.userProfileChanged(user, { data: { email: 'h@contoso.com' } }).data, { email: 'h@contoso.com' });
    assert.deepEqual(make.userProfileChanged(user).data, user.profile);
  });
});
