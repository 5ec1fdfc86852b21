import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TenantsConfigureRequest as TenantsConfigureCommand } from './api.js';
import { parseEvent } from './events.js';
import { DeviceActivateBody, UsersPushEnrollRequest } from './push.js';
import { defaultTenantSettings } from './tenant-settings.js';

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

  it('takes only country codes phone numbers have (GB, not UK or EU), and a caller id of the US itself', () => {
    const ok = (settings: unknown) => TenantsConfigureCommand.safeParse({ tenantId: 'contoso', settings }).success;
    assert.equal(ok({ sms: { blockedCountries: ['GB', 'XK', 'AC'], allowedCountries: null } }), true);
    for (const code of ['UK', 'EU', 'UN', 'SU']) {
      assert.equal(ok({ sms: { blockedCountries: [code] } }), false, code);
      assert.equal(ok({ sms: { allowedCountries: [code] } }), false, code);
    }
    // Not even of a country code's shape: refused, never thrown (Intl.DisplayNames throws on them).
    for (const code of ['', 'a', 'A1', 'frx', 'root', 'gb', '419', 'ZZ', '\u0000', '\ud800']) {
      assert.equal(ok({ sms: { blockedCountries: [code] } }), false, JSON.stringify(code));
      assert.equal(ok({ sms: { allowedCountries: [code] } }), false, JSON.stringify(code));
    }
    assert.equal(ok({ voice: { callerId: '+18665394191' } }), true);
    assert.equal(ok({ voice: { callerId: '+14165550123' } }), false, 'a Canadian number');
    assert.equal(ok({ voice: { callerId: '+18762345678' } }), false, 'a Jamaican number');
  });

  it('refuses a new named location whose name hides characters; a stored one still reads', () => {
    const location = { name: 'HQ\u200b', trusted: false, ranges: ['203.0.113.0/24'] };
    assert.equal(TenantsConfigureCommand.safeParse({ tenantId: 'contoso', settings: { namedLocations: [location] } }).success, false);
    const stored = {
      id: '0b7e1b9e-3f4e-4c8e-9d6a-2a1f3c4d5e6f',
      type: 'TenantCreated',
      version: 1,
      tenantId: 'contoso',
      aggregateId: 'contoso',
      occurredAt: '2026-11-01T00:00:00.000Z',
      metadata: {},
      data: { settings: { ...defaultTenantSettings(), namedLocations: [location] } },
    };
    assert.equal(parseEvent(stored).type, 'TenantCreated');
  });

  it('reads an audit event whose operator fields were plain strings when written', () => {
    const event = parseEvent({
      id: '0b7e1b9e-3f4e-4c8e-9d6a-2a1f3c4d5e70',
      type: 'AdminActionRecorded',
      version: 1,
      tenantId: 'contoso',
      aggregateId: 'contoso',
      occurredAt: '2026-11-01T00:00:00.000Z',
      metadata: {},
      data: { subject: 'mfa.v1.users.block', clientId: 'platform', operator: { sub: 'alice', email: 'alice' }, outcome: 'ok' },
    });
    assert.equal(event.type, 'AdminActionRecorded');
  });

  it('ignores unknown fields of the users, oath and voice messages requests, as docs/api.md says; a device name hides no characters', () => {
    assert.deepEqual(UsersPushEnrollRequest.parse({ tenantId: 'contoso', userId: 'helga', requestId: 'x' }), { tenantId: 'contoso', userId: 'helga' });
    const body = { code: 'K7QX-M2PA-9VZD-4HTE', algorithm: 'ES256', publicKey: 'AAAA', proof: 'AAAA', platform: 'none' };
    assert.equal(DeviceActivateBody.safeParse({ ...body, name: 'Helga’s Pixel' }).success, true);
    for (const name of ['Phone \u202egnp.exe', 'a\u0000b', 'x\u200by', '']) assert.equal(DeviceActivateBody.safeParse({ ...body, name }).success, false, JSON.stringify(name));
  });
});
