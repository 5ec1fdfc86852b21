import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { Consumers, EventSubjects, InternalSubjects, parseEvent, Streams, type AnyEvent } from '@mfa/contracts';
import { loadKeyring, seal, SealContext } from '@mfa/crypto';
import { connectNats, DeletedTenants, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { challengeId as deviceIdOf, parseChallengeId, RedisKeys } from '@mfa/projection';
import { sealPersonalData, UserDataKeys, type RunningService } from '@mfa/service-kit';
import { registry } from '@mfa/telemetry';
import { Redis } from 'ioredis';
import { challengeStarted, challengeStartedV2, eventually, FakeFcm, FakeTwilio, freePort, itWith, tenantDeleted, testChallenge, testEnv, testTenant, testUser, uniqueTenant, type CallBehaviour } from '@mfa/testing';
import { boot } from './boot.js';
import { loadDispatchConfig } from './config.js';

// Real NATS and Redis, the real dispatch app in-process, fakes of Twilio (SMS and calls) and FCM.
// A tenant is deleted as user-settings records it (TenantDeleted on its subject of
// MFA_USER_SETTINGS); the challenge requests are published as auth-challenge publishes them.
// The durable consumers are shared with whatever else publishes requests: every assertion is
// filtered by this run's tenants, numbers and tokens.

process.env.LOG_LEVEL ??= 'warn';

const { keyring } = loadKeyring(process.env);
/** Deleted before dispatch starts: known from its boot read. */
const deletedBefore = uniqueTenant('gone');
/** Deleted while dispatch runs: known from the live follow. */
const deletedLater = uniqueTenant('gone-live');
const live = uniqueTenant('live');
const twilio = new FakeTwilio();
const fcm = new FakeFcm();
let nats: NatsClients;
let publisher: EventPublisher;
let redis: Redis;
let running: RunningService;
let fromSeq: number;

const uniquePhone = () => `+1555${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;

async function deleteTenant(tenantId: string): Promise<void> {
  await publisher.publish(EventSubjects.tenant(tenantId), tenantDeleted(testTenant({ tenantId })));
}

/** The challenge as auth-challenge keeps it in Redis (dispatch sends nothing for one it no longer holds). */
async function challengeInRedis(challengeId: string, tenantId: string): Promise<void> {
  const id = parseChallengeId(challengeId)!;
  await redis.hset(RedisKeys.challenge(id.tag, id.nonce), { tenantId, status: 'pending' });
  await redis.pexpire(RedisKeys.challenge(id.tag, id.nonce), 300_000);
}

const startsIn = (lifetimeMs: number) => {
  const now = new Date();
  return { startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + lifetimeMs).toISOString() };
};

async function requestSms(tenantId: string) {
  const to = uniquePhone();
  const challenge = testChallenge(testUser({ tenantId, profile: { phoneNumber: to } }), startsIn(300_000));
  const sealedCode = seal(keyring, Buffer.from('141421'), SealContext.smsCode(tenantId, challenge.challengeId));
  const event = challengeStarted(challenge, { data: { delivery: { channel: 'sms', to, sealedCode } } });
  await challengeInRedis(challenge.challengeId, tenantId);
  await publisher.publish(EventSubjects.smsRequested, event);
  return { to, challengeId: challenge.challengeId };
}

async function requestCall(tenantId: string, phone: CallBehaviour = { answer: 'busy' }) {
  const to = uniquePhone();
  twilio.phone(to, phone);
  const user = testUser({ tenantId, userId: `voice.${randomUUID()}@contoso.example`, profile: { phoneNumber: to } });
  const challenge = testChallenge(user, { method: 'voice', ...startsIn(300_000) });
  const key = await new UserDataKeys(nats, keyring).getOrCreate(tenantId, user.userId);
  const event = challengeStartedV2(challenge, sealPersonalData(key, { tenantId, userId: user.userId, purpose: 'challenge' }, user.profile));
  event.data.delivery = { channel: 'voice', callerId: '+15005550006', pinMode: false, fraudCode: null };
  await challengeInRedis(challenge.challengeId, tenantId);
  await publisher.publish(EventSubjects.challengeStarted('voice'), event);
  return { to, challengeId: challenge.challengeId };
}

/** A push challenge of a user with one Android device in Redis, as user-settings projects it. */
async function requestPush(tenantId: string) {
  const user = testUser({ tenantId, userId: `push.${randomUUID()}@contoso.example` });
  const challenge = testChallenge(user, { method: 'push', ...startsIn(180_000) });
  const id = parseChallengeId(challenge.challengeId)!;
  const nonce = randomBytes(16).toString('base64url');
  const deviceId = deviceIdOf(id.tag, nonce);
  const token = `fcm-${randomBytes(24).toString('base64url')}`;
  const device = {
    state: 'active',
    algorithm: 'ES256',
    publicKey: randomBytes(32).toString('base64url'),
    platform: 'android',
    name: 'android device',
    sealedPushToken: seal(keyring, Buffer.from(token), SealContext.pushToken(tenantId, user.userId, deviceId)),
    activatedAt: new Date().toISOString(),
  };
  await redis.hset(RedisKeys.devices(id.tag), { [nonce]: JSON.stringify(device) });
  await redis.pexpire(RedisKeys.devices(id.tag), 300_000);
  await challengeInRedis(challenge.challengeId, tenantId);
  const event = challengeStartedV2(challenge);
  event.data.delivery = { channel: 'push' };
  await publisher.publish(EventSubjects.challengeStarted('push'), event);
  return { token, challengeId: challenge.challengeId };
}

/** This process's count of a metric with these labels. */
async function counted(metric: string, labels: Record<string, string>): Promise<number> {
  const values = (await registry.getSingleMetric(metric)?.get())?.values ?? [];
  return values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value))?.value ?? 0;
}

/**
 * What became of a request: it reached the provider (`sent`), or dispatch counted it refused for
 * its tenant (`refused`), whichever is seen first.
 */
async function sentOrRefused(reached: () => boolean, metric: string, labels: Record<string, string>, before: number, what: string): Promise<'sent' | 'refused'> {
  return eventually(async () => (reached() ? 'sent' : (await counted(metric, labels)) > before ? 'refused' : undefined), 20_000, what);
}

/** The outcomes (MFA_DISPATCH) of a challenge since this suite started. */
async function outcomesOf(tenantId: string, challengeId: string): Promise<AnyEvent[]> {
  const events: AnyEvent[] = [];
  for (let seq = fromSeq; ; ) {
    const msg = await nats.jsm.direct.getMessage(Streams.dispatch.name, { seq, next_by_subj: EventSubjects.allDispatch });
    if (!msg) return events;
    const event = parseEvent(msg.json());
    if (event.tenantId === tenantId && event.aggregateId === challengeId) events.push(event);
    seq = msg.seq + 1;
  }
}

const smsRefused = { provider: 'none', outcome: 'tenant_deleted' };
const pushRefused = { provider: 'none', outcome: 'tenant_deleted' };
const callRefused = { outcome: 'tenant_deleted' };

before(async () => {
  await Promise.all([twilio.start(), fcm.start()]);
  nats = await connectNats({ url: testEnv.natsUrl, name: 'dispatch-tenant-deleted-int-test', connectTimeoutMs: 5_000 });
  publisher = new EventPublisher(nats.js);
  // user-settings' stream, which user-settings creates: here, if this suite runs alone.
  await ensureStream(nats.jsm, Streams.userSettings);
  redis = new Redis(testEnv.redisUrl);
  await deleteTenant(deletedBefore);
  const port = await freePort();
  running = await boot(
    loadDispatchConfig({
      ...process.env,
      NODE_ENV: 'test',
      NATS_URL: testEnv.natsUrl,
      REDIS_URL: testEnv.redisUrl,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      VOICE_WEBHOOK_BASE_URL: `http://127.0.0.1:${port}`,
      SMS_RETRY_BASE_MS: '20',
      PUSH_RETRY_BASE_MS: '20',
      ...twilio.env(),
      ...fcm.env(),
    }),
  );
  fromSeq = (await nats.jsm.streams.info(Streams.dispatch.name)).state.last_seq + 1;
});

