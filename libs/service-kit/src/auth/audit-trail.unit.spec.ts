import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { auditedUserId } from './audit-trail.js';

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
