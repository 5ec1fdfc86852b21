import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Consumers, EventSubjects, InternalSubjects, parseEvent, Streams, type AnyEvent, type DeviceReregisterRequest, type EventOf } from '@mfa/contracts';
import { loadKeyring, seal, SealContext } from '@mfa/crypto';
import { connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { challengeId as deviceIdOf, parseChallengeId, RedisKeys } from '@mfa/projection';
import type { RunningService } from '@mfa/service-kit';
import { registry } from '@mfa/telemetry';
import type { Subscription } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { challengeStartedV2, eventually, FakeApns, FakeFcm, itWith, testChallenge, testEnv, testUser, uniqueTenant } from '@mfa/testing';
import { boot } from './boot.js';
import { loadDispatchConfig } from './config.js';

// Real NATS and Redis, the real dispatch app in-process, and fakes of FCM and APNs that speak their
// wire protocols. The devices are written into Redis as user-settings projects them; the push
// request is published as auth-challenge publishes it.

process.env.LOG_LEVEL ??= 'warn';

const tenantId = uniqueTenant('push');
const { keyring } = loadKeyring(process.env);
const fcm = new FakeFcm();
const apns = new FakeApns();
let nats: NatsClients;
let publisher: EventPublisher;
let redis: Redis;
let running: RunningService;
let fromSeq: number;
let reregisterSubscription: Subscription;
const reregisterRequests: DeviceReregisterRequest[] = [];

type Platform = 'android' | 'ios' | 'none';

/** A user with devices in Redis, and a push challenge of theirs published on the push subject. */
async function pushChallengeFor(platforms: Platform[], lifetimeSeconds = 180, options: { activatedUnderTag?: string } = {}) {
  const user = testUser({ tenantId, userId: `push.${randomUUID()}@contoso.example` });
  const now = new Date();
  const challenge = testChallenge(user, { method: 'push', startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + lifetimeSeconds * 1000).toISOString() });
  const { tag } = parseChallengeId(challenge.challengeId)!;
  const devices = platforms.map((platform) => {
    const nonce = randomBytes(16).toString('base64url');
    // An app activated under an earlier master key keeps the id it was given then (ProjectedDevice.id).
    const deviceId = deviceIdOf(options.activatedUnderTag ?? tag, nonce);
    const token = platform === 'ios' ? randomBytes(32).toString('hex') : platform === 'android' ? `fcm-${randomBytes(24).toString('base64url')}` : undefined;
    const stored = {
      state: 'active',
      algorithm: 'ES256',
      publicKey: randomBytes(32).toString('base64url'),
      platform,
      name: `${platform} device`,
      ...(token ? { sealedPushToken: seal(keyring, Buffer.from(token), SealContext.pushToken(tenantId, user.userId, deviceId)) } : {}),
      activatedAt: now.toISOString(),
      ...(options.activatedUnderTag ? { id: deviceId } : {}),
    };
    return { nonce, deviceId, token, platform, stored };
  });
  if (devices.length > 0) await redis.hset(RedisKeys.devices(tag), Object.fromEntries(devices.map((d) => [d.nonce, JSON.stringify(d.stored)])));
  // The challenge as auth-challenge keeps it, so a failure can be written on it.
  const id = parseChallengeId(challenge.challengeId)!;
  await redis.hset(RedisKeys.challenge(id.tag, id.nonce), { tenantId, status: 'pending' });
  await redis.pexpire(RedisKeys.challenge(id.tag, id.nonce), 180_000);
  // The user's pending push, as auth-challenge's start leaves it: `<challenge id>|<expires at>`.
  await redis.set(RedisKeys.pendingPush(id.tag), `${challenge.challengeId}|${Date.parse(challenge.expiresAt)}`, 'PX', 180_000);
  const event = challengeStartedV2(challenge);
  event.data.delivery = { channel: 'push' };
  const publish = () => publisher.publish(EventSubjects.challengeStarted('push'), event);
  return { user, event, challengeId: challenge.challengeId, tag, devices, publish };
}

/** The push outcomes of a challenge stored in MFA_DISPATCH since this suite started. */
async function outcomesOf(challengeId: string): Promise<AnyEvent[]> {
  const events: AnyEvent[] = [];
  for (let seq = fromSeq; ; ) {
    const msg = await nats.jsm.direct.getMessage(Streams.dispatch.name, { seq, next_by_subj: 'mfa.evt.dispatch.push.>' });
    if (!msg) return events;
    const event = parseEvent(msg.json());
    if (event.tenantId === tenantId && event.aggregateId === challengeId) events.push(event);
    seq = msg.seq + 1;
  }
}

const outcomeOf = (challengeId: string) => eventually(async () => (await outcomesOf(challengeId))[0], 20_000, `the push outcome of ${challengeId}`);

