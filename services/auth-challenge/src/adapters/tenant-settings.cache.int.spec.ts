import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { defaultTenantSettings, EventSubjects, Streams } from '@mfa/contracts';
import { connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, tenantCreated, testEnv, testTenant, uniqueTenant } from '@mfa/testing';
import { TenantSettingsCache } from './tenant-settings.cache.js';

describe('tenant settings cache (real NATS)', () => {
  let nats: NatsClients;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'tenant-cache-test' });
    await ensureStream(nats.jsm, Streams.userSettings);
  });

  after(async () => {
    await nats?.nc.close();
  });

  itWith({ real: ['nats'] }, 'is ready once the log is folded in; reads a tenant it has not seen from the log, within a budget', async () => {
    const cache = new TenantSettingsCache(nats, createLogger('tenant-cache-test'));
    assert.equal(cache.ready, false, 'not ready before it has read the log');
    await cache.start();
    try {
      assert.equal(cache.ready, true);
      // A tenant whose event is written behind the cache's back (as if the consumer had not delivered it yet).
      const tenantId = uniqueTenant('late');
      const settings = { ...defaultTenantSettings(), maxAttempts: 2, enabledMethods: ['totp' as const] };
      const created = tenantCreated(testTenant({ tenantId, settings }));
      await new EventPublisher(nats.js).publish(EventSubjects.tenant(tenantId), created);
      assert.equal(await cache.lookup(tenantId), 'known');
      assert.deepEqual([cache.get(tenantId).maxAttempts, cache.get(tenantId).enabledMethods], [2, ['totp']]);
      // Made-up tenants: absent, and at most 20 lookups a second reach the log; those over the
      // budget are unread (a start then decides nothing rather than apply the defaults).
      const answers = await Promise.all(Array.from({ length: 25 }, () => cache.lookup(uniqueTenant('nobody'))));
      assert.ok(answers.every((a) => a === 'absent' || a === 'unread'), answers.join());
      assert.ok(answers.filter((a) => a === 'unread').length >= 5, answers.join());
    } finally {
      await cache.stop();
    }
  });
});
