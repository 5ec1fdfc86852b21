import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NoRespondersError, RequestError } from '@nats-io/nats-core';
import twilio from 'twilio';
import { InternalSubjects } from '@mfa/contracts';
import { generateDataKey, loadKeyring } from '@mfa/crypto';
import type { Delivery, EventPublisher } from '@mfa/messaging';
import { sealPersonalData } from '@mfa/service-kit';
import { createLogger, registry } from '@mfa/telemetry';
import { challengeStartedV2, testChallenge, testUser } from '@mfa/testing';
import type { SendClaim } from '../adapters/send-guard.js';
import { SmsProviderError } from '../adapters/sms/sms-provider.js';
import { VoiceCallService, type VoiceOptions } from './voice-call.service.js';

const { keyring } = loadKeyring({ NODE_ENV: 'test' });

/**
 * Placing a call, with what surrounds Twilio failing after it accepted the call: the claim on the
 * call must stand (a redelivery would otherwise call the user a second time) and voice must not be
 * marked failed while the phone rings. Stand-ins record what the service did.
 */
const refusedForTenant = async () =>
  ((await registry.getSingleMetric('mfa_voice_calls_total')?.get())?.values ?? []).find((v) => v.labels.outcome === 'tenant_deleted')?.value ?? 0;

describe('placing a voice call', () => {
  /** What Twilio does with each request to place the call, in order (then it places it). */
  type Twilio = Array<'busy' | 'refused' | 'no answer' | { retryAfterMs: number }>;

  function setUp(failing: { setCallSid?: boolean; guardSent?: boolean; publishes?: number; throttled?: boolean; twilio?: Twilio; lifetimeMs?: number }) {
    const user = testUser({ profile: { phoneNumber: '+14155550142' } });
    const now = new Date();
    const challenge = testChallenge(user, { method: 'voice', startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + (failing.lifetimeMs ?? 180_000)).toISOString() });
    const { dataKey, wrapped } = generateDataKey(keyring, user.tenantId, user.userId, 1);
    const event = challengeStartedV2(challenge, sealPersonalData(dataKey, { tenantId: user.tenantId, userId: user.userId, purpose: 'challenge' }, user.profile));
    event.data.delivery = { channel: 'voice', callerId: '+15005550006', pinMode: false, fraudCode: null };
    const did: string[] = [];
    const published: Array<{ type: string; data: unknown }> = [];
    let claim: SendClaim = { kind: 'claimed' };
    let publishFailures = failing.publishes ?? 0;
    let callSid: string | undefined;
    let placementUnknown = false;
    const twilio = [...(failing.twilio ?? [])];
    const options: VoiceOptions = {
      keys: { get: async () => ({ ...dataKey, wrapped }) },
      provider: {
        name: 'twilio',
        placeCall: async () => {
          const next = twilio.shift();
          if (next === 'busy') throw new SmsProviderError('Twilio 503 error 20500: busy', { provider: 'twilio', transient: true, status: 503 });
          if (next === 'refused') throw new SmsProviderError('Twilio request failed: connect ECONNREFUSED', { provider: 'twilio', transient: true });
          if (typeof next === 'object') throw new SmsProviderError('Twilio 429 error 20429: Too Many Requests', { provider: 'twilio', transient: true, status: 429, retryAfterMs: next.retryAfterMs });
          if (next === 'no answer') throw new SmsProviderError('Twilio did not answer within 10000 ms', { provider: 'twilio', transient: true, outcomeUnknown: true });
          did.push('call placed');
          return { callSid: `CA${did.length}` };
        },
      },
      webhookBaseUrl: 'https://mfa.example.com',
      authToken: 'token',
      ringSeconds: 30,
      attempts: 3,
      retryBaseMs: 1,
      publisher: {
        publish: async (_subject: string, event: { type: string; data: unknown }) => {
          if (publishFailures-- > 0) throw new Error('no JetStream ack');
          did.push(`published ${event.type}`);
          published.push(event);
          return { seq: 1, duplicate: false };
        },
      } as unknown as EventPublisher,
      guard: {
        claim: async () => claim,
        recorded: async () => undefined,
        sent: async (_id, provider, callSid) => {
          if (failing.guardSent) throw new Error('Redis down');
          claim = { kind: 'sent', provider, providerMessageId: callSid };
        },
        release: async () => {
          did.push('claim released');
          claim = { kind: 'claimed' };
        },
        undeliverable: async () => {
          did.push('voice marked failed');
        },
      },
      tenants: { isDeleted: async () => false } as VoiceOptions['tenants'],
      phoneThrottle: { admit: async () => (failing.throttled ? { admitted: false, untilMs: Date.now() + 60_000, scope: 'number' } : { admitted: true }) as never },
      calls: {
        create: async () => undefined,
        setCallSid: async (_id: string, sid: string) => {
          if (failing.setCallSid) throw new Error('Redis down');
          callSid = sid;
        },
        read: async () => (callSid ? { callSid } : placementUnknown ? { placementUnknown } : undefined),
        placementUnknown: async () => {
          did.push('call maybe placed');
          placementUnknown = true;
        },
      } as unknown as VoiceOptions['calls'],
      recordings: {} as VoiceOptions['recordings'],
      internal: {} as VoiceOptions['internal'],
      log: createLogger('voice-test', { level: 'error' }),
    };
    const msg = { working: () => undefined } as unknown as Delivery['msg'];
    const lapse = () => (claim = { kind: 'claimed' });
    return { service: new VoiceCallService(options), delivery: { event, msg } as Delivery, did, lapse, published, options };
  }

  it('given Redis failing to record the call, then the call still counts as placed: nothing released, nothing marked failed', async () => {
    const { service, delivery, did } = setUp({ setCallSid: true, guardSent: true });
    await service.place(delivery);
    assert.deepEqual(did, ['call placed', 'published VoiceCallPlaced']);
  });

  it('given the placed call not published, then the request is tried again and publishes the same call, placing no second one', async () => {
    const { service, delivery, did } = setUp({ publishes: 3 });
    await assert.rejects(service.place(delivery), /no JetStream ack/);
    assert.deepEqual(did, ['call placed']);
    await service.place(delivery);
    assert.deepEqual(did, ['call placed', 'published VoiceCallPlaced']);
  });

  it('given the call not recorded in the guard, not published, and its claim lapsed before the redelivery, then the call record stops a second call', async () => {
    const { service, delivery, did, lapse } = setUp({ guardSent: true, publishes: 3 });
    await assert.rejects(service.place(delivery), /no JetStream ack/);
    lapse();
    await service.place(delivery);
    assert.deepEqual(did, ['call placed', 'published VoiceCallPlaced']);
  });

  it('given a call never placed (number throttled, voice not configured), then VoiceCallFailed names no provider: "none"', async () => {
    const throttled = setUp({ throttled: true });
    await throttled.service.place(throttled.delivery);
    assert.deepEqual(throttled.did, ['voice marked failed', 'published VoiceCallFailed']);
    const failure = (throttled.published[0]!.data as { failures: Array<{ provider: string; error: string }> }).failures;
    assert.deepEqual(failure.map((f) => f.provider), ['none']);
    assert.match(failure[0]!.error, /throttled/);

    const unconfigured = setUp({});
    await new VoiceCallService({ ...unconfigured.options, webhookBaseUrl: undefined }).place(unconfigured.delivery);
    assert.deepEqual((unconfigured.published[0]!.data as { failures: Array<{ provider: string }> }).failures.map((f) => f.provider), ['none']);
  });

  it('given Twilio busy (503) or unreachable, then the call is tried again here, VOICE_CALL_ATTEMPTS in all, and placed', async () => {
    const { service, delivery, did, published } = setUp({ twilio: ['busy', 'refused'] });
    await service.place(delivery);
    assert.deepEqual(did, ['claim released', 'claim released', 'call placed', 'published VoiceCallPlaced']);
    assert.equal((published[0]!.data as { attempts: number }).attempts, 3);
  });

  it('given a deleted tenant, then no call, no outcome, voice not marked failed, and the request counted as tenant_deleted', async () => {
    const { delivery, did, options } = setUp({});
    const before = await refusedForTenant();
    await new VoiceCallService({ ...options, tenants: { isDeleted: async (tenantId) => tenantId === delivery.event.tenantId } }).place(delivery);
    assert.deepEqual(did, []);
    assert.equal(await refusedForTenant(), before + 1);
  });

  it('given the tenant deleted while Twilio is busy, then the call is not tried again and nothing is recorded', async () => {
    const { delivery, did, options } = setUp({ twilio: ['busy'] });
    const deleted = new Set<string>();
    const service = new VoiceCallService({
      ...options,
      tenants: { isDeleted: async (tenantId) => deleted.has(tenantId) },
      provider: {
        name: 'twilio',
        placeCall: (call) => {
          deleted.add(delivery.event.tenantId);
          return options.provider!.placeCall(call);
        },
      },
    });
    const before = await refusedForTenant();
    await service.place(delivery);
    assert.deepEqual(did, ['claim released']);
    assert.equal(await refusedForTenant(), before + 1);
  });

  it('given Twilio busy at every attempt, then VoiceCallFailed with each attempt, voice marked failed: the IdP falls back now, not at expiry', async () => {
    const { service, delivery, did, published } = setUp({ twilio: ['busy', 'busy', 'busy'] });
    await service.place(delivery);
    assert.deepEqual(did, ['claim released', 'claim released', 'claim released', 'voice marked failed', 'published VoiceCallFailed']);
    const { attempts, failures } = published[0]!.data as { attempts: number; failures: Array<{ provider: string; transient: boolean }> };
    assert.equal(attempts, 3);
    assert.deepEqual(failures.map((f) => [f.provider, f.transient]), [['twilio', true], ['twilio', true], ['twilio', true]]);
  });

  it('given a Retry-After that leaves under 20 s of the challenge to answer the call, then it is not placed again: VoiceCallFailed at once', async () => {
    // 25 s left: Twilio asks for 6 s, after which 19 s would be left for the phone to ring and be answered.
    const { service, delivery, did, published } = setUp({ twilio: [{ retryAfterMs: 6_000 }], lifetimeMs: 25_000 });
    const started = Date.now();
    await service.place(delivery);
    assert.deepEqual(did, ['claim released', 'voice marked failed', 'published VoiceCallFailed']);
    const failures = (published[0]!.data as { failures: Array<{ provider: string; error: string }> }).failures;
    assert.deepEqual(failures.map((f) => f.provider), ['twilio', 'none']);
    assert.match(failures[1]!.error, /too little of the challenge's lifetime left to answer/);
    assert.ok(Date.now() - started < 5_000, 'the Retry-After was not waited out');
    // With time to answer after it, Twilio's Retry-After is waited out and the call placed.
    const roomy = setUp({ twilio: [{ retryAfterMs: 1_000 }], lifetimeMs: 60_000 });
    await roomy.service.place(roomy.delivery);
    assert.deepEqual(roomy.did, ['claim released', 'call placed', 'published VoiceCallPlaced']);
  });

  it('given Twilio got the request and never answered, then it is not placed again (it could ring twice), not even by a redelivery', async () => {
    const { service, delivery, did, published } = setUp({ twilio: ['no answer'] });
    await service.place(delivery);
    assert.deepEqual(did, ['call maybe placed', 'claim released', 'voice marked failed', 'published VoiceCallFailed']);
    const failures = (published[0]!.data as { failures: Array<{ provider: string; error: string; transient: boolean }> }).failures;
    assert.equal(failures.length, 1);
    assert.match(failures[0]!.error, /did not answer.*may have placed the call: not placed again/);
    await service.place(delivery);
    assert.deepEqual(did.slice(4), ['claim released', 'published VoiceCallFailed'], 'the same outcome, no call');
  });
});

