import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { PushProviderError } from '../push-provider.js';
import { APNS_ALERT, ApnsPushProvider, apnsRequest, classifyApnsResponse } from './apns.provider.js';
import { ApnsProviderTokens } from './provider-tokens.js';

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const MINUTE = 60_000;

describe('APNs request', () => {
  it('is an alert for the app, high priority, stored no longer than the challenge lives, with nothing but the type and the challenge', () => {
    const expiresAt = new Date('2026-11-30T12:03:00.000Z');
    const { headers, body } = apnsRequest({ token: 'ab'.repeat(32), challengeId: 'tag.nonce', expiresAt }, 'com.example.authenticator', 'jwt', 'id-1');
    assert.deepEqual(headers, {
      ':method': 'POST',
      ':path': `/3/device/${'ab'.repeat(32)}`,
      authorization: 'bearer jwt',
      'apns-id': 'id-1',
      'apns-topic': 'com.example.authenticator',
      'apns-push-type': 'alert',
      'apns-priority': '10',
      'apns-expiration': String(expiresAt.getTime() / 1000),
      'content-type': 'application/json',
    });
    assert.deepEqual(JSON.parse(body), { aps: { alert: APNS_ALERT, 'content-available': 1 }, type: 'mfa.challenge', challengeId: 'tag.nonce' });
  });
});

describe('APNs answers', () => {
  it('200 is sent', () => assert.deepEqual(classifyApnsResponse(200, undefined), { ok: true }));

  it('Unregistered, ExpiredToken and BadDeviceToken: the device must register again', () => {
    for (const [status, reason] of [
      [410, 'Unregistered'],
      [410, 'ExpiredToken'],
      [400, 'BadDeviceToken'],
    ] as const) {
      const result = classifyApnsResponse(status, { reason });
      assert.ok(!result.ok && result.invalidToken && !result.configuration && !result.transient, reason);
    }
  });

  it('DeviceTokenNotForTopic is our APNS_TOPIC, not the device: permanent, a configuration error, the device not marked', () => {
    const result = classifyApnsResponse(400, { reason: 'DeviceTokenNotForTopic' });
    assert.ok(!result.ok && result.configuration && !result.invalidToken && !result.transient);
  });

  it('ExpiredProviderToken asks for a new provider token; other 403s are configuration', () => {
    const stale = classifyApnsResponse(403, { reason: 'ExpiredProviderToken' });
    assert.ok(!stale.ok && stale.expiredProviderToken && !stale.transient && !stale.configuration);
    const invalid = classifyApnsResponse(403, { reason: 'InvalidProviderToken' });
    assert.ok(!invalid.ok && !invalid.expiredProviderToken && !invalid.invalidToken && !invalid.transient && invalid.configuration);
  });

  it('a topic or a key APNs refuses is our setting, whatever the device: configuration errors, no device marked', () => {
    for (const [status, reason] of [
      [400, 'BadTopic'],
      [400, 'MissingTopic'],
      [400, 'TopicDisallowed'],
      [403, 'InvalidProviderToken'],
      [403, 'MissingProviderToken'],
    ] as const) {
      const result = classifyApnsResponse(status, { reason });
      assert.ok(!result.ok && result.configuration && !result.invalidToken && !result.transient, reason);
    }
    const payload = classifyApnsResponse(413, { reason: 'PayloadTooLarge' });
    assert.ok(!payload.ok && !payload.configuration && !payload.transient, 'a refusal of this push alone is no setting');
  });

  it('too many requests, token updates too often, and outages may succeed later; a bad topic will not', () => {
    for (const [status, reason] of [
      [429, 'TooManyRequests'],
      [429, 'TooManyProviderTokenUpdates'],
      [500, 'InternalServerError'],
      [503, 'ServiceUnavailable'],
    ] as const) {
      const result = classifyApnsResponse(status, { reason });
      assert.ok(!result.ok && result.transient && !result.invalidToken, reason);
    }
    const topic = classifyApnsResponse(400, { reason: 'TopicDisallowed' });
    assert.ok(!topic.ok && !topic.transient && !topic.invalidToken);
  });
});

describe('APNs provider tokens', () => {
  it('signs ES256 with the key id and team, keeps one token 50 minutes, then makes another', async () => {
    let now = Date.parse('2026-11-30T12:00:00Z');
    const tokens = new ApnsProviderTokens({ key: ec.privateKey, keyId: 'ABC123DEFG', teamId: 'TEAM123456', clock: () => now });
    const first = await tokens.get();
    assert.deepEqual(decodeProtectedHeader(first), { alg: 'ES256', kid: 'ABC123DEFG' });
    const { payload } = await jwtVerify(first, ec.publicKey, { issuer: 'TEAM123456', currentDate: new Date(now) });
    assert.equal(payload.iat, now / 1000);
    now += 49 * MINUTE;
    assert.equal(await tokens.get(), first);
    now += 2 * MINUTE;
    const second = await tokens.get();
    assert.notEqual(second, first);
  });

  it('renews a token APNs calls expired only once it is 20 minutes old (APNs refuses more frequent updates)', async () => {
    let now = Date.parse('2026-11-30T12:00:00Z');
    const tokens = new ApnsProviderTokens({ key: ec.privateKey, keyId: 'ABC123DEFG', teamId: 'TEAM123456', clock: () => now });
    const first = await tokens.get();
    now += 10 * MINUTE;
    assert.equal(await tokens.renew(first), undefined, 'a young token called expired: the clock is wrong, a new one would not help');
    now += 15 * MINUTE;
    const second = await tokens.renew(first);
    assert.ok(second && second !== first);
    assert.equal(await tokens.renew(first), second, 'already replaced by another send');
  });
});

describe('APNs provider', () => {
  it('refuses a device token that is not hex without a request (it would be a path)', async () => {
    const provider = new ApnsPushProvider({ url: 'https://127.0.0.1:1', key: ec.privateKey, keyId: 'ABC123DEFG', teamId: 'TEAM123456', topic: 'com.example.authenticator', timeoutMs: 1000 });
    await assert.rejects(
      provider.send({ token: '../../3/device/abc', challengeId: 'tag.nonce', expiresAt: new Date(Date.now() + 60_000) }),
      (e: unknown) => e instanceof PushProviderError && e.invalidToken && e.code === 'BadDeviceToken',
    );
    await provider.close();
  });
});