after(async () => {
  await running?.app.close();
  await nats?.nc.close();
  redis?.disconnect();
  await Promise.all([twilio.stop(), fcm.stop()]);
});

describe('dispatch and deleted tenants', () => {
  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'sends no SMS for a tenant deleted before dispatch started, records no outcome, and counts it as tenant_deleted', async () => {
    const before = await counted('mfa_sms_send_total', smsRefused);
    const acked = await counted('mfa_events_consumed_total', { consumer: Consumers.dispatchSms.durable, outcome: 'ack' });
    const { to, challengeId } = await requestSms(deletedBefore);
    assert.equal(await sentOrRefused(() => twilio.messagesTo(to).length > 0, 'mfa_sms_send_total', smsRefused, before, 'the SMS request handled'), 'refused');
    assert.equal(twilio.messagesTo(to).length, 0);
    assert.deepEqual(await outcomesOf(deletedBefore, challengeId), []);
    // Acknowledged (dropped), not given back to be tried again.
    await eventually(async () => ((await counted('mfa_events_consumed_total', { consumer: Consumers.dispatchSms.durable, outcome: 'ack' })) > acked ? true : undefined), 10_000, 'the request acknowledged');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'still sends the SMS of a live tenant', async () => {
    const { to, challengeId } = await requestSms(live);
    await twilio.waitFor((m) => m.to === to);
    const outcome = await eventually(async () => (await outcomesOf(live, challengeId))[0], 20_000, 'the SmsSent');
    assert.equal(outcome.type, 'SmsSent');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'learns of a deletion while it runs, then sends no SMS for that tenant', async () => {
    const tenants = running.app.get(DeletedTenants);
    assert.equal(tenants.knownDeleted(deletedLater), false);
    await deleteTenant(deletedLater);
    await eventually(async () => (tenants.knownDeleted(deletedLater) ? true : undefined), 10_000, 'the deletion followed');
    const before = await counted('mfa_sms_send_total', smsRefused);
    const { to, challengeId } = await requestSms(deletedLater);
    assert.equal(await sentOrRefused(() => twilio.messagesTo(to).length > 0, 'mfa_sms_send_total', smsRefused, before, 'the SMS request handled'), 'refused');
    assert.deepEqual(await outcomesOf(deletedLater, challengeId), []);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'places no call for a deleted tenant, and still calls for a live one', async () => {
    const before = await counted('mfa_voice_calls_total', callRefused);
    const gone = await requestCall(deletedBefore);
    const placed = () => twilio.calls.some((c) => c.to === gone.to);
    assert.equal(await sentOrRefused(placed, 'mfa_voice_calls_total', callRefused, before, 'the call request handled'), 'refused');
    assert.deepEqual(await outcomesOf(deletedBefore, gone.challengeId), []);

    const kept = await requestCall(live);
    await eventually(async () => (twilio.calls.some((c) => c.to === kept.to) ? true : undefined), 20_000, 'the call of the live tenant');
    assert.equal(placed(), false);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'hangs up a call placed just before its tenant was deleted and answered after: nothing of the tenant played, nothing sent to auth-challenge, no outcome', async () => {
    const tenantId = uniqueTenant('gone-mid-call');
    // The phone rings; the test answers it (Twilio’s webhooks, signed) once the tenant is deleted.
    const { to, challengeId } = await requestCall(tenantId, { answer: 'hold' });
    // What dispatch asks auth-challenge for this call, if anything (the request is plain JSON).
    const asked: string[] = [];
    const watch = nats.nc.subscribe(InternalSubjects.voiceOutcome, {
      callback: (_error, msg) => {
        if (msg.string().includes(challengeId)) asked.push(msg.string());
      },
    });
    const call = await twilio.waitForCall(to);
    await eventually(async () => ((await outcomesOf(tenantId, challengeId)).some((e) => e.type === 'VoiceCallPlaced') ? true : undefined), 20_000, 'the VoiceCallPlaced');
    await deleteTenant(tenantId);
    const tenants = running.app.get(DeletedTenants);
    await eventually(async () => (tenants.knownDeleted(tenantId) ? true : undefined), 10_000, 'the deletion followed');

    const before = await counted('mfa_voice_calls_total', { outcome: 'hung_up_tenant_deleted' });
    const params = { CallSid: call.sid, AccountSid: 'AC', From: call.from, To: to, Direction: 'outbound-api', CallStatus: 'in-progress' };
    const answered = await twilio.webhook(call.url, params);
    assert.equal(answered.status, 200);
    assert.match(answered.body, /<Response><Hangup\/><\/Response>$/);
    // The keys pressed (# approves in standard mode) are not forwarded either.
    const gather = await twilio.webhook(`${call.url.replace('/voice/twiml/', '/voice/gather/')}?prompt=1`, { ...params, Digits: '', FinishedOnKey: '#' });
    assert.equal(gather.status, 200);
    assert.match(gather.body, /<Response><Hangup\/><\/Response>$/);
    assert.equal(await counted('mfa_voice_calls_total', { outcome: 'hung_up_tenant_deleted' }), before + 2);
    // Its end records nothing: no VoiceCallFailed for the deleted tenant.
    const ended = await twilio.webhook(call.url.replace('/voice/twiml/', '/voice/status/'), { ...params, CallStatus: 'completed', CallDuration: '3' });
    assert.equal(ended.status, 204);
    await nats.nc.flush();
    watch.unsubscribe();
    assert.deepEqual(asked, []);
    assert.deepEqual((await outcomesOf(tenantId, challengeId)).map((e) => e.type), ['VoiceCallPlaced']);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'still plays the prompt of a live tenant’s call when it is answered', async () => {
    const { to } = await requestCall(live, { answer: 'hold' });
    const call = await twilio.waitForCall(to);
    const answered = await twilio.webhook(call.url, { CallSid: call.sid, AccountSid: 'AC', From: call.from, To: to, Direction: 'outbound-api', CallStatus: 'in-progress' });
    assert.equal(answered.status, 200);
    assert.match(answered.body, /<Gather [^>]*><Say[^>]*>[^<]+<\/Say><\/Gather><\/Response>$/);
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, 'pushes nothing for a deleted tenant, and still pushes for a live one', async () => {
    const before = await counted('mfa_push_send_total', pushRefused);
    const gone = await requestPush(deletedBefore);
    const pushed = () => fcm.messagesTo(gone.token).length > 0;
    assert.equal(await sentOrRefused(pushed, 'mfa_push_send_total', pushRefused, before, 'the push request handled'), 'refused');
    assert.deepEqual(await outcomesOf(deletedBefore, gone.challengeId), []);

    const kept = await requestPush(live);
    await fcm.waitFor((m) => m.token === kept.token, 20_000);
    assert.equal(pushed(), false);
  });
});
