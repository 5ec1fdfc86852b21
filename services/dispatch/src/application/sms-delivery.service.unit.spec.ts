import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventSubjects, type AnyEvent, type ContractError, type DispatchEvent, type EventOf } from '@mfa/contracts';
import { generateDataKey, keyringFromMasterKey, seal, SealContext, type DataKey } from '@mfa/crypto';
import { PoisonMessageError, type Delivery, type EventPublisher } from '@mfa/messaging';
import { registry, type Logger } from '@mfa/telemetry';
import { sealPersonalData, type UserDataKeys } from '@mfa/service-kit';
import { challengeExpired, challengeResendRequested, challengeStarted, challengeStartedV2, testChallenge, testChallengeId, testUser } from '@mfa/testing';
import type { Admission } from '../adapters/phone-throttle.js';
import { CIRCUIT_OPEN, ProviderBreakers } from '../adapters/circuit-breakers.js';
import type { ClaimState, SendClaim } from '../adapters/send-guard.js';
import { SmsProviderError, type SessionSmsProvider, type SmsMessage, type SmsProvider, type SmsSendResult } from '../adapters/sms/sms-provider.js';
import { outcomeEventId } from '../domain/outcome-id.js';
import { CHALLENGE_GONE, DataKeyUnavailableError, DeliveryInterruptedError, PHONE_THROTTLED, SmsDeliveryService, TOO_LATE_TO_USE, USER_ERASED } from './sms-delivery.service.js';
import { SmsResendService } from './sms-resend.service.js';
import type { TenantsDeleted } from './tenant-deleted.js';

// The service's own collaborators, scripted: providers, the publisher and the JetStream message
// handle. Its JetStream and Twilio wiring is exercised for real by dispatch.int.spec.ts.

const keyring = keyringFromMasterKey(randomBytes(32));
const now = new Date('2025-01-01T12:00:00Z');
const quiet = () => undefined;
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, child: () => log };

type Script = Array<'ok' | 'transient' | 'permanent' | 'bug'>;

class ScriptedProvider implements SmsProvider {
  readonly sent: SmsMessage[] = [];
  calls = 0;
  constructor(
    readonly name: string,
    private readonly script: Script = [],
  ) {}
  async send(message: SmsMessage) {
    const next = this.script[this.calls++] ?? 'ok';
    if (next === 'transient') throw new SmsProviderError(`${this.name} 503`, { provider: this.name, transient: true, status: 503 });
    if (next === 'permanent') throw new SmsProviderError(`${this.name} 400 error 21211`, { provider: this.name, transient: false, code: 21211 });
    if (next === 'bug') throw new TypeError('undefined is not a function');
    this.sent.push(message);
    return { providerMessageId: `${this.name}-${this.calls}` };
  }
}

/** The data keys dispatch reads, scripted: each user's current key, or an erased generation. */
class ScriptedKeys {
  readonly keys = new Map<string, DataKey | 'erased'>();
  async get(tenantId: string, userId: string, gen: number): Promise<DataKey | 'erased' | undefined> {
    const entry = this.keys.get(`${tenantId}/${userId}`);
    if (entry === 'erased') return 'erased';
    return entry?.gen === gen ? entry : undefined;
  }
}

/**
 * The send claims as Redis keeps them (adapters/send-guard.ts), scripted: one entry per challenge
 * ("<challenge id>") and per resend ("<challenge id>:r<n>").
 */
class ScriptedGuard {
  readonly claims = new Map<string, ClaimState>();
  /** Challenges Redis no longer holds (replaced or emptied since they started). */
  readonly lost = new Set<string>();
  /** The stream sequence of a start no provider took, as undeliverable leaves it on the challenge. */
  readonly failedSeqs = new Map<string, number>();
  private key = (challengeId: string, resend?: number) => (resend ? `${challengeId}:r${resend}` : challengeId);
  async claim(challengeId: string, _ttlMs: number, resend?: number): Promise<SendClaim> {
    const held = this.claims.get(this.key(challengeId, resend));
    if (held) return held.kind === 'claimed' ? { kind: 'in_progress' } : held;
    if (this.lost.has(challengeId)) return { kind: 'gone' };
    this.claims.set(this.key(challengeId, resend), { kind: 'claimed' });
    return { kind: 'claimed' };
  }
  async recorded(challengeId: string, resend?: number): Promise<ClaimState | undefined> {
    const held = this.claims.get(this.key(challengeId, resend));
    return held?.kind === 'claimed' ? { kind: 'in_progress' } : held;
  }
  async sent(challengeId: string, provider: string, providerMessageId: string, _ttlMs: number, source?: { seq: number; resend?: number }): Promise<void> {
    this.claims.set(this.key(challengeId, source?.resend), { kind: 'sent', provider, providerMessageId, ...(source ? { seq: source.seq } : {}) });
  }
  async release(challengeId: string, resend?: number): Promise<void> {
    this.claims.delete(this.key(challengeId, resend));
  }
  readonly undelivered: string[] = [];
  async undeliverable(challengeId: string, _now: number, _method?: string, _until?: number, startedSeq?: number): Promise<void> {
    this.undelivered.push(challengeId);
    if (startedSeq !== undefined) this.failedSeqs.set(challengeId, startedSeq);
  }
  async sendsBefore(challengeId: string, resend: number) {
    const sends = Array.from({ length: resend }, (_, n) => this.claims.get(this.key(challengeId, n)));
    return { sends, failedSeq: this.failedSeqs.get(challengeId) };
  }
}

