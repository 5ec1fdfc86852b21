import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventSubjects } from '@mfa/contracts';
import { parseUserSubject } from './user-projector.js';

describe('user event subjects', () => {
  it('give back the tenant and user ids, dots and all', () => {
    const ids = { tenantId: 'contoso.com', userId: 'helga.nordin@contoso.com' };
    assert.deepEqual(parseUserSubject(EventSubjects.user(ids.tenantId, ids.userId)), ids);
  });

  it('reject subjects that are not a user aggregate', () => {
    assert.equal(parseUserSubject(EventSubjects.tenant('contoso')), undefined);
    assert.equal(parseUserSubject('mfa.evt.user.abc'), undefined);
    assert.equal(parseUserSubject('mfa.evt.user.abc.def.ghi'), undefined);
  });
});
