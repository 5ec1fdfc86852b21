import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventSubjects, type AnyEvent, type ContractError, type DeviceReregisterRequest, type EventOf } from '@mfa/contracts';
import { keyringFromMasterKey, seal, SealContext } from '@mfa/crypto';
import { PoisonMessageError, type Delivery, type EventPublisher } from '@mfa/messaging';
import { challengeId as deviceIdOf, parseChallengeId } from '@mfa/projection';
import { registry, type Logger } from '@mfa/telemetry';
import { challengeStarted, challengeStartedV2, testChallenge, testUser } from '@mfa/testing';
import type { Device } from '../adapters/push/devices.js';
import { PushProviderError, type PushNotification, type PushProvider } from '../adapters/push/push-provider.js';
import type { ClaimState, SendClaim } from '../adapters/send-guard.js';
import { outcomeEventId } from '../domain/outcome-id.js';
import { CHALLENGE_GONE_PUSH, DEVICE_NEEDS_REGISTRATION, EXPIRED_BEFORE_PUSH, NO_ACTIVE_DEVICE, PushDeliveryService } from './push-delivery.service.js';
import type { TenantsDeleted } from './tenant-deleted.js';

// The service's collaborators, scripted: providers, devices, claims, the publisher. The real
// adapters, Redis and JetStream are exercised by push.int.spec.ts.

const keyring = keyringFromMasterKey(randomBytes(32));
const now = new Date('2026-11-30T12:00:00Z');
const quiet = () => undefined;
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, child: () => log };

type Step = 'ok' | 'transient' | 'permanent' | 'invalid' | 'setting';

class ScriptedProvider implements PushProvider {
  readonly sent: PushNotification[] = [];
  calls = 0;
  constructor(
    readonly name: string,
    readonly platform: 'android' | 'ios',
    private readonly script: Step[] = [],
  ) {}
  async send(notification: PushNotification) {
    const next = this.script[this.calls++] ?? 'ok';
    if (next === 'transient') throw new PushProviderError(`${this.name} 503`, { provider: this.name, transient: true, status: 503 });
    if (next === 'permanent') throw new PushProviderError(`${this.name} 403 InvalidProviderToken`, { provider: this.name, transient: false });
    if (next === 'invalid') throw new PushProviderError(`${this.name} 410 Unregistered`, { provider: this.name, transient: false, invalidToken: true, code: 'Unregistered' });
    if (next === 'setting') throw new PushProviderError(`${this.name} 400 DeviceTokenNotForTopic`, { provider: this.name, transient: false, configuration: true, code: 'DeviceTokenNotForTopic' });
    this.sent.push(notification);
    return { providerMessageId: `${this.name}-${this.calls}` };
  }
}

/** The push claims as Redis keeps them (one per challenge and device nonce). */
class ScriptedGuard {
  readonly claims = new Map<string, SendClaim>();
  readonly undelivered: Array<{ challengeId: string; method: string | undefined }> = [];
  /** Challenges Redis no longer holds (replaced or emptied since they started). */
  readonly lost = new Set<string>();
  async claimPush(challengeId: string, devices: readonly string[]): Promise<SendClaim[]> {
    return devices.map((device) => {
      const held = this.claims.get(`${challengeId}/${device}`);
      if (held) return held.kind === 'claimed' ? { kind: 'in_progress' } : held;
      if (this.lost.has(challengeId)) return { kind: 'gone' };
      this.claims.set(`${challengeId}/${device}`, { kind: 'claimed' });
      return { kind: 'claimed' };
    });
  }
  async recordedPushes(challengeId: string, devices: readonly string[]): Promise<Array<ClaimState | undefined>> {
    return devices.map((device) => {
      const held = this.claims.get(`${challengeId}/${device}`) as ClaimState | undefined;
      return held?.kind === 'claimed' ? { kind: 'in_progress' } : held;
    });
  }
  async pushSent(challengeId: string, device: string, provider: string, providerMessageId: string): Promise<void> {
    this.claims.set(`${challengeId}/${device}`, { kind: 'sent', provider, providerMessageId });
  }
  async releasePush(challengeId: string, devices: readonly string[]): Promise<void> {
    for (const device of devices) this.claims.delete(`${challengeId}/${device}`);
  }
  async undeliverable(challengeId: string, _now: number, method?: string): Promise<void> {
    this.undelivered.push({ challengeId, method });
  }
}

