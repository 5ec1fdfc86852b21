import { describe, it } from 'node:test';
import { defaultTenantSettings } from '@mfa/contracts';
import { deciderSpec, tenantCreated, tenantSettingsChanged, testTenant } from '@mfa/testing';
import { tenantDecider } from './tenant.js';

const spec = deciderSpec(tenantDecider);
const now = new Date('2025-06-01T12:00:00.000Z');
const tenant = testTenant({ settings: { codeLifetimeSeconds: 300, maxAttempts: 5, enabledMethods: ['sms', 'totp'] } });
const created = tenantCreated(tenant, { occurredAt: '2025-05-01T00:00:00.000Z' });

describe('tenant decider: configure', () => {
  it('creates an unknown tenant with the given settings over the defaults', () => {
    spec
      .given([])
      .when({ type: 'ConfigureTenant', data: { settings: { maxAttempts: 3 } } }, now)
      .then([{ type: 'TenantCreated', data: { settings: { ...defaultTenantSettings(), maxAttempts: 3 } }, occurredAt: now.toISOString() }]);
  });

  it('merges a partial change into the current settings', () => {
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { enabledMethods: ['totp', 'totp'] } } }, now)
      .then([
        {
          type: 'TenantSettingsChanged',
          data: { settings: { codeLifetimeSeconds: 300, maxAttempts: 5, enabledMethods: ['totp'] } },
          occurredAt: now.toISOString(),
        },
      ]);
  });

  it('records nothing when the settings do not change', () => {
    spec.given([created]).when({ type: 'ConfigureTenant', data: { settings: { codeLifetimeSeconds: 300 } } }, now).thenNothing();
    spec.given([created]).when({ type: 'ConfigureTenant', data: { settings: {} } }, now).thenNothing();
  });

  it('folds later changes over earlier ones', () => {
    const changed = tenantSettingsChanged(tenant, {
      occurredAt: '2025-05-02T00:00:00.000Z',
      data: { settings: { ...tenant.settings, codeLifetimeSeconds: 120 } },
    });
    spec.given([created, changed]).when({ type: 'ConfigureTenant', data: { settings: { codeLifetimeSeconds: 120 } } }, now).thenNothing();
  });
});

describe('tenant decider: provision', () => {
  it('creates a missing tenant with the default settings', () => {
    spec
      .given([])
      .when({ type: 'ProvisionTenant', data: {} }, now)
      .then([{ type: 'TenantCreated', data: { settings: defaultTenantSettings() }, occurredAt: now.toISOString() }]);
  });

  it('leaves an existing tenant alone', () => {
    spec.given([created]).when({ type: 'ProvisionTenant', data: {} }, now).thenNothing();
  });
});