/**
 * The keys pressed at a prompt, while the other services blip: the prompt is answered once, so its
 * requests are sent again, each signed anew, within Twilio's patience, but a wrong PIN's answer
 * (counted against the challenge each time it is recorded) only when it certainly recorded nothing.
 */
describe('the keys of a prompt while a service blips', () => {
  const authToken = 'token';
  const challengeId = 'tag.nonce';

  function gatherWith(replies: Record<string, Array<Error | object>>) {
    const sent: string[] = [];
    const bodies: Array<Record<string, unknown>> = [];
    const finished: string[] = [];
    const options = {
      provider: { name: 'twilio', placeCall: async () => ({ callSid: 'CA1' }) },
      webhookBaseUrl: 'https://mfa.example.com',
      authToken,
      calls: {
        read: async () => ({ tenantId: 'contoso', userId: 'helga@contoso.com', pinMode: true, fraudCode: null, callSid: 'CA1' }),
        answerOnce: async () => true,
        finish: async (_id: string, outcome: string) => (finished.push(outcome), true),
      },
      internal: {
        request: async (subject: string, body: Record<string, unknown>) => {
          sent.push(subject.split('.').at(-1)!);
          bodies.push(body);
          const next = replies[subject]?.shift() ?? { error: { code: 'internal', message: 'unscripted' } };
          if (next instanceof Error) throw next;
          return next;
        },
      },
      recordings: { recorded: async () => undefined },
      guard: { undeliverable: async () => undefined },
      publisher: { publish: async () => ({ seq: 1, duplicate: false }) },
      tenants: { isDeleted: async () => false },
      log: createLogger('voice-test', { level: 'error' }),
    } as unknown as VoiceOptions;
    const service = new VoiceCallService(options);
    const params = { CallSid: 'CA1', Digits: '1234', FinishedOnKey: '#' };
    const gather = (prompt = 1) => {
      const url = `https://mfa.example.com/voice/gather/${challengeId}?prompt=${prompt}`;
      return service.gather({ challengeId, url, params, prompt, signature: twilio.getExpectedTwilioSignature(authToken, url, params) });
    };
    return { gather, sent, finished, bodies };
  }
  const noResponders = () => new RequestError('no responders: mfa.int', { cause: new NoRespondersError('mfa.int') });
  const unavailable = { error: { code: 'unavailable', message: 'try again' } };

  it('given user-settings and auth-challenge unavailable for a moment, then the PIN check and the answer are sent again and the user is signed in', async () => {
    const { gather, sent, finished } = gatherWith({
      [InternalSubjects.pinVerify]: [new Error('TIMEOUT'), unavailable, { valid: true, pinSet: true }],
      [InternalSubjects.voiceOutcome]: [noResponders(), unavailable, { status: 'approved' }],
    });
    const answer = await gather();
    assert.equal(answer.status, 200);
    assert.deepEqual(sent, ['verify', 'verify', 'verify', 'voice', 'voice', 'voice']);
    assert.deepEqual(finished, ['approved']);
  });

  it('given an auth-challenge that records answers once (its reply names the answer), then an answer left unanswered is sent again under the same id; a conflict is not', async () => {
    const { gather, sent, bodies, finished } = gatherWith({
      [InternalSubjects.pinVerify]: [{ valid: false, pinSet: true }, { valid: true, pinSet: true }, { valid: true, pinSet: true }],
      [InternalSubjects.voiceOutcome]: [
        { status: 'pending', reason: 'invalid_code', answerId: 'CA1:1' },
        new Error('TIMEOUT'),
        { status: 'approved', answerId: 'CA1:2' },
        { error: { code: 'conflict', message: 'challenge already completed (approved)' } },
      ],
    });
    await gather(1);
    await gather(2);
    assert.deepEqual(finished, ['approved']);
    const answers = bodies.filter((b) => 'approved' in b).map((b) => [b.approved, b.answerId]);
    assert.deepEqual(answers, [[false, 'CA1:1'], [true, 'CA1:2'], [true, 'CA1:2']]);
    await assert.rejects(gather(3), /conflict/);
    assert.deepEqual(sent.slice(-2), ['verify', 'voice'], 'a conflict is its final word');
  });

  it('given the answer of a wrong PIN unanswered (it may have been counted) by an auth-challenge not known to record answers once, then it is not sent again', async () => {
    const { gather, sent } = gatherWith({
      [InternalSubjects.pinVerify]: [{ valid: false, pinSet: true }],
      [InternalSubjects.voiceOutcome]: [new Error('TIMEOUT'), { status: 'pending' }],
    });
    await assert.rejects(gather(), /TIMEOUT/);
    assert.deepEqual(sent, ['verify', 'voice']);
  });

  it('given an auth-challenge that named answers, then one that does not (a rollback, or an older instance of the queue group), then answers are no longer sent again after a timeout', async () => {
    const { gather, sent } = gatherWith({
      [InternalSubjects.pinVerify]: [{ valid: false, pinSet: true }, { valid: false, pinSet: true }, { valid: false, pinSet: true }],
      [InternalSubjects.voiceOutcome]: [
        { status: 'pending', reason: 'invalid_code', answerId: 'CA1:1' },
        { status: 'pending', reason: 'invalid_code' },
        new Error('TIMEOUT'),
        { status: 'pending' },
      ],
    });
    await gather(1);
    await gather(2);
    await assert.rejects(gather(3), /TIMEOUT/);
    assert.deepEqual(sent, ['verify', 'voice', 'verify', 'voice', 'verify', 'voice'], 'the third answer, unanswered, is not sent again: it may have been counted');
  });
});