/** A push challenge of a user, started now, and the user's devices as user-settings projects them. */
function pushChallenge(options: { expiresInSeconds?: number; version?: 1 } = {}) {
  const user = testUser();
  const challenge = testChallenge(user, { method: 'push', startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + (options.expiresInSeconds ?? 180) * 1000).toISOString() });
  const event = options.version === 1 ? challengeStarted(challenge) : challengeStartedV2(challenge);
  if (event.version === 2) event.data.delivery = { channel: 'push' };
  const { tag } = parseChallengeId(challenge.challengeId)!;
  const device = (nonce: string, platform: Device['platform'], options: { state?: Device['state']; token?: string; sealFor?: string } = {}): Device => {
    const deviceId = deviceIdOf(tag, nonce);
    const token = options.token ?? `${platform}-token-${nonce}`;
    return {
      deviceId,
      nonce,
      state: options.state ?? 'active',
      platform,
      sealedPushToken: platform === 'none' ? undefined : seal(keyring, Buffer.from(token), SealContext.pushToken(user.tenantId, user.userId, options.sealFor ?? deviceId)),
    };
  };
  return { event, user, challengeId: challenge.challengeId, tag, device };
}

const refusedForTenant = async () =>
  ((await registry.getSingleMetric('mfa_push_send_total')?.get())?.values ?? []).find((v) => v.labels.provider === 'none' && v.labels.outcome === 'tenant_deleted')?.value ?? 0;

function harness(providers: PushProvider[], devices: Device[], options: { guard?: ScriptedGuard; reregisterFails?: boolean; tenants?: TenantsDeleted } = {}) {
  const published: Array<{ subject: string; event: AnyEvent }> = [];
  const reregistered: DeviceReregisterRequest[] = [];
  const publisher = { publish: async (subject: string, event: AnyEvent) => void published.push({ subject, event }) } as unknown as EventPublisher;
  const guard = options.guard ?? new ScriptedGuard();
  const service = new PushDeliveryService({
    keyring,
    providers,
    attemptsPerProvider: 3,
    retryBaseMs: 1,
    publisher,
    devices: { of: async () => ({ devices, malformed: [] }) },
    guard,
    tenants: options.tenants ?? { isDeleted: async () => false },
    reregister: async (request) => {
      if (options.reregisterFails) throw new Error('no responders');
      reregistered.push(request);
    },
    claimTtlMs: 15_000,
    log,
    clock: () => now,
    random: () => 0.5,
  });
  return { service, published, reregistered, guard };
}

function delivery(event: AnyEvent): Delivery & { working: () => number } {
  let working = 0;
  const msg = { seq: 7, working: () => void working++ } as unknown as Delivery['msg'];
  return { event, msg, working: () => working };
}

const only = <T extends 'PushSent' | 'PushDeliveryFailed'>(published: Array<{ subject: string; event: AnyEvent }>, type: T): EventOf<T> => {
  assert.equal(published.length, 1, 'exactly one outcome');
  assert.equal(published[0]!.event.type, type);
  assert.equal(published[0]!.subject, type === 'PushSent' ? EventSubjects.pushSent : EventSubjects.pushFailed);
  return published[0]!.event as EventOf<T>;
};