async function acknowledged(): Promise<number> {
  const metric = await registry.getSingleMetric('mfa_events_consumed_total')?.get();
  return metric?.values.find((v) => v.labels.consumer === Consumers.dispatchPush.durable && v.labels.outcome === 'ack')?.value ?? 0;
}

before(async () => {
  await Promise.all([fcm.start(), apns.start()]);
  nats = await connectNats({ url: testEnv.natsUrl, name: 'dispatch-push-int-test', connectTimeoutMs: 5_000 });
  publisher = new EventPublisher(nats.js);
  // dispatch follows the API clients in user-settings' stream, which user-settings creates: here, if this suite runs alone.
  await ensureStream(nats.jsm, Streams.userSettings);
  redis = new Redis(testEnv.redisUrl);
  // user-settings' side of the reregister request, played here: record it and say done.
  reregisterSubscription = nats.nc.subscribe(InternalSubjects.deviceReregister, {
    callback: (_error, msg) => {
      const request = msg.json<DeviceReregisterRequest>();
      if (request.tenantId !== tenantId) return;
      reregisterRequests.push(request);
      msg.respond(JSON.stringify({ deviceId: request.deviceId, state: 'reregister' }));
    },
  });
  running = await boot(
    loadDispatchConfig({
      ...process.env,
      NODE_ENV: 'test',
      NATS_URL: testEnv.natsUrl,
      REDIS_URL: testEnv.redisUrl,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      PUSH_RETRY_BASE_MS: '20',
      ...fcm.env(),
      ...apns.env(),
    }),
  );
  fromSeq = (await nats.jsm.streams.info(Streams.dispatch.name)).state.last_seq + 1;
});

after(async () => {
  await running?.app.close();
  reregisterSubscription?.unsubscribe();
  await nats?.nc.close();
  redis?.disconnect();
  await Promise.all([fcm.stop(), apns.stop()]);
});