/** Which tenants are deleted (@mfa/messaging's DeletedTenants), scripted. */
class ScriptedTenants implements TenantsDeleted {
  readonly deleted = new Set<string>();
  async isDeleted(tenantId: string): Promise<boolean> {
    return this.deleted.has(tenantId);
  }
}

const refusedForTenant = async () =>
  ((await registry.getSingleMetric('mfa_sms_send_total')?.get())?.values ?? []).find((v) => v.labels.provider === 'none' && v.labels.outcome === 'tenant_deleted')?.value ?? 0;

/** Per-phone throttling (adapters/phone-throttle.ts), scripted: the sends it admitted, and a number it refuses from then on. */
class ScriptedThrottle {
  readonly admitted: Array<{ tenantId: string; to: string; challengeId: string }> = [];
  refuseUntil: number | undefined;
  async admit(tenantId: string, to: string, challengeId: string): Promise<Admission> {
    if (this.refuseUntil !== undefined) return { admitted: false, untilMs: this.refuseUntil, scope: 'number' };
    this.admitted.push({ tenantId, to, challengeId });
    return { admitted: true };
  }
}

function harness(
  providers: SmsProvider[],
  options: {
    publishFailures?: number;
    keys?: ScriptedKeys;
    guard?: ScriptedGuard;
    throttle?: ScriptedThrottle;
    breakers?: Pick<ProviderBreakers, 'send'>;
    receiptRoutes?: { remember(provider: string, providerMessageId: string, target: unknown): Promise<{ reused: false }> };
    clock?: () => Date;
    tenants?: TenantsDeleted;
  } = {},
) {
  const published: Array<{ subject: string; event: AnyEvent }> = [];
  let publishFailures = options.publishFailures ?? 0;
  const publisher = {
    async publish(subject: string, event: AnyEvent) {
      if (publishFailures-- > 0) throw new Error('no responders');
      published.push({ subject, event });
    },
  } as unknown as EventPublisher;
  const service = new SmsDeliveryService({
    keyring,
    keys: (options.keys ?? new ScriptedKeys()) as unknown as UserDataKeys,
    providers,
    attemptsPerProvider: 3,
    retryBaseMs: 1,
    publisher,
    guard: options.guard ?? new ScriptedGuard(),
    phoneThrottle: options.throttle ?? new ScriptedThrottle(),
    tenants: options.tenants ?? { isDeleted: async () => false },
    ...(options.breakers ? { breakers: options.breakers } : {}),
    ...(options.receiptRoutes ? { receiptRoutes: options.receiptRoutes } : {}),
    claimTtlMs: 15_000,
    log,
    clock: options.clock ?? (() => now),
    random: () => 0.5,
  });
  return { service, published };
}

/** An SMS challenge started `now`, its code sealed for dispatch as auth-challenge seals it. */
function smsChallenge(
  options: { code?: string; expiresInSeconds?: number; sealFor?: string; delivery?: boolean; language?: string } = {},
) {
  const code = options.code ?? '314159';
  const to = '+46701234567';
  const challenge = testChallenge(testUser({ profile: { phoneNumber: to } }), {
    startedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + (options.expiresInSeconds ?? 300) * 1000).toISOString(),
  });
  const { tenantId, challengeId } = challenge;
  const sealedCode = seal(keyring, Buffer.from(code), SealContext.smsCode(tenantId, options.sealFor ?? challengeId));
  const event = challengeStarted(challenge, {
    metadata: { correlationId: 'req-1' },
    data: {
      delivery:
        options.delivery === false
          ? undefined
          : { channel: 'sms', to, sealedCode, ...(options.language ? { language: options.language } : {}) },
    },
  });
  return { event, code, challengeId, tenantId, challenge };
}

/** The same challenge as auth-challenge now records it (v2): the phone only in `pii`, sealed under the user's data key. */
function smsChallengeV2(keys: ScriptedKeys, options: { sealFor?: string } = {}) {
  const to = '+46701234567';
  const user = testUser({ profile: { displayName: 'Helga Nordin', phoneNumber: to } });
  const challenge = testChallenge(user, { startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 300_000).toISOString() });
  const { dataKey } = generateDataKey(keyring, user.tenantId, user.userId, 1);
  keys.keys.set(`${user.tenantId}/${user.userId}`, dataKey);
  const pii = sealPersonalData(dataKey, { tenantId: user.tenantId, userId: options.sealFor ?? user.userId, purpose: 'challenge' }, user.profile)!;
  const event = challengeStartedV2(challenge, pii);
  event.data.delivery = { channel: 'sms', sealedCode: seal(keyring, Buffer.from('271828'), SealContext.smsCode(challenge.tenantId, challenge.challengeId)) };
  return { event, user, to };
}

/** A message as the consumer hands it over; `seq` is its stream sequence. */
function delivery(event: AnyEvent, seq = 42): Delivery & { working: () => number } {
  let working = 0;
  const msg = { seq, working: () => void working++ } as unknown as Delivery['msg'];
  return { event, msg, working: () => working };
}