describe('push delivery', () => {
  it('sends to every active device through its platform provider, lists poll-only devices, and publishes PushSent with an id derived from the request', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const apns = new ScriptedProvider('apns', 'ios');
    const { event, challengeId, device } = pushChallenge();
    const pixel = device('a-pixel', 'android');
    const iphone = device('b-iphone', 'ios');
    const poller = device('c-poller', 'none');
    const { service, published, guard } = harness([fcm, apns], [pixel, iphone, poller]);
    await service.deliver(delivery(event));

    assert.deepEqual(fcm.sent.map((n) => [n.token, n.challengeId, n.expiresAt.toISOString()]), [['android-token-a-pixel', challengeId, event.data.expiresAt]]);
    assert.deepEqual(apns.sent.map((n) => n.token), ['ios-token-b-iphone']);
    const sent = only(published, 'PushSent');
    assert.deepEqual(sent.data, {
      challengeId,
      sent: [
        { deviceId: pixel.deviceId, provider: 'fcm', providerMessageId: 'fcm-1' },
        { deviceId: iphone.deviceId, provider: 'apns', providerMessageId: 'apns-1' },
      ],
      polling: [poller.deviceId],
    });
    assert.equal(sent.id, outcomeEventId(event.id));
    assert.equal(sent.aggregateId, challengeId);
    assert.equal(sent.metadata.causationId, event.id);
    assert.deepEqual(guard.claims.get(`${challengeId}/a-pixel`), { kind: 'sent', provider: 'fcm', providerMessageId: 'fcm-1' });
    assert.deepEqual(guard.undelivered, []);
  });

  it('given no provider for a platform, its devices poll: PushSent with nobody sent to, and the challenge stays deliverable', async () => {
    const { event, challengeId, device } = pushChallenge();
    const iphone = device('b-iphone', 'ios');
    const { service, published, guard } = harness([new ScriptedProvider('fcm', 'android')], [iphone]);
    await service.deliver(delivery(event));
    assert.deepEqual(only(published, 'PushSent').data, { challengeId, sent: [], polling: [iphone.deviceId] });
    assert.deepEqual(guard.undelivered, []);
  });

  it('given a request delivered again after it was sent (acks lost with NATS), then no second push and the same outcome', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, device } = pushChallenge();
    const { service, published } = harness([fcm], [device('a-pixel', 'android')]);
    await service.deliver(delivery(event));
    await service.deliver(delivery(event));
    assert.equal(fcm.calls, 1);
    assert.equal(published.length, 2);
    assert.deepEqual(published[1]!.event, { ...published[0]!.event, occurredAt: published[1]!.event.occurredAt });
  });

  it('given a delivery that stopped half-way, then the redelivery pushes to the devices it had not reached and to no other', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, challengeId, device } = pushChallenge();
    const guard = new ScriptedGuard();
    await guard.pushSent(challengeId, 'a-pixel', 'fcm', 'fcm-earlier');
    const { service, published } = harness([fcm], [device('a-pixel', 'android'), device('b-tablet', 'android')], { guard });
    await service.deliver(delivery(event));
    assert.deepEqual(fcm.sent.map((n) => n.token), ['android-token-b-tablet']);
    assert.deepEqual(
      only(published, 'PushSent').data.sent.map((s) => s.providerMessageId),
      ['fcm-earlier', 'fcm-1'],
    );
  });

  it('given a challenge Redis no longer holds, then it pushes to no device it had not reached, records why, and leaves push usable for the user', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, challengeId, device } = pushChallenge();
    const pixel = device('a-pixel', 'android');
    const tablet = device('b-tablet', 'android');
    const guard = new ScriptedGuard();
    guard.lost.add(challengeId);
    const { service, published } = harness([fcm], [pixel, tablet], { guard });
    await service.deliver(delivery(event));
    assert.equal(fcm.calls, 0, 'nothing pushed');
    assert.deepEqual(only(published, 'PushDeliveryFailed').data.failures, [
      { deviceId: pixel.deviceId, provider: 'none', error: CHALLENGE_GONE_PUSH, transient: false },
      { deviceId: tablet.deviceId, provider: 'none', error: CHALLENGE_GONE_PUSH, transient: false },
    ]);
    assert.deepEqual(guard.undelivered, [], 'push is not marked failed for the user: the loss was Redis\'s');
  });

  it('given another delivery pushing right now, then it lets go of its own claims and asks to be tried later', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, challengeId, device } = pushChallenge();
    const guard = new ScriptedGuard();
    guard.claims.set(`${challengeId}/b-tablet`, { kind: 'claimed' });
    const { service, published } = harness([fcm], [device('a-pixel', 'android'), device('b-tablet', 'android')], { guard });
    await assert.rejects(service.deliver(delivery(event)), (e: unknown) => (e as ContractError).code === 'unavailable');
    assert.equal(fcm.calls, 0);
    assert.equal(guard.claims.has(`${challengeId}/a-pixel`), false);
    assert.deepEqual(published, []);
  });

  it('retries transient errors with back-off, telling JetStream it is still working', async () => {
    const fcm = new ScriptedProvider('fcm', 'android', ['transient', 'transient', 'ok']);
    const { event, device } = pushChallenge();
    const { service, published } = harness([fcm], [device('a-pixel', 'android')]);
    const d = delivery(event);
    await service.deliver(d);
    assert.equal(fcm.calls, 3);
    assert.equal(only(published, 'PushSent').data.sent[0]!.providerMessageId, 'fcm-3');
    assert.ok(d.working() >= 3, `working() called ${d.working()} times`);
  });

  it('given another delivery that pushed to the device while this one waited to retry, then it pushes no more and records that push', async () => {
    const fcm = new ScriptedProvider('fcm', 'android', ['transient']);
    const { event, challengeId, device } = pushChallenge();
    // The claim let go after the failed attempt is taken, and used, by another delivery of the request.
    const guard = new (class extends ScriptedGuard {
      override async releasePush(challengeId: string, devices: readonly string[]): Promise<void> {
        await super.releasePush(challengeId, devices);
        for (const d of devices) await this.pushSent(challengeId, d, 'fcm', 'fcm-other');
      }
    })();
    const { service, published } = harness([fcm], [device('a-pixel', 'android')], { guard });
    await service.deliver(delivery(event));
    assert.equal(fcm.calls, 1);
    assert.deepEqual(only(published, 'PushSent').data.sent.map((s) => s.providerMessageId), ['fcm-other']);
    assert.deepEqual(guard.claims.get(`${challengeId}/a-pixel`), { kind: 'sent', provider: 'fcm', providerMessageId: 'fcm-other' });
  });

  it('a token the provider refuses: user-settings is asked to mark the device, and with no other device the challenge is undeliverable', async () => {
    const apns = new ScriptedProvider('apns', 'ios', ['invalid']);
    const { event, user, challengeId, device } = pushChallenge();
    const iphone = device('b-iphone', 'ios');
    const { service, published, reregistered, guard } = harness([apns], [iphone]);
    await service.deliver(delivery(event));
    assert.equal(apns.calls, 1, 'not retried');
    assert.deepEqual(reregistered, [{ tenantId: user.tenantId, userId: user.userId, deviceId: iphone.deviceId, provider: 'apns', error: 'apns 410 Unregistered' }]);
    assert.deepEqual(only(published, 'PushDeliveryFailed').data, { challengeId, failures: [{ deviceId: iphone.deviceId, provider: 'apns', error: 'apns 410 Unregistered', transient: false }] });
    assert.deepEqual(guard.undelivered, [{ challengeId, method: 'push' }]);
    assert.equal(guard.claims.has(`${challengeId}/b-iphone`), false, 'released');
  });

  it('a token refused for our setting (APNS_TOPIC, APNS_URL, FCM project): no device marked, not retried, counted as config_error for an alert', async () => {
    const configErrors = async () =>
      ((await registry.getSingleMetric('mfa_push_send_total')?.get())?.values ?? []).find((v) => v.labels.provider === 'apns' && v.labels.outcome === 'config_error')?.value ?? 0;
    const before = await configErrors();
    const apns = new ScriptedProvider('apns', 'ios', ['setting']);
    const { event, challengeId, device } = pushChallenge();
    const iphone = device('b-iphone', 'ios');
    const { service, published, reregistered } = harness([apns], [iphone]);
    await service.deliver(delivery(event));
    assert.equal(apns.calls, 1, 'not retried');
    assert.deepEqual(reregistered, [], 'the device keeps its registration');
    assert.deepEqual(only(published, 'PushDeliveryFailed').data, { challengeId, failures: [{ deviceId: iphone.deviceId, provider: 'apns', error: 'apns 400 DeviceTokenNotForTopic', transient: false }] });
    assert.equal((await configErrors()) - before, 1);
  });

  it('a failed reregister request does not fail the delivery (the next push asks again)', async () => {
    const { event, device } = pushChallenge();
    const { service, published } = harness([new ScriptedProvider('fcm', 'android', ['invalid'])], [device('a-pixel', 'android'), device('c-poller', 'none')], { reregisterFails: true });
    await service.deliver(delivery(event));
    assert.equal(only(published, 'PushSent').data.polling.length, 1);
  });

  it('when every device fails and none polls, PushDeliveryFailed names each device and the challenge is undeliverable', async () => {
    const { event, challengeId, device } = pushChallenge();
    const pixel = device('a-pixel', 'android');
    const old = device('b-old', 'ios', { state: 'reregister' });
    const { service, published, guard } = harness([new ScriptedProvider('fcm', 'android', ['transient', 'transient', 'transient']), new ScriptedProvider('apns', 'ios')], [pixel, old]);
    await service.deliver(delivery(event));
    assert.deepEqual(only(published, 'PushDeliveryFailed').data.failures, [
      { deviceId: old.deviceId, provider: 'none', error: DEVICE_NEEDS_REGISTRATION, transient: false },
      { deviceId: pixel.deviceId, provider: 'fcm', error: 'fcm 503', transient: true },
    ]);
    assert.deepEqual(guard.undelivered, [{ challengeId, method: 'push' }]);
  });

  it('a user without devices: nothing to push to, undeliverable', async () => {
    const { event, challengeId } = pushChallenge();
    const { service, published, guard } = harness([new ScriptedProvider('fcm', 'android')], []);
    await service.deliver(delivery(event));
    assert.deepEqual(only(published, 'PushDeliveryFailed').data.failures, [{ deviceId: 'none', provider: 'none', error: NO_ACTIVE_DEVICE, transient: false }]);
    assert.deepEqual(guard.undelivered, [{ challengeId, method: 'push' }]);
  });

  it('a push token that does not open is skipped; the other devices still get theirs', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, device } = pushChallenge();
    const forged = device('a-forged', 'android', { sealFor: 'another-device' });
    const { service, published } = harness([fcm], [forged, device('b-pixel', 'android')]);
    await service.deliver(delivery(event));
    assert.deepEqual(fcm.sent.map((n) => n.token), ['android-token-b-pixel']);
    assert.equal(only(published, 'PushSent').data.sent.length, 1);
  });

  it('does not push a challenge that expired before delivery', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, device } = pushChallenge({ expiresInSeconds: -1 });
    const { service, published } = harness([fcm], [device('a-pixel', 'android')]);
    await service.deliver(delivery(event));
    assert.equal(fcm.calls, 0);
    assert.deepEqual(only(published, 'PushDeliveryFailed').data.failures, [{ deviceId: 'none', provider: 'none', error: EXPIRED_BEFORE_PUSH, transient: false }]);
  });

  it('given a request pushed before its challenge expired and delivered again after, then no push, the same outcome, and push not marked failed', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const { event, challengeId, device } = pushChallenge({ expiresInSeconds: -1 });
    const pixel = device('a-pixel', 'android');
    const guard = new ScriptedGuard();
    await guard.pushSent(challengeId, 'a-pixel', 'fcm', 'fcm-earlier');
    const { service, published } = harness([fcm], [pixel, device('b-tablet', 'android')], { guard });
    await service.deliver(delivery(event));
    assert.equal(fcm.calls, 0);
    assert.deepEqual(only(published, 'PushSent').data, { challengeId, sent: [{ deviceId: pixel.deviceId, provider: 'fcm', providerMessageId: 'fcm-earlier' }], polling: [] });
    assert.deepEqual(guard.undelivered, []);
    // Another delivery still pushing when it expired: its outcome is awaited.
    guard.claims.set(`${challengeId}/b-tablet`, { kind: 'claimed' });
    await assert.rejects(service.deliver(delivery(event)), (e: unknown) => (e as ContractError).code === 'unavailable');
    assert.equal(published.length, 1);
  });

  it('given a deleted tenant, then no push, no outcome, push not marked failed, and the request counted as tenant_deleted', async () => {
    const fcm = new ScriptedProvider('fcm', 'android');
    const deleted = new Set<string>();
    const { event, device, user } = pushChallenge();
    deleted.add(user.tenantId);
    const { service, published, guard } = harness([fcm], [device('a-pixel', 'android')], { tenants: { isDeleted: async (tenantId) => deleted.has(tenantId) } });
    const before = await refusedForTenant();
    assert.equal(await service.deliver(delivery(event)), undefined);
    assert.equal(fcm.calls, 0);
    assert.deepEqual(published, []);
    assert.deepEqual(guard.undelivered, []);
    assert.equal(await refusedForTenant(), before + 1);
  });

  it('given the tenant deleted while a transient failure is handled, then the device is not pushed to again, its claim is let go, and no outcome', async () => {
    const deleted = new Set<string>();
    const { event, device, user, challengeId } = pushChallenge();
    const fcm = new (class extends ScriptedProvider {
      override async send(notification: PushNotification) {
        deleted.add(user.tenantId);
        return super.send(notification);
      }
    })('fcm', 'android', ['transient', 'ok']);
    const pixel = device('a-pixel', 'android');
    const { service, published, guard } = harness([fcm], [pixel], { tenants: { isDeleted: async (tenantId) => deleted.has(tenantId) } });
    const before = await refusedForTenant();
    assert.equal(await service.deliver(delivery(event)), undefined);
    assert.equal(fcm.calls, 1);
    assert.deepEqual(published, []);
    assert.equal(guard.claims.get(`${challengeId}/${pixel.nonce}`), undefined);
    assert.equal(await refusedForTenant(), before + 1);
  });

  it('dead-letters what is not a push request', async () => {
    const { service } = harness([], []);
    await assert.rejects(service.deliver(delivery(pushChallenge({ version: 1 }).event)), PoisonMessageError);
    const { event } = pushChallenge();
    delete event.data.delivery;
    await assert.rejects(service.deliver(delivery(event)), PoisonMessageError);
  });
});
