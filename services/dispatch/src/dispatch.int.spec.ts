import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { Consumers, EventSubjects, Headers, InternalSubjects, parseEvent, Streams, type AnyEvent, type EventOf, type VoiceOutcomeRequest } from '@mfa/contracts';
import { loadKeyring, seal, SealContext } from '@mfa/crypto';
import { connectNats, EventPublisher, type NatsClients } from '@mfa/messaging';
import { sealPersonalData, UserDataKeys, type RunningService } from '@mfa/service-kit';
import { registry, shutdownTelemetry, SpanKind, startTelemetry, type TelemetryOptions } from '@mfa/telemetry';
import { Redis } from 'ioredis';
import { parseChallengeId, RedisKeys } from '@mfa/projection';
import { challengeResendRequested, challengeStarted, challengeStartedV2, eventually, FakeSmsc, FakeTwilio, freePort, itWith, testChallenge, testChallengeId, testEnv, testUser, uniqueTenant } from '@mfa/testing';
import { CHALLENGE_GONE, USER_ERASED } from './application/sms-delivery.service.js';
import { boot } from './boot.js';
import { loadDispatchConfig } from './config.js';

// Real NATS, the real dispatch app in-process, and a fake Twilio that speaks Twilio's REST API.
// The durable consumer is shared with whatever else publishes SMS requests, so every assertion
// is filtered by this run's tenant and challenge ids.

// The JSON logger reads LOG_LEVEL from the process environment; keep test output to problems.
process.env.LOG_LEVEL ??= 'warn';

type SpanProcessor = NonNullable<TelemetryOptions['spanProcessors']>[number];
const spans: Array<{ name: string; kind: number; traceId: string; spanId: string }> = [];
const recorder: SpanProcessor = {
  onStart: () => undefined,
  onEnd: (span) => void spans.push({ name: span.name, kind: span.kind, ...span.spanContext() }),
  forceFlush: async () => undefined,
  shutdown: async () => undefined,
};
startTelemetry({ serviceName: 'dispatch-int-test', env: {}, spanProcessors: [recorder] });

const tenantId = uniqueTenant('dispatch');
const { keyring } = loadKeyring(process.env);
let nats: NatsClients;
let publisher: EventPublisher;
/** Where the tests leave each challenge as auth-challenge does when it starts one. */
let challenges: Redis;

/** The challenge as auth-challenge keeps it in Redis: dispatch sends nothing for one Redis no longer holds. */
async function challengeInRedis(challengeId: string, tenant = tenantId): Promise<void> {
  const id = parseChallengeId(challengeId)!;
  await challenges.hset(RedisKeys.challenge(id.tag, id.nonce), { tenantId: tenant, status: 'pending' });
  await challenges.pexpire(RedisKeys.challenge(id.tag, id.nonce), 600_000);
}