const only = <T extends DispatchEvent['type']>(published: Array<{ subject: string; event: AnyEvent }>, type: T): EventOf<T> => {
  assert.equal(published.length, 1, 'exactly one outcome');
  assert.equal(published[0]!.event.type, type);
  return published[0]!.event as EventOf<T>;
};

describe('SMS delivery', () => {
  it('sends the code to the number and publishes SmsSent with an id derived from the request', async () => {
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio]);
    const { event, code, challengeId, tenantId } = smsChallenge({ language: 'de-AT' });
    await service.deliver(delivery(event));
    assert.equal(twilio.sent.length, 1);
    assert.equal(twilio.sent[0]!.to, '+46701234567');
    assert.equal(twilio.sent[0]!.body, `${code} ist Ihr Anmeldecode. Er gilt 5 Minuten.`);
    assert.deepEqual(twilio.sent[0]!.expiresAt, new Date(event.data.expiresAt), 'the provider drops it once the code has expired');
    const sent = only(published, 'SmsSent');
    assert.equal(published[0]!.subject, EventSubjects.smsSent);
    assert.deepEqual(sent.data, { challengeId, provider: 'twilio', providerMessageId: 'twilio-1', attempts: 1 });
    assert.equal(sent.id, outcomeEventId(event.id));
    assert.equal(sent.tenantId, tenantId);
    assert.equal(sent.aggregateId, challengeId);
    assert.equal(sent.metadata.causationId, event.id);
    assert.equal(sent.metadata.correlationId, 'req-1');
  });

  it('given a request delivered again after it was sent (acks lost with NATS), then no second SMS and the same outcome', async () => {
    const twilio = new ScriptedProvider('twilio');
    const guard = new ScriptedGuard();
    const { service, published } = harness([twilio], { guard });
    const { event, challengeId } = smsChallenge();
    await service.deliver(delivery(event));
    await service.deliver(delivery(event));
    assert.equal(twilio.sent.length, 1, 'one SMS');
    assert.equal(published.length, 2);
    assert.deepEqual(published[1]!.event, { ...published[0]!.event, occurredAt: published[1]!.event.occurredAt, metadata: published[1]!.event.metadata });
    assert.deepEqual((published[1]!.event as EventOf<'SmsSent'>).data, { challengeId, provider: 'twilio', providerMessageId: 'twilio-1', attempts: 1 });
  });

  it('given a request sent before its challenge expired and delivered again after, then no SMS, the same outcome, and SMS not marked failed', async () => {
    const twilio = new ScriptedProvider('twilio');
    const guard = new ScriptedGuard();
    const { service, published } = harness([twilio], { guard });
    const { event, challengeId } = smsChallenge({ expiresInSeconds: 0 });
    await guard.sent(challengeId, 'smpp', '0A1B 2C3D', 60_000, { seq: 42 });
    await service.deliver(delivery(event));
    assert.equal(twilio.calls, 0);
    const sent = only(published, 'SmsSent');
    assert.deepEqual(sent.data, { challengeId, provider: 'smpp', providerMessageId: '0A1B 2C3D', attempts: 1 });
    assert.equal(sent.id, outcomeEventId(event.id));
    assert.deepEqual(guard.undelivered, []);
    // Another delivery still calling a provider when it expired: its outcome is awaited.
    const busy = smsChallenge({ expiresInSeconds: 0 });
    guard.claims.set(busy.challengeId, { kind: 'claimed' });
    await assert.rejects(service.deliver(delivery(busy.event)), (e: ContractError) => e.code === 'unavailable');
    assert.equal(published.length, 1);
    assert.deepEqual(guard.undelivered, []);
  });

  it('given another delivery of the request calling a provider now, then nothing is sent and the message is tried again later', async () => {
    const twilio = new ScriptedProvider('twilio');
    const guard = new ScriptedGuard();
    const { service, published } = harness([twilio], { guard });
    const { event, challengeId } = smsChallenge();
    guard.claims.set(challengeId, { kind: 'claimed' });
    await assert.rejects(service.deliver(delivery(event)), (e: ContractError) => e.code === 'unavailable');
    assert.equal(twilio.sent.length, 0);
    assert.equal(published.length, 0);
  });

  it('given a challenge Redis no longer holds and no send recorded, then nothing is sent and the outcome says why', async () => {
    const twilio = new ScriptedProvider('twilio');
    const guard = new ScriptedGuard();
    const { service, published } = harness([twilio], { guard });
    const { event, challengeId } = smsChallenge();
    guard.lost.add(challengeId);
    await service.deliver(delivery(event));
    assert.equal(twilio.sent.length, 0, 'no SMS');
    const failed = only(published, 'SmsDeliveryFailed');
    assert.deepEqual(failed.data.failures, [{ provider: 'none', error: CHALLENGE_GONE, transient: false }]);
    assert.equal(failed.id, outcomeEventId(event.id), 'the same outcome id as a send would have had: one outcome per request');
    assert.equal(guard.claims.size, 0);
  });

  it('given a phone number that took its share of sends across users, then nothing is sent, the outcome says why and the method is marked failed', async () => {
    const twilio = new ScriptedProvider('twilio');
    const guard = new ScriptedGuard();
    const throttle = new ScriptedThrottle();
    throttle.refuseUntil = now.getTime() + 90_500;
    const { service, published } = harness([twilio], { guard, throttle });
    const { event, challengeId } = smsChallenge();
    await service.deliver(delivery(event));
    assert.equal(twilio.sent.length, 0, 'no SMS');
    const failed = only(published, 'SmsDeliveryFailed');
    assert.deepEqual(failed.data.failures, [{ provider: 'none', error: `${PHONE_THROTTLED} (for 91 s)`, transient: false }]);
    assert.deepEqual(guard.undelivered, [challengeId], 'status answers delivery_failed; a start without a method takes another one');
    assert.equal(guard.claims.size, 0, 'never claimed: no provider call was about to happen');
  });

  it('admits every send against its number before calling a provider', async () => {
    const twilio = new ScriptedProvider('twilio');
    const throttle = new ScriptedThrottle();
    const { service } = harness([twilio], { throttle });
    const { event, challengeId, tenantId } = smsChallenge();
    await service.deliver(delivery(event));
    assert.deepEqual(throttle.admitted, [{ tenantId, to: '+46701234567', challengeId }]);
    assert.equal(twilio.sent.length, 1);
  });

  it('releases the claim when a provider fails, so the next attempt may send', async () => {
    const twilio = new ScriptedProvider('twilio', ['transient']);
    const guard = new ScriptedGuard();
    const { service } = harness([twilio], { guard });
    const { event, challengeId } = smsChallenge();
    await service.deliver(delivery(event));
    assert.equal(twilio.sent.length, 1);
    assert.equal(guard.claims.get(challengeId)?.kind, 'sent');
  });

  it('retries transient errors on the same provider, telling JetStream it is still working', async () => {
    const twilio = new ScriptedProvider('twilio', ['transient', 'transient', 'ok']);
    const { service, published } = harness([twilio, new ScriptedProvider('console')]);
    const d = delivery(smsChallenge().event);
    await service.deliver(d);
    assert.equal(twilio.calls, 3);
    assert.deepEqual(
      { provider: only(published, 'SmsSent').data.provider, attempts: only(published, 'SmsSent').data.attempts },
      { provider: 'twilio', attempts: 3 },
    );
    assert.ok(d.working() >= 3, `working() called ${d.working()} times`);
  });

  it('fails over to the next provider on a permanent error', async () => {
    const twilio = new ScriptedProvider('twilio', ['permanent']);
    const console = new ScriptedProvider('console');
    const { service, published } = harness([twilio, console]);
    await service.deliver(delivery(smsChallenge().event));
    assert.equal(twilio.calls, 1);
    assert.equal(console.sent.length, 1);
    const sent = only(published, 'SmsSent');
    assert.equal(sent.data.provider, 'console');
    assert.equal(sent.data.attempts, 2);
  });

  it('given a provider whose circuit is open, then it is not called: the next provider sends at once, without retries', async () => {
    const twilio = new ScriptedProvider('twilio', ['transient', 'transient', 'transient', 'transient', 'transient', 'transient']);
    const console = new ScriptedProvider('console');
    const breakers = new ProviderBreakers([twilio, console], { errorThresholdPercentage: 50, volumeThreshold: 3, resetSeconds: 60, windowSeconds: 60 });
    try {
      const { service, published } = harness([twilio, console], { breakers });
      await service.deliver(delivery(smsChallenge().event));
      assert.equal(twilio.calls, 3, 'three transient failures open the circuit');
      published.length = 0;
      await service.deliver(delivery(smsChallenge().event));
      assert.equal(twilio.calls, 3, 'skipped while open');
      const sent = only(published, 'SmsSent');
      assert.deepEqual([sent.data.provider, sent.data.attempts], ['console', 2]);
    } finally {
      breakers.shutdown();
    }
  });

  it('treats a provider that throws something unexpected as a permanent failure and fails over', async () => {
    const broken = new ScriptedProvider('twilio', ['bug']);
    const { service, published } = harness([broken, new ScriptedProvider('console')]);
    await service.deliver(delivery(smsChallenge().event));
    assert.equal(broken.calls, 1);
    assert.equal(only(published, 'SmsSent').data.provider, 'console');
  });

  it('publishes SmsDeliveryFailed with every failure when all providers fail', async () => {
    const twilio = new ScriptedProvider('twilio', ['transient', 'transient', 'transient']);
    const console = new ScriptedProvider('console', ['permanent']);
    const { service, published } = harness([twilio, console]);
    const { event, challengeId } = smsChallenge();
    await service.deliver(delivery(event));
    assert.equal(published[0]!.subject, EventSubjects.smsFailed);
    const failed = only(published, 'SmsDeliveryFailed');
    assert.equal(failed.data.challengeId, challengeId);
    assert.equal(failed.data.attempts, 4);
    assert.deepEqual(
      failed.data.failures.map((f) => [f.provider, f.transient]),
      [
        ['twilio', true],
        ['twilio', true],
        ['twilio', true],
        ['console', false],
      ],
    );
    assert.equal(failed.id, outcomeEventId(event.id));
  });

  it('does not send a code whose challenge has already expired', async () => {
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio]);
    await service.deliver(delivery(smsChallenge({ expiresInSeconds: 0 }).event));
    assert.equal(twilio.calls, 0);
    const failed = only(published, 'SmsDeliveryFailed');
    assert.equal(failed.data.attempts, 1);
    assert.deepEqual(failed.data.failures, [{ provider: 'none', error: 'challenge expired before delivery', transient: false }]);
  });

  it('declares poison what can never be delivered, without sending or publishing', async () => {
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio]);
    const expired = challengeExpired(testChallenge());
    const cases: Array<[string, AnyEvent, RegExp]> = [
      ['another event type', expired, /expected ChallengeStarted/],
      ['no delivery', smsChallenge({ delivery: false }).event, /without an SMS delivery/],
      ['a code sealed for another challenge', smsChallenge({ sealFor: testChallengeId() }).event, /does not open/],
      ['a code that is not six digits', smsChallenge({ code: '12345678' }).event, /not six digits/],
    ];
    for (const [what, event, reason] of cases) {
      await assert.rejects(service.deliver(delivery(event)), (e: Error) => e instanceof PoisonMessageError && reason.test(e.message), what);
    }
    assert.equal(twilio.calls, 0);
    assert.equal(published.length, 0);
  });

  it('gives the message back, without an outcome, when the service stops before the next attempt', async () => {
    const twilio = new ScriptedProvider('twilio', ['transient']);
    const { service, published } = harness([twilio]);
    const stopping = new AbortController();
    stopping.abort();
    await assert.rejects(service.deliver(delivery(smsChallenge().event), stopping.signal), DeliveryInterruptedError);
    assert.equal(published.length, 0);
  });

  it('sends a v2 request to the phone sealed in its personal data, under the user’s data key', async () => {
    const keys = new ScriptedKeys();
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio], { keys });
    const { event, to } = smsChallengeV2(keys);
    assert.ok(!JSON.stringify(event).includes(to), 'the request carries the number only sealed');
    await service.deliver(delivery(event));
    assert.equal(twilio.sent[0]!.to, to);
    assert.match(twilio.sent[0]!.body, /^271828 /);
    only(published, 'SmsSent');
  });

  it('does not send to an erased user: SmsDeliveryFailed says why, nothing is retried', async () => {
    const keys = new ScriptedKeys();
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio], { keys });
    const { event, user } = smsChallengeV2(keys);
    keys.keys.set(`${user.tenantId}/${user.userId}`, 'erased');
    await service.deliver(delivery(event));
    assert.equal(twilio.calls, 0);
    assert.equal(published[0]!.subject, EventSubjects.smsFailed);
    assert.deepEqual(only(published, 'SmsDeliveryFailed').data.failures, [{ provider: 'none', error: USER_ERASED, transient: false }]);
  });

  it('tries a v2 request again later when its data key is not known yet, and declares poison personal data that does not open', async () => {
    const keys = new ScriptedKeys();
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio], { keys });
    const { event, user } = smsChallengeV2(keys);
    keys.keys.delete(`${user.tenantId}/${user.userId}`);
    await assert.rejects(service.deliver(delivery(event)), DataKeyUnavailableError);
    const foreign = smsChallengeV2(keys, { sealFor: 'someone-else@contoso.com' }).event;
    await assert.rejects(service.deliver(delivery(foreign)), (e: Error) => e instanceof PoisonMessageError && /does not open/.test(e.message));
    assert.equal(twilio.calls, 0);
    assert.equal(published.length, 0);
  });

  it('retries publishing the outcome rather than send the SMS again', async () => {
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio], { publishFailures: 2 });
    await service.deliver(delivery(smsChallenge().event));
    assert.equal(twilio.calls, 1);
    assert.equal(only(published, 'SmsSent').data.attempts, 1);
  });

  /** A provider that fails once with a transient error taking the clock to `leftMs` before the expiry, then sends. */
  function slowFailure(name: string, clock: { now: Date }, expiresAt: Date, leftMs: number): ScriptedProvider {
    const provider = new ScriptedProvider(name, ['transient']);
    const send = provider.send.bind(provider);
    provider.send = (message: SmsMessage) => {
      if (provider.calls === 0) clock.now = new Date(expiresAt.getTime() - leftMs);
      return send(message);
    };
    return provider;
  }

  it('given a failed attempt that leaves under 30 s of the challenge, then no retry and no next provider: the outcome says why', async () => {
    const clock = { now };
    const { event } = smsChallenge({ expiresInSeconds: 300 });
    const expiresAt = new Date(event.data.expiresAt);
    const twilio = slowFailure('twilio', clock, expiresAt, 25_000);
    const smpp = new ScriptedProvider('smpp');
    const { service, published } = harness([twilio, smpp], { clock: () => clock.now });
    await service.deliver(delivery(event));
    assert.deepEqual([twilio.calls, smpp.calls], [1, 0], 'nothing sent 25 s before the expiry after a failure');
    const failed = only(published, 'SmsDeliveryFailed');
    assert.deepEqual(failed.data.failures.at(-1), { provider: 'none', error: TOO_LATE_TO_USE, transient: false });

    // With 35 s left, the retry is made.
    const again = smsChallenge({ expiresInSeconds: 300 });
    clock.now = now;
    const twilio2 = slowFailure('twilio', clock, new Date(again.event.data.expiresAt), 35_000);
    const second = harness([twilio2], { clock: () => clock.now });
    await second.service.deliver(delivery(again.event));
    assert.equal(twilio2.sent.length, 1);
    assert.equal(only(second.published, 'SmsSent').data.attempts, 2);
  });

  it('given a first provider skipped by its open circuit, then the next one still sends a code with under 30 s left (it is the first attempt)', async () => {
    const twilio = new ScriptedProvider('twilio');
    const smpp = new ScriptedProvider('smpp');
    const breakers = {
      send: async (provider: SmsProvider, message: SmsMessage): Promise<SmsSendResult> => {
        if (provider.name === 'twilio') throw new SmsProviderError(CIRCUIT_OPEN, { provider: 'twilio', transient: false });
        return provider.send(message);
      },
    };
    const { service, published } = harness([twilio, smpp], { breakers: breakers as unknown as ProviderBreakers });
    await service.deliver(delivery(smsChallenge({ expiresInSeconds: 20 }).event));
    assert.deepEqual([twilio.calls, smpp.sent.length], [0, 1]);
    assert.equal(only(published, 'SmsSent').data.provider, 'smpp');
  });

  it('given a provider that got the SMS and never answered, then the SMS is tried again (delivery first) and each such failure says it may have been sent', async () => {
    const unknown = new ScriptedProvider('smpp');
    unknown.send = async () => {
      unknown.calls++;
      throw new SmsProviderError('SMPP submit_sm not answered within 10000 ms', { provider: 'smpp', transient: true, outcomeUnknown: true });
    };
    const unanswered = async () =>
      ((await registry.getSingleMetric('mfa_sms_send_total')?.get())?.values ?? []).find((v) => v.labels.provider === 'smpp' && v.labels.outcome === 'unanswered_error')?.value ?? 0;
    const before = await unanswered();
    const { service, published } = harness([unknown]);
    await service.deliver(delivery(smsChallenge().event));
    assert.equal(unknown.calls, 3, 'tried again: a duplicate carries the same code, a lost SMS no code');
    assert.equal((await unanswered()) - before, 3, 'counted apart from the other transient errors');
    const failed = only(published, 'SmsDeliveryFailed');
    assert.deepEqual(failed.data.failures.map((f) => f.error), Array(3).fill('SMPP submit_sm not answered within 10000 ms: the SMS may have been sent'));
  });

  it('given an SMSC that took the SMS without naming it, then it is sent: recorded once, under the made-up id, routed for no receipt, and no next provider', async () => {
    const smsc: SessionSmsProvider = {
      name: 'smpp',
      start: () => undefined,
      stop: async () => undefined,
      healthCheck: () => ({ name: 'smpp', informational: true, check: async () => undefined }),
      send: async () => ({ providerMessageId: 'smpp-unnamed-1', unnamed: true }),
    };
    const twilio = new ScriptedProvider('twilio');
    const remembered: string[] = [];
    const guard = new ScriptedGuard();
    const { service, published } = harness([smsc, twilio], { guard, receiptRoutes: { remember: async (_p, id) => (remembered.push(id), { reused: false }) } });
    const { event, challengeId } = smsChallenge();
    await service.deliver(delivery(event));
    assert.equal(twilio.calls, 0, 'no second SMS through the next provider');
    assert.deepEqual([only(published, 'SmsSent').data.provider, only(published, 'SmsSent').data.providerMessageId], ['smpp', 'smpp-unnamed-1']);
    assert.deepEqual(guard.claims.get(challengeId), { kind: 'sent', provider: 'smpp', providerMessageId: 'smpp-unnamed-1', seq: 42 });
    assert.deepEqual(remembered, [], 'no receipt route for an id the SMSC never gave');
  });

  it('given a deleted tenant, then no SMS, no outcome, the challenge not marked failed, and the send counted as tenant_deleted', async () => {
    const twilio = new ScriptedProvider('twilio');
    const tenants = new ScriptedTenants();
    const guard = new ScriptedGuard();
    const { service, published } = harness([twilio], { tenants, guard });
    const { event, challengeId, tenantId } = smsChallenge();
    tenants.deleted.add(tenantId);
    const before = await refusedForTenant();
    assert.equal(await service.deliver(delivery(event)), undefined);
    assert.equal(twilio.calls, 0);
    assert.deepEqual(published, []);
    assert.deepEqual(guard.undelivered, []);
    assert.equal(guard.claims.get(challengeId), undefined);
    assert.equal(await refusedForTenant(), before + 1);
    // Also once expired: no failure recorded either.
    assert.equal(await service.deliver(delivery(smsChallenge({ expiresInSeconds: 0 }).event)), undefined);
    assert.deepEqual(published, []);
  });

  for (const failure of ['transient', 'permanent'] as const) {
    it(`given the tenant deleted while a ${failure} failure is handled, then no further attempt (${failure === 'transient' ? 'the same provider again' : 'the next provider'}) and no outcome`, async () => {
      const tenants = new ScriptedTenants();
      const guard = new ScriptedGuard();
      const { event, challengeId, tenantId } = smsChallenge();
      // The deletion lands while the first provider is being called.
      const twilio = new (class extends ScriptedProvider {
        override async send(message: SmsMessage) {
          tenants.deleted.add(tenantId);
          return super.send(message);
        }
      })('twilio', [failure]);
      const backup = new ScriptedProvider('backup');
      const { service, published } = harness([twilio, backup], { tenants, guard });
      const before = await refusedForTenant();
      assert.equal(await service.deliver(delivery(event)), undefined);
      assert.equal(twilio.calls, 1);
      assert.equal(backup.calls, 0);
      assert.deepEqual(published, []);
      assert.equal(guard.claims.get(challengeId), undefined, 'the claim released');
      assert.equal(await refusedForTenant(), before + 1);
    });
  }

  it('given whether the tenant is deleted cannot be read, then nothing sent and the request tried again later', async () => {
    const twilio = new ScriptedProvider('twilio');
    const { service, published } = harness([twilio], { tenants: { isDeleted: async () => Promise.reject(new Error('no responders')) } });
    await assert.rejects(service.deliver(delivery(smsChallenge().event)), (e: ContractError) => e.code === 'unavailable');
    assert.equal(twilio.calls, 0);
    assert.deepEqual(published, []);
  });
});

