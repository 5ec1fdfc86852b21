import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { accessFromRoles, canChange, canRead, rolesOf } from './roles.js';

describe('console roles', () => {
  it('gives the platform operator every tenant, a tenant admin and reader theirs only', () => {
    const platform = accessFromRoles(['platform-operator'])!;
    assert.ok(canRead(platform, 'any') && canChange(platform, 'any'));
    const admin = accessFromRoles(['tenant-admin:contoso', 'tenant-reader:fabrikam'])!;
    assert.deepEqual([canRead(admin, 'contoso'), canChange(admin, 'contoso')], [true, true]);
    assert.deepEqual([canRead(admin, 'fabrikam'), canChange(admin, 'fabrikam')], [true, false]);
    assert.deepEqual([canRead(admin, 'other'), canChange(admin, 'other')], [false, false]);
  });

  it('refuses an operator without a known role, and ignores what it does not know', () => {
    for (const claim of [undefined, [], ['admin'], 'tenant-admin:', [42], { roles: ['platform-operator'] }]) assert.equal(accessFromRoles(claim), undefined);
    assert.deepEqual(rolesOf(accessFromRoles(['tenant-reader:a', 'tenant-admin:a', 'weird'])!), ['tenant-admin:a']);
    assert.ok(accessFromRoles('platform-operator')?.platform);
  });
});