/**
 * A call placed just before its tenant was deleted (tenants.delete) and answered after: Twilio's
 * webhooks get a hang-up, nothing of the tenant is played (its greeting, its recordings), nothing is
 * decided nor sent to auth-challenge, and its final status records nothing.
 */
describe('the webhooks of a call whose tenant is deleted', () => {
  const authToken = 'token';
  const challengeId = 'tag.nonce';
  const tenantId = 'contoso';
  const hangUp = (() => {
    const response = new twilio.twiml.VoiceResponse();
    response.hangup();
    return response.toString();
  })();
  const countedAs = async (outcome: string) =>
    ((await registry.getSingleMetric('mfa_voice_calls_total')?.get())?.values ?? []).find((v) => v.labels.outcome === outcome)?.value ?? 0;

  function callOf(isDeleted: (tenantId: string) => Promise<boolean>) {
    const did: string[] = [];
    const options = {
      provider: { name: 'twilio', placeCall: async () => ({ callSid: 'CA1' }) },
      webhookBaseUrl: 'https://mfa.example.com',
      authToken,
      calls: {
        read: async () => ({ tenantId, userId: 'helga@contoso.com', language: 'en', pinMode: false, fraudCode: null }),
        setCallSid: async () => void did.push('call sid recorded'),
        answerOnce: async () => (did.push('answer recorded'), true),
        finish: async (_id: string, outcome: string) => (did.push(`finished ${outcome}`), true),
      },
      internal: {
        request: async (subject: string) => {
          did.push(`asked ${subject}`);
          return { status: 'approved' };
        },
      },
      recordings: {
        recorded: async (_tenant: string, type: string) => {
          did.push(`recording ${type} looked up`);
          return undefined;
        },
      },
      guard: { undeliverable: async () => void did.push('voice marked failed') },
      publisher: { publish: async (_subject: string, event: { type: string }) => (did.push(`published ${event.type}`), { seq: 1, duplicate: false }) },
      tenants: { isDeleted },
      log: createLogger('voice-test', { level: 'error' }),
    } as unknown as VoiceOptions;
    const service = new VoiceCallService(options);
    const signed = (path: string, params: Record<string, string>) => {
      const url = `https://mfa.example.com/voice/${path}/${challengeId}${path === 'gather' ? '?prompt=1' : ''}`;
      return { challengeId, url, params, signature: twilio.getExpectedTwilioSignature(authToken, url, params) };
    };
    const base = { CallSid: 'CA1', CallStatus: 'in-progress' };
    return {
      did,
      twiml: () => service.twiml(signed('twiml', base)),
      gather: () => service.gather({ ...signed('gather', { ...base, Digits: '', FinishedOnKey: '#' }), prompt: 1 }),
      status: () => service.status(signed('status', { ...base, CallStatus: 'completed' })),
    };
  }

  it('given the tenant deleted before the call was answered, then the TwiML hangs up, plays nothing of the tenant, and is counted as hung_up_tenant_deleted', async () => {
    const call = callOf(async (id) => id === tenantId);
    const before = await countedAs('hung_up_tenant_deleted');
    assert.deepEqual(await call.twiml(), { status: 200, twiml: hangUp });
    assert.deepEqual(call.did, []);
    assert.equal(await countedAs('hung_up_tenant_deleted'), before + 1);
  });

  it('given the tenant deleted between prompts, then the keys pressed are not sent to auth-challenge nor recorded: the call hangs up', async () => {
    const call = callOf(async (id) => id === tenantId);
    assert.deepEqual(await call.gather(), { status: 200, twiml: hangUp });
    assert.deepEqual(call.did, []);
  });

  it('given the tenant deleted, then the final status records nothing: no VoiceCallFailed, voice not marked failed', async () => {
    const call = callOf(async (id) => id === tenantId);
    assert.deepEqual(await call.status(), { status: 204 });
    assert.deepEqual(call.did, []);
  });

  it('given whether the tenant is deleted unreadable (its log unavailable), then the call hangs up (fail closed), counted as hung_up_tenant_unchecked; its end is still recorded, so that the IdP falls back', async () => {
    const call = callOf(async () => {
      throw new Error('MFA_USER_SETTINGS unavailable');
    });
    const before = await countedAs('hung_up_tenant_unchecked');
    assert.deepEqual(await call.twiml(), { status: 200, twiml: hangUp });
    assert.deepEqual(await call.gather(), { status: 200, twiml: hangUp });
    assert.deepEqual(call.did, []);
    assert.equal(await countedAs('hung_up_tenant_unchecked'), before + 2);
    await call.status();
    const did: string[] = call.did;
    assert.ok(did.includes('published VoiceCallFailed'), did.join(', '));
  });

  it('given a live tenant, then the call plays its greeting in a prompt, and # is sent to auth-challenge', async () => {
    const call = callOf(async () => false);
    const answer = await call.twiml();
    assert.equal(answer.status, 200);
    assert.match((answer as { twiml: string }).twiml, /<Gather [^>]*><Say[^>]*>[^<]+<\/Say><\/Gather>/);
    assert.ok(call.did.includes('recording greetingStandard looked up'));
    assert.equal((await call.gather()).status, 200);
    assert.ok(call.did.includes(`asked ${InternalSubjects.voiceOutcome}`));
  });
});
