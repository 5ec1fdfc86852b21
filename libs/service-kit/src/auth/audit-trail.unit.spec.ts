import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Subjects, SubjectScopes } from '@mfa/contracts';
import { AuditTrail, auditedUserId } from './audit-trail.js';

describe('the audit trail: the target user it records', () => {
  it('records a valid user id as sent, and nothing for no user id', () => {
    assert.equal(auditedUserId('helga@contoso.com'), 'helga@contoso.com');
    assert.equal(auditedUserId('Åsa Öberg'), 'Åsa Öberg');
    assert.equal(auditedUserId(undefined), undefined);
    assert.equal(auditedUserId(42), undefined);
    assert.equal(auditedUserId(''), undefined);
  });

  it('writes the control, format and separator characters of any other string as escapes (a NUL Postgres would refuse, a bidi override, a terminal escape), at most 256 characters', () => {
    assert.equal(auditedUserId('x\u0000y'), 'x\\u0000y');
    assert.equal(auditedUserId('admin\u202egnp.exe'), 'admin\\u202egnp.exe');
    assert.equal(auditedUserId('\u001b[2Jbob'), '\\u001b[2Jbob');
    assert.equal(auditedUserId('a\u2028b\ud800'), 'a\\u2028b\\ud800');
    assert.equal(auditedUserId('x'.repeat(300))!.length, 256);
  });
});

describe('the audit trail: what it covers', () => {
  const trail = new AuditTrail({} as never, {} as never);
  const operator = { sub: 'op-1', name: 'Ops' };

  it('every admin subject, whoever sends it; an IdP\'s users and challenge requests, which name no operator, not', () => {
    for (const subject of Object.values(Subjects)) {
      assert.equal(trail.covers(subject), SubjectScopes[subject] === 'admin', subject);
    }
  });

  it('every change naming an operator (the console, for a person): a code app, a PIN, a device or a phone number set for someone; not the pages they read', () => {
    const reads = new Set<string>([
      Subjects.challengeStatus, Subjects.reportsSigninsQuery, Subjects.usersGet, Subjects.usersList, Subjects.tenantsGet, Subjects.clientsList,
      Subjects.reportsAuditQuery, Subjects.reportsFraudQuery, Subjects.reportsBlockedQuery, Subjects.reportsUsageQuery, Subjects.fraudIpsList,
      Subjects.voiceMessagesList, Subjects.oathImportStatus, Subjects.oathTokensList,
    ]);
    for (const subject of Object.values(Subjects)) {
      assert.equal(trail.covers(subject, operator), SubjectScopes[subject] === 'admin' || !reads.has(subject), subject);
    }
    for (const subject of [Subjects.totpEnroll, Subjects.totpActivate, Subjects.usersPinSet, Subjects.usersRegister, Subjects.usersPushEnroll, Subjects.usersAppPasswordsCreate]) {
      assert.equal(trail.covers(subject, operator), true, subject);
    }
  });
});