/** A number no other test uses, so the fake's messages to it are ours alone. */
const uniquePhone = () => `+1555${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;

async function requestSms(options: { to: string; code?: string; lifetimeSeconds?: number; traceparent?: string; sealFor?: string; inRedis?: boolean; tenant?: string }) {
  const code = options.code ?? String(randomInt(0, 1_000_000)).padStart(6, '0');
  const tenant = options.tenant ?? tenantId;
  const now = new Date();
  // Started now: the service checks the expiry against its clock and words the SMS from both
  // times. A profile without a language, so the SMS is in English.
  const challenge = testChallenge(testUser({ tenantId: tenant, profile: { phoneNumber: options.to } }), {
    startedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + (options.lifetimeSeconds ?? 300) * 1000).toISOString(),
  });
  const { challengeId } = challenge;
  // The factory's sealed code opens under no key; the service must open this one (unless a test
  // seals it for another challenge to have it refused).
  const sealedCode = seal(keyring, Buffer.from(code), SealContext.smsCode(tenant, options.sealFor ?? challengeId));
  const event = challengeStarted(challenge, {
    ...(options.traceparent ? { metadata: { traceparent: options.traceparent } } : {}),
    data: { delivery: { channel: 'sms', to: options.to, sealedCode } },
  });
  if (options.inRedis !== false) await challengeInRedis(challengeId, tenant);
  const ack = await publisher.publish(EventSubjects.smsRequested, event);
  return { event, challengeId, code, seq: ack.seq, challenge };
}

/** Reads a stream forward from a sequence, keeping what it has seen. */
class StreamReader {
  readonly seen: Array<{ seq: number; subject: string; headers: Map<string, string>; data: Uint8Array }> = [];
  private next: number;
  constructor(
    private readonly stream: string,
    private readonly subject: string,
    from: number,
  ) {
    this.next = from;
  }
  async poll(): Promise<void> {
    for (;;) {
      const msg = await nats.jsm.direct.getMessage(this.stream, { seq: this.next, next_by_subj: this.subject });
      if (!msg) return;
      const headers = new Map<string, string>();
      for (const [k, v] of msg.header ?? []) headers.set(k, v[0] ?? '');
      this.seen.push({ seq: msg.seq, subject: msg.subject, headers, data: msg.data });
      this.next = msg.seq + 1;
    }
  }
}

/** Messages a consumer of this process has acknowledged (its own counter, in this process's registry). */
async function acknowledged(durable: string = Consumers.dispatchSms.durable): Promise<number> {
  const metric = await registry.getSingleMetric('mfa_events_consumed_total')?.get();
  return metric?.values.find((v) => v.labels.consumer === durable && v.labels.outcome === 'ack')?.value ?? 0;
}

async function lastSeq(stream: string): Promise<number> {
  return (await nats.jsm.streams.info(stream)).state.last_seq;
}

let outcomes: StreamReader;
let deadLetters: StreamReader;

async function outcomeOf(challengeId: string): Promise<{ subject: string; event: AnyEvent }> {
  return eventually(
    async () => {
      await outcomes.poll();
      const found = outcomes.seen
        .map((m) => ({ subject: m.subject, event: parseEvent(JSON.parse(new TextDecoder().decode(m.data))) }))
        .find(({ event }) => event.tenantId === tenantId && event.aggregateId === challengeId);
      return found;
    },
    20_000,
    `the outcome of challenge ${challengeId}`,
  );
}

async function outcomesOf(challengeId: string): Promise<AnyEvent[]> {
  await outcomes.poll();
  return outcomes.seen
    .map((m) => parseEvent(JSON.parse(new TextDecoder().decode(m.data))))
    .filter((event) => event.tenantId === tenantId && event.aggregateId === challengeId);
}

/**
 * Everything queued before a scripted failure (other suites' SMS requests and resends) is handled,
 * so it cannot take the failure meant for our request. Unacknowledged messages alone do not count
 * once the fake has gone quiet: a dead-lettered message stays unacknowledged on servers that
 * ignore the reason of a +TERM (nats-server 2.9), and those never reach Twilio.
 */
async function backlogHandled(fake: FakeTwilio): Promise<void> {
  let seenRequests = -1;
  let quietSince = Date.now();
  await eventually(
    async () => {
      const infos = await Promise.all([Consumers.dispatchSms, Consumers.dispatchSmsResend].map((c) => nats.jsm.consumers.info(c.stream, c.durable)));
      if (fake.requests !== seenRequests) {
        seenRequests = fake.requests;
        quietSince = Date.now();
      }
      if (infos.some((info) => info.num_pending > 0)) return undefined;
      return infos.every((info) => info.num_ack_pending === 0) || Date.now() - quietSince >= 500 ? true : undefined;
    },
    60_000,
    'the SMS request backlog to be handled',
  );
}

async function startDispatch(env: Record<string, string>): Promise<RunningService> {
  return boot(
    loadDispatchConfig({
      ...process.env,
      NODE_ENV: 'test',
      NATS_URL: testEnv.natsUrl,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      SMS_RETRY_BASE_MS: '20',
      ...env,
    }),
  );
}

before(async () => {
  nats = await connectNats({ url: testEnv.natsUrl, name: 'dispatch-int-test', connectTimeoutMs: 5_000 });
  publisher = new EventPublisher(nats.js);
  challenges = new Redis(testEnv.redisUrl);
});

after(async () => {
  challenges?.disconnect();
  await nats.nc.close();
  await shutdownTelemetry();
});

describe('dispatch with Twilio', () => {
  const fake = new FakeTwilio();
  let running: RunningService;

  before(async () => {
    await fake.start();
    running = await startDispatch(fake.env());
    outcomes = new StreamReader(Streams.dispatch.name, EventSubjects.allDispatch, (await lastSeq(Streams.dispatch.name)) + 1);
    deadLetters = new StreamReader(Streams.deadLetters.name, EventSubjects.deadLetter(Consumers.dispatchSms.durable), (await lastSeq(Streams.deadLetters.name)) + 1);
    await backlogHandled(fake);
  });

  after(async () => {
    await running?.app.close();
    await fake.stop();
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'sends the code once through Twilio and records SmsSent with the Twilio sid, continuing the trace', async () => {
    const traceId = randomBytes(16).toString('hex');
    const to = uniquePhone();
    const { challengeId, code } = await requestSms({ to, traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` });

    const sms = await fake.waitFor((m) => m.to === to);
    assert.equal(FakeTwilio.codeOf(sms), code);
    assert.equal(sms.from, '+15005550006');
    assert.match(sms.body, /expires in 5 minutes/);
    assert.ok(sms.validityPeriod! > 290 && sms.validityPeriod! <= 300, `Twilio drops it when the code expires (ValidityPeriod ${sms.validityPeriod})`);

    const { subject, event } = await outcomeOf(challengeId);
    assert.equal(subject, EventSubjects.smsSent);
    assert.equal(event.type, 'SmsSent');
    const sent = event as EventOf<'SmsSent'>;
    assert.deepEqual(sent.data, { challengeId, provider: 'twilio', providerMessageId: sms.sid, attempts: 1 });
    assert.equal(fake.messagesTo(to).length, 1);

    // One trace from the request through the consumer and the Twilio call to the outcome.
    const twilioSpan = spans.find((s) => s.name === 'twilio send' && s.traceId === traceId);
    assert.ok(twilioSpan, 'a twilio send span in the trace of the request');
    assert.equal(twilioSpan.kind, SpanKind.CLIENT);
    assert.equal(sms.traceparent, `00-${traceId}-${twilioSpan.spanId}-01`);
    assert.ok(spans.some((s) => s.name === `${Consumers.dispatchSms.durable} process` && s.kind === SpanKind.CONSUMER && s.traceId === traceId));
    assert.match(sent.metadata.traceparent ?? '', new RegExp(`^00-${traceId}-`));
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'retries transient Twilio errors (500, 503) and delivers once, in the third attempt', async () => {
    await backlogHandled(fake);
    fake.failNext({ status: 500 }, { status: 503 });
    const to = uniquePhone();
    const { challengeId, code } = await requestSms({ to });
    const { event } = await outcomeOf(challengeId);
    assert.equal(event.type, 'SmsSent');
    const sent = event as EventOf<'SmsSent'>;
    assert.equal(sent.data.attempts, 3);
    const delivered = fake.messagesTo(to);
    assert.equal(delivered.length, 1);
    assert.equal(FakeTwilio.codeOf(delivered[0]!), code);
    assert.equal(sent.data.providerMessageId, delivered[0]!.sid);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'waits out the Retry-After of a 429 before trying Twilio again, longer than its own back-off', async () => {
    await backlogHandled(fake);
    const to = uniquePhone();
    fake.failNext({ status: 429, retryAfter: 1 });
    const started = Date.now();
    const { challengeId } = await requestSms({ to });
    const { event } = await outcomeOf(challengeId);
    assert.equal(event.type, 'SmsSent');
    assert.equal((event as EventOf<'SmsSent'>).data.attempts, 2);
    // SMS_RETRY_BASE_MS is 20 here: only the Retry-After (1 s) can have held the second attempt back.
    const waited = fake.messagesTo(to)[0]!.receivedAt.getTime() - started;
    assert.ok(waited >= 950, `sent again after ${waited} ms`);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'records SmsDeliveryFailed when Twilio refuses the message permanently and no provider is left', async () => {
    await backlogHandled(fake);
    const to = uniquePhone();
    // Twilio's own wording quotes the number; none of it may reach the event.
    fake.failNext({ status: 400, code: 21211, message: `The 'To' number ${to} is not a valid phone number.` });
    const { challengeId } = await requestSms({ to });
    const { subject, event } = await outcomeOf(challengeId);
    assert.equal(subject, EventSubjects.smsFailed);
    assert.equal(event.type, 'SmsDeliveryFailed');
    const failed = event as EventOf<'SmsDeliveryFailed'>;
    assert.equal(failed.data.attempts, 1);
    assert.equal(failed.data.failures.length, 1);
    assert.equal(failed.data.failures[0]!.provider, 'twilio');
    assert.equal(failed.data.failures[0]!.transient, false);
    assert.match(failed.data.failures[0]!.error, /21211.*The 'To' number \[number\] is not a valid phone number/);
    assert.ok(!failed.data.failures[0]!.error.includes(to.slice(1)), 'the phone number reached the event');
    assert.ok(!failed.data.failures[0]!.error.includes(fake.authToken));
    assert.equal(fake.messagesTo(to).length, 0);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'does not send a code whose challenge expired before delivery', async () => {
    const to = uniquePhone();
    const { challengeId } = await requestSms({ to, lifetimeSeconds: -1 });
    const { event } = await outcomeOf(challengeId);
    assert.equal(event.type, 'SmsDeliveryFailed');
    assert.deepEqual((event as EventOf<'SmsDeliveryFailed'>).data.failures, [
      { provider: 'none', error: 'challenge expired before delivery', transient: false },
    ]);
    assert.equal(fake.messagesTo(to).length, 0);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'reads the phone of a v2 request from its sealed personal data, and sends nothing once the user is erased', async () => {
    await backlogHandled(fake);
    const keys = new UserDataKeys(nats, keyring);
    const request = async () => {
      const to = uniquePhone();
      const user = testUser({ tenantId, userId: `v2.${randomUUID()}@contoso.example`, profile: { phoneNumber: to } });
      const now = new Date();
      const challenge = testChallenge(user, { startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 300_000).toISOString() });
      const key = await keys.getOrCreate(tenantId, user.userId);
      const event = challengeStartedV2(challenge, sealPersonalData(key, { tenantId, userId: user.userId, purpose: 'challenge' }, user.profile));
      event.data.delivery = { channel: 'sms', sealedCode: seal(keyring, Buffer.from('161803'), SealContext.smsCode(tenantId, challenge.challengeId)) };
      return { event, to, user };
    };
    const kept = await request();
    await challengeInRedis(kept.event.data.challengeId);
    await publisher.publish(EventSubjects.smsRequested, kept.event);
    assert.equal(FakeTwilio.codeOf(await fake.waitFor((m) => m.to === kept.to)), '161803');
    assert.equal((await outcomeOf(kept.event.data.challengeId)).event.type, 'SmsSent');

    const erased = await request();
    await challengeInRedis(erased.event.data.challengeId);
    await keys.erase(tenantId, erased.user.userId, 1, new Date());
    await publisher.publish(EventSubjects.smsRequested, erased.event);
    const { subject, event } = await outcomeOf(erased.event.data.challengeId);
    assert.equal(subject, EventSubjects.smsFailed);
    assert.deepEqual((event as EventOf<'SmsDeliveryFailed'>).data.failures, [{ provider: 'none', error: USER_ERASED, transient: false }]);
    assert.equal(fake.messagesTo(erased.to).length, 0);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'sends nothing for a challenge Redis no longer holds (replaced or emptied since it started), however often the request comes', async () => {
    const to = uniquePhone();
    const first = await requestSms({ to, inRedis: false });
    const { subject, event } = await outcomeOf(first.challengeId);
    assert.equal(subject, EventSubjects.smsFailed);
    assert.deepEqual((event as EventOf<'SmsDeliveryFailed'>).data.failures, [{ provider: 'none', error: CHALLENGE_GONE, transient: false }]);
    // Delivered again (a redelivery that reached a restarted stack on an empty Redis): still nothing.
    await nats.js.publish(EventSubjects.smsRequested, JSON.stringify(first.event), { msgID: randomUUID() });
    await backlogHandled(fake);
    assert.equal(fake.messagesTo(to).length, 0);
    assert.equal((await outcomesOf(first.challengeId)).length, 1, 'one outcome (the same id both times)');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'sends one SMS and records one outcome for a request that is delivered twice', async () => {
    const to = uniquePhone();
    const acksBefore = await acknowledged();
    const first = await requestSms({ to });
    await eventually(async () => (fake.messagesTo(to).length === 1 ? true : undefined), 20_000, 'the send');
    // The same request again under another message id, as after a NATS crash that lost the ack.
    await nats.js.publish(EventSubjects.smsRequested, JSON.stringify(first.event), { msgID: randomUUID() });
    // Acknowledged after their outcome was published: both have been through it.
    await eventually(async () => ((await acknowledged()) >= acksBefore + 2 ? true : undefined), 20_000, 'both requests handled');
    assert.equal(fake.messagesTo(to).length, 1, 'the redelivered request sent a second SMS');
    const recorded = await outcomesOf(first.challengeId);
    assert.equal(recorded.length, 1);
    assert.equal(recorded[0]!.type, 'SmsSent');
    assert.equal(fake.messagesTo(to)[0]!.sid, (recorded[0] as EventOf<'SmsSent'>).data.providerMessageId);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'a request sent, then delivered again after its challenge expired, finds it sent: nothing more sent, and SMS not marked failed', async () => {
    const to = uniquePhone();
    const acksBefore = await acknowledged();
    const first = await requestSms({ to, lifetimeSeconds: 2 });
    assert.equal((await outcomeOf(first.challengeId)).event.type, 'SmsSent');
    await new Promise((r) => setTimeout(r, Date.parse(first.challenge.expiresAt) - Date.now() + 100));
    // The same request again under another message id, as after a NATS crash that lost the ack.
    await nats.js.publish(EventSubjects.smsRequested, JSON.stringify(first.event), { msgID: randomUUID() });
    await eventually(async () => ((await acknowledged()) >= acksBefore + 2 ? true : undefined), 20_000, 'both requests handled');
    assert.equal(fake.messagesTo(to).length, 1);
    const id = parseChallengeId(first.challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), null, 'status reads expired, not delivery_failed');
    assert.equal(await challenges.hget(RedisKeys.failedMethods(id.tag), 'sms'), null, 'SMS not marked failed for the user');
    assert.deepEqual((await outcomesOf(first.challengeId)).map((e) => e.type), ['SmsSent']);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'resends the same code, read back from the start in the stream, once however often the resend is delivered', async () => {
    const to = uniquePhone();
    const first = await requestSms({ to });
    assert.equal((await outcomeOf(first.challengeId)).event.type, 'SmsSent');
    const acksBefore = await acknowledged(Consumers.dispatchSmsResend.durable);
    const resend = challengeResendRequested(first.challenge, { data: { resend: 1 } });
    await publisher.publish(EventSubjects.challengeResendRequested, resend);
    // The same resend again under another message id, as after a NATS crash that lost the ack.
    await nats.js.publish(EventSubjects.challengeResendRequested, JSON.stringify(resend), { msgID: randomUUID() });
    await eventually(async () => ((await acknowledged(Consumers.dispatchSmsResend.durable)) >= acksBefore + 2 ? true : undefined), 20_000, 'both resends handled');
    const messages = fake.messagesTo(to);
    assert.equal(messages.length, 2, 'the start and one resend');
    assert.deepEqual(messages.map((m) => FakeTwilio.codeOf(m)), [first.code, first.code]);
    const resent = (await outcomesOf(first.challengeId)).filter((e): e is EventOf<'SmsSent'> => e.type === 'SmsSent' && e.data.resend === 1);
    assert.equal(resent.length, 1);
    assert.deepEqual(resent[0]!.data, { challengeId: first.challengeId, provider: 'twilio', providerMessageId: messages[1]!.sid, attempts: 1, resend: 1 });
    assert.equal(resent[0]!.metadata.causationId, resend.id);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'dead-letters a resend whose recorded start is another challenge\'s, sending nothing', async () => {
    const redis = new Redis(testEnv.redisUrl);
    try {
      const other = await requestSms({ to: uniquePhone() });
      const to = uniquePhone();
      const victim = await requestSms({ to });
      await outcomeOf(victim.challengeId);
      await outcomeOf(other.challengeId);
      // A send record pointing at another challenge's start (a bug, or Redis written by someone else).
      const [tag, nonce] = victim.challengeId.split('.') as [string, string];
      await redis.set(RedisKeys.smsSend(tag, nonce), `sent twilio SMforged ${other.seq}`, 'PX', 60_000);
      const resendDeadLetters = new StreamReader(Streams.deadLetters.name, EventSubjects.deadLetter(Consumers.dispatchSmsResend.durable), (await lastSeq(Streams.deadLetters.name)) + 1);
      const ack = await publisher.publish(EventSubjects.challengeResendRequested, challengeResendRequested(victim.challenge, { data: { resend: 1 } }));
      const dead = await eventually(
        async () => {
          await resendDeadLetters.poll();
          return resendDeadLetters.seen.find((m) => m.headers.get(Headers.deadLetterSequence) === String(ack.seq));
        },
        20_000,
        'the dead letter',
      );
      assert.match(dead.headers.get(Headers.deadLetterReason) ?? '', /^poison: the message at sequence \d+ is not the start of this challenge/);
      assert.equal(fake.messagesTo(to).length, 1, 'the start only');
    } finally {
      await redis.quit();
    }
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'dead-letters an unparseable request with the reason, and keeps working', async () => {
    const ack = await nats.js.publish(EventSubjects.smsRequested, `{"not": "an event", "tenant": "${tenantId}"`, { msgID: randomUUID() });
    const dead = await eventually(
      async () => {
        await deadLetters.poll();
        return deadLetters.seen.find(
          (m) => m.headers.get(Headers.deadLetterStream) === Streams.challenges.name && m.headers.get(Headers.deadLetterSequence) === String(ack.seq),
        );
      },
      20_000,
      'the dead letter',
    );
    assert.equal(dead.subject, 'mfa.dlq.dispatch-sms');
    assert.match(dead.headers.get(Headers.deadLetterReason) ?? '', /unparseable event/);
    assert.equal(dead.headers.get(Headers.deadLetterSubject), EventSubjects.smsRequested);

    const to = uniquePhone();
    const { challengeId, code } = await requestSms({ to });
    assert.equal(FakeTwilio.codeOf(await fake.waitFor((m) => m.to === to)), code);
    assert.equal((await outcomeOf(challengeId)).event.type, 'SmsSent');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'dead-letters a request whose code does not open, without sending anything', async () => {
    const to = uniquePhone();
    const { seq, challengeId } = await requestSms({ to, sealFor: randomUUID() });
    const dead = await eventually(
      async () => {
        await deadLetters.poll();
        return deadLetters.seen.find((m) => m.headers.get(Headers.deadLetterSequence) === String(seq));
      },
      20_000,
      'the dead letter',
    );
    assert.match(dead.headers.get(Headers.deadLetterReason) ?? '', /^poison: the sealed SMS code does not open/);
    assert.equal(fake.messagesTo(to).length, 0);
    assert.deepEqual(await outcomesOf(challengeId), []);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'answers health with NATS up and counts sends in /metrics', async () => {
    const health = await fetch(`${running.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', checks: { nats: 'ok', redis: 'ok', sms_providers: 'ok' } });
    const metrics = await (await fetch(`${running.url}/metrics`)).text();
    assert.match(metrics, /mfa_sms_send_total\{[^}]*provider="twilio"[^}]*outcome="sent"[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_sms_send_total\{[^}]*provider="twilio"[^}]*outcome="transient_error"/);
    assert.match(metrics, /mfa_sms_provider_duration_seconds_count\{[^}]*provider="twilio"/);
  });
});

describe('dispatch failing over from Twilio to the console', () => {
  const fake = new FakeTwilio();
  let running: RunningService;

  before(async () => {
    await fake.start();
    // A wrong auth token: Twilio answers 401 (code 20003), a permanent error for every message.
    running = await startDispatch({ ...fake.env(), SMS_PROVIDERS: 'twilio,console', TWILIO_AUTH_TOKEN: 'wrong-token' });
  });

  after(async () => {
    await running?.app.close();
    await fake.stop();
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'delivers through the console when Twilio refuses permanently', async () => {
    const to = uniquePhone();
    const requestsBefore = fake.requests;
    const { challengeId } = await requestSms({ to });
    const { event } = await outcomeOf(challengeId);
    assert.equal(event.type, 'SmsSent');
    const sent = event as EventOf<'SmsSent'>;
    assert.equal(sent.data.provider, 'console');
    assert.match(sent.data.providerMessageId, /^console-[0-9a-f]+$/);
    assert.equal(sent.data.attempts, 2);
    assert.ok(fake.requests > requestsBefore, 'Twilio was tried first');
    assert.equal(fake.messagesTo(to).length, 0);
  });
});

describe('dispatch placing calls through Twilio', () => {
  const fake = new FakeTwilio();
  let running: RunningService;
  let base: string;
  /** auth-challenge's and user-settings' answers to the call's keys, for this run's tenant: PINs are wrong, the challenge has attempts left. */
  const outcomeRequests: VoiceOutcomeRequest[] = [];
  /** fraud's answers to the fraud code pressed in a call, per challenge: how many reports came. */
  const fraudReports = new Map<string, number>();
  /** Users and challenges whose PIN check and answer find user-settings and auth-challenge restarting: the requests each got. */
  const restarting = new Map<string, number>();
  /** Users whose PIN is right (without restarting). */
  const rightPins = new Set<string>();
  /**
   * Challenges whose answers auth-challenge records as it does (once per answer id: the same id
   * again gets the same reply), but the reply to the first request is lost as when its Redis
   * connection closes after the script ran: auth-challenge answers `unavailable`. What each counted.
   */
  const losingFirstReply = new Map<string, { attempts: number; status: string; last?: { answerId: string; reply: object }; requests: number }>();
  const responders: Array<{ unsubscribe(): void }> = [];

  before(async () => {
    await fake.start();
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // A Twilio that takes more than a second to answer has timed out (the tests make one).
    running = await startDispatch({ ...fake.env(), REDIS_URL: testEnv.redisUrl, HTTP_PORT: String(port), VOICE_WEBHOOK_BASE_URL: base, TWILIO_TIMEOUT_MS: '1000' });
    outcomes = new StreamReader(Streams.dispatch.name, EventSubjects.allDispatch, (await lastSeq(Streams.dispatch.name)) + 1);
    const respond = (subject: string, answer: (body: { tenantId: string } & Record<string, unknown>) => unknown) =>
      responders.push(
        nats.nc.subscribe(subject, {
          callback: (_error, msg) => {
            const body = msg.json<{ tenantId: string } & Record<string, unknown>>();
            if (body.tenantId === tenantId) msg.respond(JSON.stringify(answer(body)));
          },
        }),
      );
    // user-settings and auth-challenge, restarting for the users and challenges in `restarting`:
    // the first PIN check, and the first two answers, find them unavailable; then the PIN is right
    // and the challenge approved.
    respond(InternalSubjects.pinVerify, (body) => {
      const userId = String(body.userId);
      if (rightPins.has(userId)) return { valid: true, pinSet: true };
      if (!restarting.has(userId)) return { valid: false };
      restarting.set(userId, restarting.get(userId)! + 1);
      return restarting.get(userId)! <= 1 ? { error: { code: 'unavailable', message: 'the event log is unavailable' } } : { valid: true, pinSet: true };
    });
    respond(InternalSubjects.voiceOutcome, (body) => {
      outcomeRequests.push(body as unknown as VoiceOutcomeRequest);
      const challengeId = String(body.challengeId);
      const losing = losingFirstReply.get(challengeId);
      if (losing) {
        losing.requests++;
        const answerId = typeof body.answerId === 'string' ? body.answerId : undefined;
        if (answerId && losing.last?.answerId === answerId) return losing.last.reply;
        if (losing.status !== 'pending') return { error: { code: 'conflict', message: `challenge already completed (${losing.status})` } };
        if (body.approved) losing.status = 'approved';
        else if (++losing.attempts >= 5) losing.status = 'denied';
        const reply = { status: losing.status, ...(body.approved ? {} : { reason: 'invalid_code' }), ...(answerId ? { answerId } : {}) };
        if (answerId) losing.last = { answerId, reply };
        return losing.requests === 1 ? { error: { code: 'unavailable', message: 'challenge store unavailable; try again' } } : reply;
      }
      if (!restarting.has(challengeId)) return { status: 'pending' };
      restarting.set(challengeId, restarting.get(challengeId)! + 1);
      return restarting.get(challengeId)! <= 2 ? { error: { code: 'unavailable', message: 'challenge store unavailable; try again' } } : { status: 'approved' };
    });
    // fraud, restarting: the first two reports of a challenge find it unavailable.
    respond(InternalSubjects.fraudFromCall, (body) => {
      const challengeId = String(body.challengeId);
      const n = (fraudReports.get(challengeId) ?? 0) + 1;
      fraudReports.set(challengeId, n);
      return n <= 2 ? { error: { code: 'unavailable', message: 'the event log is unavailable' } } : { alertId: `alert-${challengeId}`, challengeDenied: true, blocked: true };
    });
  });

  after(async () => {
    for (const responder of responders) responder.unsubscribe();
    await running?.app.close();
    await fake.stop();
  });

  /** A voice challenge in PIN mode, as auth-challenge starts it: its phone sealed under the user's data key. */
  async function requestCallTo(to: string, lifetimeSeconds = 300, fraudCode: string | null = null, ids: { userId?: string; challengeId?: string } = {}) {
    const keys = new UserDataKeys(nats, keyring);
    const user = testUser({ tenantId, userId: ids.userId ?? `voice.${randomUUID()}@contoso.example`, profile: { phoneNumber: to } });
    const now = new Date();
    const challenge = testChallenge(user, {
      method: 'voice',
      startedAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + lifetimeSeconds * 1000).toISOString(),
      ...(ids.challengeId ? { challengeId: ids.challengeId } : {}),
    });
    const key = await keys.getOrCreate(tenantId, user.userId);
    const event = challengeStartedV2(challenge, sealPersonalData(key, { tenantId, userId: user.userId, purpose: 'challenge' }, user.profile));
    event.data.delivery = { channel: 'voice', callerId: '+15005550006', pinMode: true, fraudCode };
    await challengeInRedis(challenge.challengeId);
    await publisher.publish(EventSubjects.challengeStarted('voice'), event);
    return { event, challengeId: challenge.challengeId, expiresAt: Date.parse(challenge.expiresAt) };
  }

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'a call with a wrong PIN at every prompt, the challenge still pending, ends undeliverable at once, recorded once', async () => {
    const keys = ['1111#', '2222#', '3333#'];
    const to = uniquePhone();
    fake.phone(to, { answer: 'answer', presses: keys });
    const { challengeId } = await requestCallTo(to);
    const call = await fake.waitForCall(to);
    assert.equal(call.pressed.length, 3);
    assert.match(call.heard.at(-1) ?? '', /cannot sign you in/);
    assert.equal(call.statusAnswer, 204);
    assert.deepEqual(outcomeRequests.filter((r) => r.challengeId === challengeId).map((r) => r.approved), [false, false, false]);
    // Like a call nobody answered: status answers delivery_failed with the user's other methods, voice is avoided for a while.
    const id = parseChallengeId(challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), 'failed');
    assert.ok(await challenges.hget(RedisKeys.failedMethods(id.tag), 'voice'));
    assert.equal(await challenges.hget(RedisKeys.call(id.tag, id.nonce), 'o'), 'unanswered');
    const failed = await eventually(async () => (await outcomesOf(challengeId)).find((e): e is EventOf<'VoiceCallFailed'> => e.type === 'VoiceCallFailed'), 10_000, 'VoiceCallFailed');
    assert.deepEqual(failed.data.failures, [{ provider: 'twilio', error: 'no right PIN at any prompt', transient: false }]);
    // Twilio posts the last prompt's keys again: the same end, nothing asked or recorded twice.
    const url = `${base}/voice/gather/${encodeURIComponent(challengeId)}?prompt=3`;
    const again = await fake.webhook(url, { CallSid: call.sid, Digits: '3333', FinishedOnKey: '#' });
    assert.equal(again.status, 200);
    assert.match(again.body, /cannot sign you in[\s\S]*<Hangup\/>/);
    assert.equal(outcomeRequests.filter((r) => r.challengeId === challengeId).length, 3);
    assert.deepEqual((await outcomesOf(challengeId)).map((e) => e.type).sort(), ['VoiceCallFailed', 'VoiceCallPlaced']);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'the fraud code pressed while fraud is restarting: the report is sent again until it is taken, and the user hears it was', async () => {
    const to = uniquePhone();
    fake.phone(to, { answer: 'answer', presses: ['0#'] });
    const { challengeId } = await requestCallTo(to, 300, '0');
    const call = await fake.waitForCall(to);
    assert.equal(fraudReports.get(challengeId), 3, 'reported until fraud took it');
    assert.match(call.heard.at(-1) ?? '', /fraud/i);
    const id = parseChallengeId(challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.call(id.tag, id.nonce), 'o'), 'fraud');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'a right PIN entered while user-settings and auth-challenge are restarting: the check and the answer are sent again until taken, and the user is signed in', async () => {
    const to = uniquePhone();
    const userId = `voice.${randomUUID()}@contoso.example`;
    const challengeId = testChallengeId();
    restarting.set(userId, 0);
    restarting.set(challengeId, 0);
    fake.phone(to, { answer: 'answer', presses: ['1234#'] });
    await requestCallTo(to, 300, null, { userId, challengeId });
    const call = await fake.waitForCall(to);
    assert.deepEqual([restarting.get(userId), restarting.get(challengeId)], [2, 3], 'each sent again until taken');
    assert.deepEqual(outcomeRequests.filter((r) => r.challengeId === challengeId).map((r) => r.approved), [true, true, true]);
    assert.match(call.heard.at(-1) ?? '', /successfully verified/);
    const id = parseChallengeId(challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.call(id.tag, id.nonce), 'o'), 'approved');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, "an approval whose reply auth-challenge lost after recording it: sent again under the same answer id, it answers approved and the caller hears it", async () => {
    // The right PIN: the approval's first reply lost; sent again, it finds the challenge approved by this very answer.
    const to = uniquePhone();
    const userId = `voice.${randomUUID()}@contoso.example`;
    const challengeId = testChallengeId();
    rightPins.add(userId);
    losingFirstReply.set(challengeId, { attempts: 0, status: 'pending', requests: 0 });
    fake.phone(to, { answer: 'answer', presses: ['1234#'] });
    await requestCallTo(to, 300, null, { userId, challengeId });
    const call = await fake.waitForCall(to);
    assert.equal(losingFirstReply.get(challengeId)!.requests, 2);
    const sent = outcomeRequests.filter((r) => r.challengeId === challengeId);
    assert.equal(new Set(sent.map((r) => r.answerId)).size, 1, 'the same answer id each time');
    assert.match(call.heard.at(-1) ?? '', /successfully verified/);
    assert.deepEqual(call.webhookStatuses.filter((status) => status !== 200), []);
    const id = parseChallengeId(challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.call(id.tag, id.nonce), 'o'), 'approved');
    assert.equal((await outcomesOf(challengeId)).some((e) => e.type === 'VoiceCallFailed'), false);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, "a wrong PIN whose reply auth-challenge lost after recording it: sent again under the same answer id, counted once, and the caller is asked again", async () => {
    const wrongTo = uniquePhone();
    const wrongId = testChallengeId();
    losingFirstReply.set(wrongId, { attempts: 0, status: 'pending', requests: 0 });
    fake.phone(wrongTo, { answer: 'answer', presses: ['1111#', '2222#', '3333#'] });
    await requestCallTo(wrongTo, 300, null, { challengeId: wrongId });
    const wrongCall = await fake.waitForCall(wrongTo);
    assert.equal(wrongCall.pressed.length, 3, 'asked again after the first wrong PIN');
    assert.equal(losingFirstReply.get(wrongId)!.attempts, 3, 'one attempt per prompt');
    assert.deepEqual(outcomeRequests.filter((r) => r.challengeId === wrongId).map((r) => r.answerId?.split(':').at(-1)), ['1', '1', '2', '3']);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'Twilio answering 503 to every attempt: VoiceCallFailed after VOICE_CALL_ATTEMPTS (3), and the status says delivery_failed at once, not at expiry', async () => {
    const to = uniquePhone();
    fake.phone(to, { answer: 'hold' });
    fake.failNext({ status: 503 }, { status: 503 }, { status: 503 });
    const started = Date.now();
    const { challengeId, expiresAt } = await requestCallTo(to);
    const { event } = await outcomeOf(challengeId);
    assert.equal(event.type, 'VoiceCallFailed');
    const failed = event as EventOf<'VoiceCallFailed'>;
    assert.equal(failed.data.attempts, 3);
    assert.deepEqual(failed.data.failures.map((f) => [f.provider, f.transient]), [['twilio', true], ['twilio', true], ['twilio', true]]);
    assert.match(failed.data.failures[0]!.error, /Twilio 503/);
    assert.ok(Date.now() - started < 10_000 && Date.now() < expiresAt - 250_000, 'within seconds, long before the challenge expires');
    const id = parseChallengeId(challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), 'failed');
    assert.ok(await challenges.hget(RedisKeys.failedMethods(id.tag), 'voice'), 'voice avoided for the user for a while');
    assert.equal(fake.calls.filter((c) => c.to === to).length, 0);
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'Twilio taking the call request and answering too late: not placed again (no second ring), VoiceCallFailed at once', async () => {
    const to = uniquePhone();
    fake.phone(to, { answer: 'hold' });
    fake.delayMs = 1_500;
    try {
      const { challengeId } = await requestCallTo(to);
      const { event } = await outcomeOf(challengeId);
      assert.equal(event.type, 'VoiceCallFailed');
      assert.match((event as EventOf<'VoiceCallFailed'>).data.failures[0]!.error, /did not answer within 1000 ms: Twilio may have placed the call: not placed again/);
      const id = parseChallengeId(challengeId)!;
      assert.equal(await challenges.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), 'failed');
      // The late answer placed the call at Twilio: it rings once, and nothing places it again.
      await eventually(async () => (fake.calls.some((c) => c.to === to) ? true : undefined), 5_000, 'the call Twilio placed late');
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(fake.calls.filter((c) => c.to === to).length, 1);
      assert.deepEqual((await outcomesOf(challengeId)).map((e) => e.type), ['VoiceCallFailed']);
    } finally {
      fake.delayMs = 0;
    }
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'a call request delivered again after its challenge expired finds the call placed: no second call, and voice not marked failed', async () => {
    const to = uniquePhone();
    fake.phone(to, { answer: 'hold' });
    const acksBefore = await acknowledged(Consumers.dispatchVoice.durable);
    const { event, challengeId, expiresAt } = await requestCallTo(to, 2);
    assert.equal((await outcomeOf(challengeId)).event.type, 'VoiceCallPlaced');
    await new Promise((r) => setTimeout(r, expiresAt - Date.now() + 100));
    await nats.js.publish(EventSubjects.challengeStarted('voice'), JSON.stringify(event), { msgID: randomUUID() });
    await eventually(async () => ((await acknowledged(Consumers.dispatchVoice.durable)) >= acksBefore + 2 ? true : undefined), 20_000, 'both requests handled');
    assert.equal(fake.calls.filter((c) => c.to === to).length, 1);
    const id = parseChallengeId(challengeId)!;
    assert.equal(await challenges.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), null);
    assert.equal(await challenges.hget(RedisKeys.failedMethods(id.tag), 'voice'), null);
    assert.deepEqual((await outcomesOf(challengeId)).map((e) => e.type), ['VoiceCallPlaced']);
  });
});

describe('dispatch with SMPP', () => {
  const smsc = new FakeSmsc();
  let running: RunningService;
  let redis: Redis;

  before(async () => {
    await smsc.start();
    redis = new Redis(testEnv.redisUrl);
    running = await startDispatch({ ...smsc.env(), REDIS_URL: testEnv.redisUrl });
    outcomes = new StreamReader(Streams.dispatch.name, EventSubjects.allDispatch, (await lastSeq(Streams.dispatch.name)) + 1);
    // /health is ready without the bind (it is informational); the sends below want it.
    await eventually(async () => ((await (await fetch(`${running.url}/health`)).json()) as { checks: Record<string, string> }).checks.smpp === 'ok' || undefined, 10_000, 'the SMPP session bound');
  });

  after(async () => {
    await running?.app.close();
    redis?.disconnect();
    await smsc.stop();
  });

  const receiptsOf = async (challengeId: string) => (await outcomesOf(challengeId)).filter((e): e is EventOf<'SmsDeliveryReported'> => e.type === 'SmsDeliveryReported');

  itWith({ real: ['nats', 'redis'], fake: ['smsc'] }, 'sends the code over SMPP, records SmsSent with the SMSC message id, and its receipt once as delivered', async () => {
    const to = uniquePhone();
    const { challengeId, code } = await requestSms({ to });
    const sms = await smsc.waitFor((m) => m.destinationAddr === to.slice(1));
    assert.equal(FakeSmsc.codeOf(sms), code);
    assert.equal(sms.sourceAddr, '15005550006');
    // The receipt may be recorded first: the SMSC sends it at once, and the route is written before SmsSent.
    const event = await eventually(async () => (await outcomesOf(challengeId)).find((e) => e.type === 'SmsSent'), 20_000, 'SmsSent');
    assert.deepEqual((event as EventOf<'SmsSent'>).data, { challengeId, provider: 'smpp', providerMessageId: sms.messageId, attempts: 1 });

    const [receipt] = await eventually(async () => ((await receiptsOf(challengeId)).length > 0 ? receiptsOf(challengeId) : undefined), 10_000, 'the receipt');
    assert.equal(receipt?.tenantId, tenantId);
    assert.deepEqual(receipt?.data, { challengeId, provider: 'smpp', providerMessageId: sms.messageId, status: 'delivered' });
    // The SMSC sends it again (it missed our answer): acknowledged, stored once.
    assert.equal(await smsc.sendReceipt(sms, { state: 'DELIVRD' }), 0);
    assert.equal((await receiptsOf(challengeId)).length, 1);
  });

  itWith({ real: ['nats', 'redis'], fake: ['smsc'] }, "an undelivered receipt records the SMSC's error and marks the challenge's SMS failed", async () => {
    const to = uniquePhone();
    smsc.receiptFor(to, { state: 'UNDELIV', err: '001' });
    // requestSms leaves the challenge in Redis as auth-challenge does, so the failure can be written on it.
    const { challengeId } = await requestSms({ to });
    const id = parseChallengeId(challengeId)!;
    const [receipt] = await eventually(async () => ((await receiptsOf(challengeId)).length > 0 ? receiptsOf(challengeId) : undefined), 10_000, 'the receipt');
    assert.deepEqual(receipt?.data, { challengeId, provider: 'smpp', providerMessageId: smsc.messagesTo(to)[0]!.messageId, status: 'undelivered', errorCode: '001' });
    assert.equal(await redis.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), 'failed');
    assert.ok(await redis.hget(RedisKeys.failedMethods(id.tag), 'sms'));
  });

  itWith({ real: ['nats', 'redis'], fake: ['smsc'] }, 'a receipt of a message it never sent is acknowledged and records nothing', async () => {
    const unmatched = async () => (await registry.getSingleMetric('mfa_sms_receipts_total')?.get())?.values.find((v) => v.labels.provider === 'smpp' && v.labels.status === 'unmatched')?.value ?? 0;
    const before = await unmatched();
    const stranger = { ...smsc.messages[0]!, messageId: `never-sent-${randomUUID()}` };
    assert.equal(await smsc.sendReceipt(stranger, { state: 'DELIVRD' }), 0);
    assert.equal(await unmatched(), before + 1);
    await outcomes.poll();
    assert.ok(!outcomes.seen.some((m) => new TextDecoder().decode(m.data).includes(stranger.messageId)));
  });

  const receiptsCounted = async (status: string) =>
    (await registry.getSingleMetric('mfa_sms_receipts_total')?.get())?.values.find((v) => v.labels.provider === 'smpp' && v.labels.status === status)?.value ?? 0;

  itWith({ real: ['nats', 'redis'], fake: ['smsc'] }, "an SMSC that gives one message id to SMS of two tenants: the first SMS's late receipt is not recorded for the other tenant's challenge", async () => {
    const reused = `reused-${randomUUID()}`;
    // A short counter that wrapped, or one reset when the SMSC restarted.
    smsc.nextMessageIds(reused, reused);
    const other = uniqueTenant('dispatch-other');
    const firstTo = uniquePhone();
    const secondTo = uniquePhone();
    const first = await requestSms({ to: firstTo });
    const [delivered] = await eventually(async () => ((await receiptsOf(first.challengeId)).length > 0 ? receiptsOf(first.challengeId) : undefined), 10_000, 'the first receipt');
    assert.deepEqual(delivered?.data, { challengeId: first.challengeId, provider: 'smpp', providerMessageId: reused, status: 'delivered' }, 'recorded while the id named one SMS');
    const ambiguous = await receiptsCounted('ambiguous');
    // The SMSC fails the second SMS at once: its receipt comes with the submit_sm_resp, before any later read.
    smsc.receiptFor(secondTo, { state: 'UNDELIV', err: '001' });
    const second = await requestSms({ to: secondTo, tenant: other });
    // Whichever tenant an event names: a receipt recorded under the wrong one must show too.
    const eventsOf = async (challengeId: string) => {
      await outcomes.poll();
      return outcomes.seen.map((m) => parseEvent(JSON.parse(new TextDecoder().decode(m.data)))).filter((e) => e.aggregateId === challengeId);
    };
    await eventually(async () => ((await eventsOf(second.challengeId)).some((e) => e.type === 'SmsSent' && e.tenantId === other) ? true : undefined), 20_000, 'the second SMS sent');
    await eventually(async () => (smsc.receiptAnswers.filter((a) => a.messageId === reused).length >= 2 ? true : undefined), 10_000, "the second SMS's receipt answered");
    // The first SMS's receipt again (the SMSC missed our answer), late.
    assert.equal(await smsc.sendReceipt(smsc.messagesTo(firstTo)[0]!, { state: 'DELIVRD' }), 0);
    const reported = async (challengeId: string) => (await eventsOf(challengeId)).filter((e) => e.type === 'SmsDeliveryReported').map((e) => `${e.tenantId} ${(e as EventOf<'SmsDeliveryReported'>).data.status}`);
    assert.deepEqual(await reported(second.challengeId), [], "a receipt naming the id is recorded for neither: it may be the first SMS's");
    assert.deepEqual(await reported(first.challengeId), [`${tenantId} delivered`]);
    assert.equal(await receiptsCounted('ambiguous'), ambiguous + 2);
    const id = parseChallengeId(second.challengeId)!;
    assert.equal(await redis.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), null, "the other tenant's SMS failed by the first SMS's receipt");
    assert.equal(await redis.hget(RedisKeys.failedMethods(id.tag), 'sms'), null);
  });

  itWith({ real: ['nats', 'redis'], fake: ['smsc'] }, 'a late receipt of an earlier SMS under the same id (its record expired), by its submit date, is not recorded for the SMS the id names now', async () => {
    const to = uniquePhone();
    const { challengeId } = await requestSms({ to });
    await eventually(async () => ((await receiptsOf(challengeId)).length > 0 ? true : undefined), 10_000, 'its own receipt');
    const mismatched = await receiptsCounted('mismatched');
    // The SMSC took the earlier SMS with this id 30 hours ago: no time zone makes that now.
    const sms = smsc.messagesTo(to)[0]!;
    assert.equal(await smsc.sendReceipt({ ...sms, receivedAt: new Date(Date.now() - 30 * 3600_000) }, { state: 'UNDELIV', err: '001' }), 0);
    assert.deepEqual((await receiptsOf(challengeId)).map((r) => r.data.status), ['delivered']);
    assert.equal(await receiptsCounted('mismatched'), mismatched + 1);
    const id = parseChallengeId(challengeId)!;
    assert.equal(await redis.hget(RedisKeys.challenge(id.tag, id.nonce), 'delivery'), null);
  });

  itWith({ real: ['nats', 'redis'], fake: ['smsc'] }, 'shows the bind in /health and /metrics', async () => {
    const health = await fetch(`${running.url}/health`);
    assert.deepEqual(await health.json(), { status: 'ok', checks: { nats: 'ok', redis: 'ok', sms_providers: 'ok', smpp: 'ok' } });
    const metrics = await (await fetch(`${running.url}/metrics`)).text();
    assert.match(metrics, /mfa_smpp_bound\{[^}]*\} 1/);
    assert.match(metrics, /mfa_smpp_binds_total\{[^}]*outcome="bound"[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_sms_receipts_total\{[^}]*provider="smpp"[^}]*status="delivered"[^}]*\} [1-9]/);
  });
});
