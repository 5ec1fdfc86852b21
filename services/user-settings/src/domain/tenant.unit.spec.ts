import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultTenantSettings } from '@mfa/contracts';
import { deciderSpec, tenantCreated, tenantDeleted, tenantErased, tenantSettingsChanged, testTenant } from '@mfa/testing';
import { tenantDecider } from './tenant.js';

const spec = deciderSpec(tenantDecider);
const now = new Date('2025-06-01T12:00:00.000Z');
const tenant = testTenant({ settings: { ...defaultTenantSettings(), codeLifetimeSeconds: 300, enabledMethods: ['sms', 'totp'] } });
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
          data: { settings: { ...tenant.settings, enabledMethods: ['totp'] } },
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

describe('tenant decider: every setting of the contract', () => {
  it('merges a section field by field and replaces arrays whole', () => {
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { lockout: { threshold: 3 }, sms: { blockedCountries: ['KP'] } } } }, now)
      .then([
        {
          type: 'TenantSettingsChanged',
          data: {
            settings: {
              ...tenant.settings,
              lockout: { threshold: 3, counterResetMinutes: 15, autoUnblockMinutes: 15 },
              sms: { allowedCountries: null, blockedCountries: ['KP'] },
            },
          },
          occurredAt: now.toISOString(),
        },
      ]);
  });

  it('refuses private trusted ranges unless on premises, naming the rule', () => {
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { trustedIps: { ranges: ['10.1.0.0/16'] } } } }, now)
      .thenThrows('invalid_request', /not public.*onPremises/);
    // The documentation ranges (RFC 5737) are not private: trusted without onPremises, as MISSION.md's onPremises only speaks of private ranges.
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { trustedIps: { ranges: ['203.0.113.0/24', '198.51.100.0/24', '192.0.2.0/24'] } } } }, now)
      .then([
        {
          type: 'TenantSettingsChanged',
          data: { settings: { ...tenant.settings, trustedIps: { ranges: ['203.0.113.0/24', '198.51.100.0/24', '192.0.2.0/24'], onPremises: false, federatedBypass: false } } },
          occurredAt: now.toISOString(),
        },
      ]);
    // A wide public-looking range that contains private space is not public either.
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { trustedIps: { ranges: ['8.0.0.0/4'] } } } }, now)
      .thenThrows('invalid_request', /not public/);
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { trustedIps: { ranges: ['10.1.0.0/16', '8.8.8.0/24'], onPremises: true } } } }, now)
      .then([
        {
          type: 'TenantSettingsChanged',
          data: { settings: { ...tenant.settings, trustedIps: { ranges: ['10.1.0.0/16', '8.8.8.0/24'], onPremises: true, federatedBypass: false } } },
          occurredAt: now.toISOString(),
        },
      ]);
  });

  it('refuses private or special ranges in a trusted named location unless onPremises, in both families', () => {
    for (const range of ['10.0.0.0/8', '0.0.0.0/0', '8.0.0.0/4', '100.64.0.0/10', '198.18.0.0/15', '224.0.0.0/4', '::/0', 'fc00::/7', 'fe80::/10', '2001::/32', '2000::/3', '::ffff:10.0.0.0/104', '2002:a00::/24']) {
      spec
        .given([created])
        .when({ type: 'ConfigureTenant', data: { settings: { namedLocations: [{ name: 'Office', trusted: true, ranges: ['8.8.8.0/24', range] }] } } }, now)
        .thenThrows('invalid_request', /namedLocations\[0\]\.ranges: 1 range\(s\) of a trusted location are not public/);
    }
    const accepted = (settings: Record<string, unknown>) =>
      spec.given([created]).when({ type: 'ConfigureTenant', data: { settings } }, now).then([
        { type: 'TenantSettingsChanged', data: { settings: { ...tenant.settings, ...settings } }, occurredAt: now.toISOString() },
      ]);
    accepted({ namedLocations: [{ name: 'Office', trusted: true, ranges: ['8.8.8.0/24', '2a00:1450:4001::/48'] }] });
    // The documentation ranges are nobody's private network: public, as examples and tests use them.
    accepted({ namedLocations: [{ name: 'Example', trusted: true, ranges: ['203.0.113.0/24', '198.51.100.7/32', '192.0.2.0/24', '2001:db8::/32', '2001:db8:77::/48'] }] });
    // Not trusted (a location only named in reports), or on premises: any range.
    accepted({ namedLocations: [{ name: 'Guest Wi-Fi', trusted: false, ranges: ['10.0.0.0/8', 'fc00::/7'] }] });
    accepted({ trustedIps: { ranges: [], onPremises: true, federatedBypass: false }, namedLocations: [{ name: 'LAN', trusted: true, ranges: ['10.0.0.0/8', 'fd00::/8'] }] });
  });

  it('refuses named locations with the same name', () => {
    const office = { name: 'Office', trusted: true, ranges: ['2a00:1450:4001::/48'] };
    spec
      .given([created])
      .when({ type: 'ConfigureTenant', data: { settings: { namedLocations: [office, office] } } }, now)
      .thenThrows('invalid_request', /names must be unique/);
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

describe('tenant decider: delete (tenants.delete, offboarding)', () => {
  const deleted = tenantDeleted(tenant, { occurredAt: '2025-05-10T00:00:00.000Z' });
  const erased = tenantErased(tenant, { occurredAt: '2025-05-10T00:05:00.000Z', data: { deletedAt: '2025-05-10T00:00:00.000Z', users: 2, hardwareTokens: 1, recordings: 0, clients: 1 } });
  const counts = { users: 3, hardwareTokens: 0, recordings: 0, clients: 1 };

  it('deletes an existing tenant once; again, while deleting or once erased, records nothing; an unknown tenant is not_found', () => {
    spec.given([created]).when({ type: 'DeleteTenant', data: {} }, now).then([{ type: 'TenantDeleted', data: {}, occurredAt: now.toISOString() }]);
    spec.given([created, deleted]).when({ type: 'DeleteTenant', data: {} }, now).thenNothing();
    spec.given([created, deleted, erased]).when({ type: 'DeleteTenant', data: {} }, now).thenNothing();
    spec.given([]).when({ type: 'DeleteTenant', data: {} }, now).thenThrows('not_found', /unknown tenant/);
  });

  it('refuses to configure or provision a tenant being deleted (conflict), creates it anew once erased', () => {
    spec.given([created, deleted]).when({ type: 'ConfigureTenant', data: { settings: {} } }, now).thenThrows('conflict', /being deleted/);
    spec.given([created, deleted]).when({ type: 'ProvisionTenant', data: {} }, now).thenThrows('conflict', /being deleted/);
    spec
      .given([created, deleted, erased])
      .when({ type: 'ConfigureTenant', data: { settings: { maxAttempts: 3 } } }, now)
      .then([{ type: 'TenantCreated', data: { settings: { ...defaultTenantSettings(), maxAttempts: 3 } }, occurredAt: now.toISOString() }]);
  });

  it('records the offboarding once, with when the deletion was asked; nothing for a tenant not being deleted', () => {
    spec
      .given([created, deleted])
      .when({ type: 'RecordTenantErased', data: counts }, now)
      .then([{ type: 'TenantErased', data: { deletedAt: '2025-05-10T00:00:00.000Z', ...counts }, occurredAt: now.toISOString() }]);
    spec.given([created, deleted, erased]).when({ type: 'RecordTenantErased', data: counts }, now).thenNothing();
    spec.given([created]).when({ type: 'RecordTenantErased', data: counts }, now).thenNothing();
    spec.given([]).when({ type: 'RecordTenantErased', data: counts }, now).thenNothing();
  });

  it('each event is the whole state: the last one alone folds to it (the loader reads only the last)', () => {
    const fold = (events: Parameters<typeof tenantDecider.evolve>[1][]) => events.reduce(tenantDecider.evolve, tenantDecider.initialState());
    for (const history of [[created, deleted], [deleted]]) {
      assert.deepEqual(fold(history), { exists: false, deletion: { deletedAt: '2025-05-10T00:00:00.000Z' } });
    }
    const whole = { exists: false, deletion: { deletedAt: '2025-05-10T00:00:00.000Z', erasedAt: '2025-05-10T00:05:00.000Z', erased: { users: 2, hardwareTokens: 1, recordings: 0, clients: 1 } } };
    assert.deepEqual(fold([created, deleted, erased]), whole);
    assert.deepEqual(fold([erased]), whole);
  });
});
