import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TenantsConfigureRequest as TenantsConfigureCommand } from './api.js';

describe('tenants.configure request schema', () => {
  it('keeps omitted settings omitted, so a partial update stays partial', () => {
    assert.deepEqual(TenantsConfigureCommand.parse({ tenantId: 'contoso', settings: { maxAttempts: 3 } }), {
      tenantId: 'contoso',
      settings: { maxAttempts: 3 },
    });
    assert.deepEqual(TenantsConfigureCommand.parse({ tenantId: 'contoso', settings: {} }).settings, {});
  });

  it('applies the contract rules to the fields given', () => {
    for (const settings of [{ maxAttempts: 0 }, { codeLifetimeSeconds: 601 }, { enabledMethods: [] }, { enabledMethods: ['fax'] }]) {
      assert.equal(TenantsConfigureCommand.safeParse({ tenantId: 'contoso', settings }).success, false, JSON.stringify(settings));
    }
    assert.equal(TenantsConfigureCommand.safeParse({ tenantId: 'contoso' }).success, false);
  });
});