/** The starts dispatch reads back by stream sequence (adapters/challenge-starts.ts), scripted. */
class ScriptedStarts {
  readonly bySeq = new Map<number, EventOf<'ChallengeStarted'>>();
  async read(seq: number): Promise<EventOf<'ChallengeStarted'>> {
    const event = this.bySeq.get(seq);
    if (!event) throw new PoisonMessageError(`no message at sequence ${seq}`);
    return event;
  }
}

/** A delivery service and the resend service on top of it, sharing the scripted guard, throttle and published outcomes. */
function resendHarness(providers: ScriptedProvider[], options: { open?: string[]; clock?: () => Date } = {}) {
  const guard = new ScriptedGuard();
  const throttle = new ScriptedThrottle();
  const starts = new ScriptedStarts();
  const tenants = new ScriptedTenants();
  const { service, published } = harness(providers, { guard, throttle, tenants, ...(options.clock ? { clock: options.clock } : {}) });
  const states = Object.fromEntries(providers.map((p) => [p.name, options.open?.includes(p.name) ? ('open' as const) : ('closed' as const)]));
  const resends = new SmsResendService({ tenants, starts, guard, delivery: service, providers: providers.map((p) => p.name), breakers: { states: () => states }, log, clock: () => now });
  return { service, resends, published, guard, throttle, starts, tenants };
}

