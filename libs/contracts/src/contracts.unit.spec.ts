import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ChallengeStartRequest,
  defaultTenantSettings,
  EventSubjects,
  fromSubjectToken,
  parseEvent,
  RequestSchemas,
  SigninsQueryRequest,
  subjectToken,
  Subjects,
  TenantSettings,
  UsersRegisterRequest,
} from './index.js';

/** A valid stored event, to mutate. */
function createEnvelopeForTest() {
  return {
    id: '7b1e2f40-3c1d-4c55-9a2e-1f0e6c7d8e9f',
    type: 'TenantCreated',
    version: 1,
    tenantId: 'contoso',
    aggregateId: 'contoso',
    occurredAt: '2026-01-01T00:00:00.000Z',
    metadata: {},
    data: { settings: defaultTenantSettings() },
  };
}

describe('the public API contract', () => {
  it('names exactly the subjects of MISSION.md (plus tenant configuration)', () => {
    assert.deepEqual(Object.values(Subjects).sort(), [
      'mfa.v1.challenge.start',
      'mfa.v1.challenge.status',
      'mfa.v1.challenge.verify',
      'mfa.v1.reports.signins.query',
      'mfa.v1.tenants.configure',
      'mfa.v1.users.register',
      'mfa.v1.users.totp.activate',
      'mfa.v1.users.totp.enroll',
    ]);
    assert.equal(Object.keys(RequestSchemas).length, Object.keys(Subjects).length);
  });

  it('accepts E.164 phones and BCP 47 languages, rejects hostile or malformed values', () => {
    const ok = UsersRegisterRequest.safeParse({ tenantId: 'contoso', userId: 'helga@contoso.com', phoneNumber: '+46701234567', language: 'sv-SE' });
    assert.ok(ok.success);
    for (const bad of [
      { tenantId: 'contoso', userId: 'u', phoneNumber: '0701234567' },
      { tenantId: 'contoso', userId: 'u', language: 'not a language' },
      { tenantId: 'con toso', userId: 'u' },
      { tenantId: 'contoso', userId: 'line\nbreak' },
      { tenantId: 'contoso', userId: '' },
      { tenantId: 'contoso', userId: 'x'.repeat(300) },
      { tenantId: 'contoso', userId: 'u', email: 'nope' },
    ]) {
      assert.equal(UsersRegisterRequest.safeParse(bad).success, false, JSON.stringify(bad).slice(0, 60));
    }
  });

  it('knows the methods and optional IdP context of a challenge', () => {
    assert.ok(ChallengeStartRequest.safeParse({ tenantId: 't', userId: 'u', method: 'totp', clientIp: '2001:db8::1' }).success);
    assert.equal(ChallengeStartRequest.safeParse({ tenantId: 't', userId: 'u', method: 'fax' }).success, false);
    assert.equal(ChallengeStartRequest.safeParse({ tenantId: 't', userId: 'u', clientIp: '999.1.1.1' }).success, false);
  });

  it('bounds report queries', () => {
    assert.equal(SigninsQueryRequest.parse({ tenantId: 't' }).limit, 50);
    assert.equal(SigninsQueryRequest.safeParse({ tenantId: 't', limit: 0 }).success, false);
    assert.equal(SigninsQueryRequest.safeParse({ tenantId: 't', limit: 501 }).success, false);
    assert.equal(SigninsQueryRequest.safeParse({ tenantId: 't', from: '2026-02-01T00:00:00Z', to: '2026-01-01T00:00:00Z' }).success, false);
  });

  it('defaults tenant settings to 180 s codes, 5 attempts, every method', () => {
    assert.deepEqual(TenantSettings.parse({}), { codeLifetimeSeconds: 180, maxAttempts: 5, enabledMethods: ['sms', 'voice', 'push', 'totp'] });
    assert.equal(TenantSettings.parse({ codeLifetimeSeconds: 300 }).codeLifetimeSeconds, 300);
  });
});

describe('events', () => {
  it('parses known events and refuses unknown types or shapes', () => {
    const event = createEnvelopeForTest();
    assert.equal(parseEvent(event).type, 'TenantCreated');
    assert.throws(() => parseEvent({ ...event, type: 'Nope' }), /unknown event type/);
    assert.throws(() => parseEvent({ ...event, version: 2 }), /invalid/);
    assert.throws(() => parseEvent({ ...event, id: 'not-a-uuid' }), /invalid/);
  });

  it('turns any id into one subject token and back', () => {
    for (const id of ['helga@contoso.com', 'a.b.c', 'ünïcødé *>', '']) {
      const token = subjectToken(id);
      assert.match(token, /^[A-Za-z0-9_-]*$/);
      assert.equal(fromSubjectToken(token), id);
    }
    assert.equal(EventSubjects.user('t', 'a.b').split('.').length, 5);
  });
});
