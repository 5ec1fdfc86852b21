import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { DeviceClient } from '@mfa/authenticator';
import { Subjects } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeApns, FakeFcm, itWith, startStack, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

/**
 * Push through the providers, end to end: apps activate with their FCM and APNs tokens (sealed by
 * user-settings, opened by dispatch), a push start reaches them through local fakes of FCM and
 * APNs that speak their wire protocols, the app answers over the device API; a token a provider
 * refuses sends its device back to activation.
 */
describe('end to end: push notifications through FCM and APNs', () => {
  const fcm = new FakeFcm();
  const apns = new FakeApns();
  let stack: Stack;
  let nc: NatsConnection;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    await Promise.all([fcm.start(), apns.start()]);
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch'],
      env: { NODE_ENV: 'test', LOG_LEVEL: 'warn', NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl },
      serviceEnv: { dispatch: { ...fcm.env(), ...apns.env(), PUSH_RETRY_BASE_MS: '20' } },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-push-providers' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await Promise.all([fcm.stop(), apns.stop()]);
  });

  /** A user with one app per platform given, each activated with a token of that platform. */
  async function userWithApps(platforms: Array<'android' | 'ios'>) {
    const tenantId = uniqueTenant('pushp');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('app');
    await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Push User' });
    const apps: Array<{ platform: 'android' | 'ios'; token: string; client: DeviceClient }> = [];
    for (const platform of platforms) {
      const { activationCode } = await ask(Subjects.usersPushEnroll, { tenantId, userId });
      const token = platform === 'ios' ? randomBytes(32).toString('hex') : `fcm-${randomBytes(32).toString('base64url')}`;
      const url = `${stack.url('auth-challenge')}/device/v1/activate?code=${encodeURIComponent(String(activationCode))}`;
      apps.push({ platform, token, client: await DeviceClient.activate(url, { platform, pushToken: token, name: `${platform} phone` }) });
    }
    return { tenantId, userId, apps };
  }

  const startPush = (tenantId: string, userId: string) =>
    eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp: '8.8.8.8', application: 'VPN' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'a pending push');

  itWith({ real: ['nats', 'redis'], fake: ['fcm', 'apns'] }, 'the Android app is woken through FCM and the iPhone through APNs, with nothing but the challenge; the app approves', async () => {
    const { tenantId, userId, apps } = await userWithApps(['android', 'ios']);
    const [android, iphone] = apps as [(typeof apps)[0], (typeof apps)[0]];
    const start = await startPush(tenantId, userId);
    const challengeId = String(start.challengeId);

    const toAndroid = await fcm.waitFor((m) => m.token === android.token, 20_000);
    assert.deepEqual(toAndroid.data, { type: 'mfa.challenge', challengeId });
    const toIphone = await apns.waitFor((n) => n.token === iphone.token, 20_000);
    assert.deepEqual(toIphone.payload, { aps: { alert: { title: 'Sign-in request', body: 'Open the app to approve or deny it.' }, 'content-available': 1 }, type: 'mfa.challenge', challengeId });
    for (const sent of [JSON.stringify(toAndroid), JSON.stringify(toIphone.payload)]) {
      assert.ok(!sent.includes(`"${String(start.numberMatch)}"`) && !sent.includes('8.8.8.8') && !sent.includes('VPN'), 'no detail of the sign-in in a notification');
    }

    const pending = await iphone.client.pending();
    assert.equal(pending?.challengeId, challengeId);
    assert.deepEqual(await iphone.client.answer(challengeId, 'approve', String(start.numberMatch)), { status: 'approved' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId })).status, 'approved');
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, 'a token FCM no longer knows sends its device back to activation, and the sign-in says the push could not be delivered', async () => {
    const { tenantId, userId, apps } = await userWithApps(['android']);
    const [android] = apps as [(typeof apps)[0]];
    fcm.unregister(android.token);
    const start = await startPush(tenantId, userId);
    const devices = await eventually(async () => {
      const user = await ask(Subjects.usersGet, { tenantId, userId });
      const listed = user.devices as Array<{ deviceId: string; state: string }>;
      return listed.every((d) => d.state === 'reregister') ? listed : undefined;
    }, 20_000, 'the device marked for activation again');
    assert.deepEqual(devices.map((d) => d.deviceId), [android.client.identity.deviceId]);
    const status = await eventually(async () => {
      const reply = await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId });
      return reply.reason === 'delivery_failed' ? reply : undefined;
    }, 20_000, 'the push undeliverable');
    assert.equal(status.status, 'denied');
    assert.equal(fcm.messagesTo(android.token).length, 0);
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, "an undeliverable push falls back to the user's phone only while the tenant's country rules allow it", async () => {
    const tenantId = uniqueTenant('pushc');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('app');
    await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Push User', phoneNumber: '+46701740605' });
    const { activationCode } = await ask(Subjects.usersPushEnroll, { tenantId, userId });
    const token = `fcm-${randomBytes(32).toString('base64url')}`;
    const url = `${stack.url('auth-challenge')}/device/v1/activate?code=${encodeURIComponent(String(activationCode))}`;
    await DeviceClient.activate(url, { platform: 'android', pushToken: token, name: 'android phone' });
    fcm.unregister(token);
    const start = await startPush(tenantId, userId);
    const fallbackOf = (wanted: (methods: string[]) => boolean, what: string) =>
      eventually(async () => {
        const reply = await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId });
        const methods = reply.fallbackMethods as string[] | undefined;
        return reply.reason === 'delivery_failed' && methods && wanted(methods) ? reply : undefined;
      }, 20_000, what);
    assert.deepEqual(await fallbackOf(() => true, 'the push undeliverable'), {
      challengeId: start.challengeId,
      status: 'denied',
      reason: 'delivery_failed',
      fallbackMethods: ['sms', 'voice'],
    });
    // The tenant now blocks Sweden: a start would text or call no Swedish phone, so the status no
    // longer offers them (the tenant's settings reach auth-challenge through the event log).
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { sms: { allowedCountries: null, blockedCountries: ['SE'] } } })).error, undefined);
    const blocked = await fallbackOf((methods) => methods.length === 0, 'no phone method to fall back to');
    assert.deepEqual(blocked.fallbackMethods, []);
    const sms = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' });
    assert.deepEqual([sms.status, sms.reason], ['registration_required', 'country_not_allowed']);
  });
});