describe('dispatch pushing to devices', () => {
  itWith({ real: ['nats', 'redis'], fake: ['fcm', 'apns'] }, 'pushes to the Android device through FCM and the iPhone through APNs, lists the poll-only device, and a redelivered request pushes nothing again', async () => {
    const { challengeId, devices, publish, event, tag } = await pushChallengeFor(['android', 'ios', 'none']);
    const [pixel, iphone, poller] = devices as [(typeof devices)[0], (typeof devices)[0], (typeof devices)[0]];
    const acksBefore = await acknowledged();
    await publish();
    const toPixel = await fcm.waitFor((m) => m.token === pixel.token);
    assert.deepEqual(toPixel.data, { type: 'mfa.challenge', challengeId });
    const toIphone = await apns.waitFor((n) => n.token === iphone.token);
    assert.equal(toIphone.payload.challengeId, challengeId);
    assert.equal(toIphone.expiration, String(Math.floor(Date.parse(event.data.expiresAt) / 1000)));

    const outcome = await outcomeOf(challengeId);
    assert.equal(outcome.type, 'PushSent');
    assert.deepEqual((outcome as EventOf<'PushSent'>).data, {
      challengeId,
      sent: [
        { deviceId: pixel.deviceId, provider: 'fcm', providerMessageId: toPixel.name },
        { deviceId: iphone.deviceId, provider: 'apns', providerMessageId: toIphone.apnsId },
      ].sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1)),
      polling: [poller.deviceId],
    });
    assert.equal(await redis.get(RedisKeys.pendingPush(tag)), `${challengeId}|${Date.parse(event.data.expiresAt)}`, 'the push still waits for the user');

    // The same request again under another message id, as after a NATS crash that lost the ack.
    await nats.js.publish(EventSubjects.challengeStarted('push'), JSON.stringify(event), { msgID: randomUUID() });
    await eventually(async () => ((await acknowledged()) >= acksBefore + 2 ? true : undefined), 20_000, 'both requests handled');
    assert.equal(fcm.messagesTo(pixel.token!).length, 1, 'the redelivered request pushed again');
    assert.equal(apns.notificationsTo(iphone.token!).length, 1, 'the redelivered request pushed again');
    assert.equal((await outcomesOf(challengeId)).length, 1, 'one outcome stored');
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, 'a request pushed, then delivered again after its challenge expired, finds it pushed: nothing more pushed, and push not marked failed', async () => {
    const { challengeId, devices, publish, event, tag } = await pushChallengeFor(['android'], 2);
    const [pixel] = devices as [(typeof devices)[0]];
    const acksBefore = await acknowledged();
    await publish();
    assert.equal((await outcomeOf(challengeId)).type, 'PushSent');
    await new Promise((r) => setTimeout(r, Date.parse(event.data.expiresAt) - Date.now() + 100));
    await nats.js.publish(EventSubjects.challengeStarted('push'), JSON.stringify(event), { msgID: randomUUID() });
    await eventually(async () => ((await acknowledged()) >= acksBefore + 2 ? true : undefined), 20_000, 'both requests handled');
    assert.equal(fcm.messagesTo(pixel.token!).length, 1);
    const id = parseChallengeId(challengeId)!;
    assert.equal(await redis.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), null, 'status reads expired, not delivery_failed');
    assert.equal(await redis.hget(RedisKeys.failedMethods(tag), 'push'), null, 'push not marked failed for the user');
    assert.deepEqual((await outcomesOf(challengeId)).map((e) => e.type), ['PushSent']);
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, 'a token FCM no longer knows: user-settings is asked to mark the device, and with no other device the challenge says delivery failed', async () => {
    const { challengeId, devices, publish, user, tag } = await pushChallengeFor(['android']);
    const [pixel] = devices as [(typeof devices)[0]];
    fcm.unregister(pixel.token!);
    await publish();
    const outcome = await outcomeOf(challengeId);
    assert.equal(outcome.type, 'PushDeliveryFailed');
    assert.deepEqual((outcome as EventOf<'PushDeliveryFailed'>).data.failures, [
      { deviceId: pixel.deviceId, provider: 'fcm', error: 'FCM 404 UNREGISTERED: Requested entity was not found.', transient: false },
    ]);
    const request = await eventually(async () => reregisterRequests.find((r) => r.deviceId === pixel.deviceId), 10_000, 'the reregister request');
    assert.deepEqual(request, { tenantId, userId: user.userId, deviceId: pixel.deviceId, provider: 'fcm', error: 'FCM 404 UNREGISTERED: Requested entity was not found.' });
    const { nonce } = parseChallengeId(challengeId)!;
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), 'failed');
    assert.ok(await redis.hget(RedisKeys.failedMethods(tag), 'push'));
    // No device got it: it no longer waits for the user (a start naming push may try again, and it is not counted as ignored).
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 0, 'the undelivered push no longer waits');
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, 'an app activated under an earlier master key (its id carries the user’s tag of then) is pushed with its token, named by its id; a token FCM refuses asks user-settings to mark it by that id', async () => {
    const earlierTag = randomBytes(16).toString('base64url').slice(0, 22);
    const { challengeId, devices, publish, user } = await pushChallengeFor(['android', 'android'], 180, { activatedUnderTag: earlierTag });
    const [kept, refused] = devices as [(typeof devices)[0], (typeof devices)[0]];
    fcm.unregister(refused.token!);
    await publish();
    await fcm.waitFor((m) => m.token === kept.token);
    const outcome = await outcomeOf(challengeId);
    assert.equal(outcome.type, 'PushSent');
    assert.deepEqual((outcome as EventOf<'PushSent'>).data.sent.map((d) => d.deviceId), [kept.deviceId]);
    assert.ok(kept.deviceId.startsWith(`${earlierTag}.`));
    const request = await eventually(async () => reregisterRequests.find((r) => r.deviceId === refused.deviceId), 10_000, 'the reregister request');
    assert.deepEqual([request.userId, request.deviceId], [user.userId, refused.deviceId]);
  });

  itWith({ real: ['nats', 'redis'], fake: ['apns'] }, 'retries an APNs outage with back-off and pushes once', async () => {
    const { challengeId, devices, publish } = await pushChallengeFor(['ios']);
    const [iphone] = devices as [(typeof devices)[0]];
    apns.failNext({ status: 503 }, { status: 500 });
    await publish();
    const outcome = await outcomeOf(challengeId);
    assert.equal(outcome.type, 'PushSent');
    assert.equal(apns.notificationsTo(iphone.token!).length, 1);
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm', 'apns'] }, 'shows the push providers in /health and counts pushes in /metrics', async () => {
    const health = await fetch(`${running.url}/health`);
    assert.deepEqual(await health.json(), { status: 'ok', checks: { nats: 'ok', redis: 'ok', sms_providers: 'ok', push_providers: 'ok' } });
    const metrics = await (await fetch(`${running.url}/metrics`)).text();
    assert.match(metrics, /mfa_push_send_total\{[^}]*provider="fcm"[^}]*outcome="sent"[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_push_send_total\{[^}]*provider="fcm"[^}]*outcome="invalid_token"[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_push_send_total\{[^}]*provider="apns"[^}]*outcome="transient_error"[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_push_send_total\{[^}]*provider="none"[^}]*outcome="polling"[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_push_provider_duration_seconds_count\{[^}]*provider="apns"/);
    assert.match(metrics, /mfa_push_auth_tokens_total\{[^}]*provider="fcm"[^}]*outcome="issued"[^}]*\} [1-9]/);
  });
});