describe('SMS resend', () => {
  /** An SMS challenge whose start is at stream sequence 42, its start's send done (or not). */
  async function startedChallenge(h: ReturnType<typeof resendHarness>, options: { expiresInSeconds?: number; send?: boolean } = {}) {
    const c = smsChallenge({ ...(options.expiresInSeconds === undefined ? {} : { expiresInSeconds: options.expiresInSeconds }) });
    h.starts.bySeq.set(42, c.event);
    if (options.send !== false) await h.service.deliver(delivery(c.event, 42));
    return c;
  }
  const resendOf = (c: { challenge: ReturnType<typeof testChallenge> }, resend: number) => challengeResendRequested(c.challenge, { data: { resend } });
  const last = (published: Array<{ event: AnyEvent }>) => published.at(-1)!.event;

  it('sends the same code again through the next provider, wrapping round; each resend admitted, claimed and recorded on its own', async () => {
    const twilio = new ScriptedProvider('twilio');
    const console = new ScriptedProvider('console');
    const h = resendHarness([twilio, console]);
    const c = await startedChallenge(h);
    const first = resendOf(c, 1);
    await h.resends.resend(delivery(first, 50));
    assert.equal(console.sent.length, 1, 'the provider after the one that sent');
    assert.equal(console.sent[0]!.body, twilio.sent[0]!.body, 'the same code, the same words');
    assert.equal(console.sent[0]!.to, twilio.sent[0]!.to);
    const sent = last(h.published) as EventOf<'SmsSent'>;
    assert.equal(h.published.at(-1)!.subject, EventSubjects.smsSent);
    assert.deepEqual(sent.data, { challengeId: c.challengeId, provider: 'console', providerMessageId: 'console-1', attempts: 1, resend: 1 });
    assert.equal(sent.id, outcomeEventId(first.id));
    assert.equal(sent.metadata.causationId, first.id);
    assert.deepEqual(h.throttle.admitted.map((a) => a.challengeId), [c.challengeId, `${c.challengeId}:r1`], 'each send counts for the number once');
    assert.deepEqual(h.guard.claims.get(`${c.challengeId}:r1`), { kind: 'sent', provider: 'console', providerMessageId: 'console-1', seq: 42 });
    await h.resends.resend(delivery(resendOf(c, 2), 51));
    assert.equal(twilio.sent.length, 2, 'wrapped round to the first');
    assert.equal(twilio.sent[1]!.body, twilio.sent[0]!.body);
    assert.equal((last(h.published) as EventOf<'SmsSent'>).data.resend, 2);
  });

  it('given a resend two minutes into a five-minute code, then its text says the three minutes left, not five', async () => {
    const twilio = new ScriptedProvider('twilio');
    let at = now;
    const h = resendHarness([twilio], { clock: () => at });
    const c = await startedChallenge(h);
    at = new Date(now.getTime() + 120_000);
    await h.resends.resend(delivery(resendOf(c, 1)));
    assert.deepEqual(
      twilio.sent.map((m) => m.body),
      [`${c.code} is your verification code. It expires in 5 minutes.`, `${c.code} is your verification code. It expires in 3 minutes.`],
    );
  });

  it('given one provider, sends through it again', async () => {
    const twilio = new ScriptedProvider('twilio');
    const h = resendHarness([twilio]);
    const c = await startedChallenge(h);
    await h.resends.resend(delivery(resendOf(c, 1)));
    assert.deepEqual(twilio.sent.map((m) => m.body), [twilio.sent[0]!.body, twilio.sent[0]!.body]);
  });

  it('skips a provider whose circuit is open', async () => {
    const providers = [new ScriptedProvider('twilio'), new ScriptedProvider('console'), new ScriptedProvider('backup')];
    const h = resendHarness(providers, { open: ['console'] });
    const c = await startedChallenge(h);
    await h.resends.resend(delivery(resendOf(c, 1)));
    assert.deepEqual(providers.map((p) => p.calls), [1, 0, 1]);
    assert.equal((last(h.published) as EventOf<'SmsSent'>).data.provider, 'backup');
  });

  it('fails over as a start does when the chosen provider fails', async () => {
    const twilio = new ScriptedProvider('twilio');
    const console = new ScriptedProvider('console', ['permanent']);
    const h = resendHarness([twilio, console]);
    const c = await startedChallenge(h);
    await h.resends.resend(delivery(resendOf(c, 1)));
    const sent = last(h.published) as EventOf<'SmsSent'>;
    assert.deepEqual([sent.data.provider, sent.data.attempts, sent.data.resend], ['twilio', 2, 1]);
  });

  it('given a resend delivered again after it was sent, then no second SMS and the same outcome', async () => {
    const twilio = new ScriptedProvider('twilio');
    const h = resendHarness([twilio]);
    const c = await startedChallenge(h);
    const first = resendOf(c, 1);
    await h.resends.resend(delivery(first));
    await h.resends.resend(delivery(first));
    assert.equal(twilio.sent.length, 2, 'the start and one resend');
    const [a, b] = h.published.slice(-2).map((p) => p.event as EventOf<'SmsSent'>);
    assert.equal(b!.id, a!.id);
    assert.deepEqual(b!.data, a!.data);
  });

  it('given a start no provider took, finds the code through the sequence it left on the challenge and starts from the first provider', async () => {
    const twilio = new ScriptedProvider('twilio', ['permanent']);
    const console = new ScriptedProvider('console', ['permanent']);
    const h = resendHarness([twilio, console]);
    const c = await startedChallenge(h);
    assert.equal(last(h.published).type, 'SmsDeliveryFailed');
    await h.resends.resend(delivery(resendOf(c, 1)));
    const sent = last(h.published) as EventOf<'SmsSent'>;
    assert.deepEqual([sent.type, sent.data.provider, sent.data.resend], ['SmsSent', 'twilio', 1]);
    assert.match(twilio.sent[0]!.body, /^314159 /);
  });

  it('given the start not sent yet, tries again later; once the challenge has expired, records the resend as not sent', async () => {
    const twilio = new ScriptedProvider('twilio');
    const h = resendHarness([twilio]);
    const pending = await startedChallenge(h, { send: false });
    await assert.rejects(h.resends.resend(delivery(resendOf(pending, 1))), (e: ContractError) => e.code === 'unavailable');
    assert.equal(h.published.length, 0);
    const expired = await startedChallenge(h, { send: false, expiresInSeconds: 0 });
    const resend = resendOf(expired, 1);
    await h.resends.resend(delivery(resend));
    const failed = only(h.published, 'SmsDeliveryFailed');
    assert.deepEqual(failed.data, { challengeId: expired.challengeId, attempts: 1, failures: [{ provider: 'none', error: 'challenge expired before delivery', transient: false }], resend: 1 });
    assert.equal(failed.id, outcomeEventId(resend.id));
    assert.equal(twilio.calls, 0);
  });

  it('given the tenant deleted since the start was sent, then no resend and no outcome, even once the challenge expired', async () => {
    const twilio = new ScriptedProvider('twilio');
    const console = new ScriptedProvider('console');
    const h = resendHarness([twilio, console]);
    const c = await startedChallenge(h);
    const expired = await startedChallenge(h, { send: false, expiresInSeconds: 0 });
    h.tenants.deleted.add(c.tenantId).add(expired.tenantId);
    const published = h.published.length;
    const before = await refusedForTenant();
    assert.equal(await h.resends.resend(delivery(resendOf(c, 1), 50)), undefined);
    assert.equal(await h.resends.resend(delivery(resendOf(expired, 1), 51)), undefined);
    assert.equal(console.calls, 0);
    assert.equal(twilio.calls, 1, 'the start only');
    assert.equal(h.published.length, published);
    assert.equal(await refusedForTenant(), before + 2);
  });

  it('declares poison an event that is not a resend', async () => {
    const h = resendHarness([new ScriptedProvider('twilio')]);
    await assert.rejects(h.resends.resend(delivery(smsChallenge().event)), (e: Error) => e instanceof PoisonMessageError && /expected ChallengeResendRequested/.test(e.message));
  });
});
