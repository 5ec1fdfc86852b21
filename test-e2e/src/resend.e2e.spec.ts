import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { Subjects, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeTwilio, itWith, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string; retryAfterSeconds?: number } };

const randomPhone = () => `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/**
 * challenge.resend through the whole stack: SMS_PROVIDERS is twilio (the fake, Twilio's REST API)
 * then console (its messages read from dispatch's output), so each resend shows which provider it
 * went through: the one after the provider that sent last, in turn. No interval between resends
 * (SMS_RESEND_MIN_INTERVAL_SECONDS=0: the interval is an integration test's, with its own clock),
 * and at most 5 sends to one number per hour across users.
 */
describe('end to end: resending an SMS code', () => {
  const twilio = new FakeTwilio();
  const consoleSms: Array<{ to: string; body: string }> = [];
  let stack: Stack;
  let nc: NatsConnection;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    await twilio.start();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'reporting'],
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        ...twilio.env(),
        SMS_PROVIDERS: 'twilio,console',
        PHONE_MAX_SENDS_PER_WINDOW: '5',
        PHONE_SEND_WINDOW_SECONDS: '3600',
      },
      serviceEnv: { 'auth-challenge': { SMS_RESEND_MIN_INTERVAL_SECONDS: '0' }, dispatch: { LOG_LEVEL: 'info' } },
      onLine: (service, line) => {
        if (service === 'dispatch' && line.includes('console SMS (development only)')) {
          const { to, body } = JSON.parse(line) as { to: string; body: string };
          consoleSms.push({ to, body });
        }
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-resend' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await twilio.stop();
  });

  const tenantWith = async (prefix: string, phones: string[]) => {
    const tenantId = uniqueTenant(prefix);
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const users: string[] = [];
    for (const phoneNumber of phones) {
      const userId = uniqueUser(prefix);
      assert.deepEqual(await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber }), { userId, methods: ['sms', 'voice'] });
      users.push(userId);
    }
    return { tenantId, users };
  };
  const startSms = (tenantId: string, userId: string) =>
    eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the tenant and user known');

  /** Every message to `to` once there are more than `seen`: through Twilio first, then through the console. */
  const nextSms = async (to: string, seen: number) => {
    const all = () => [
      ...twilio.messagesTo(to).map((m) => ({ provider: 'twilio', body: m.body })),
      ...consoleSms.filter((m) => m.to === to).map((m) => ({ provider: 'console', body: m.body })),
    ];
    const messages = await eventually(async () => (all().length > seen ? all() : undefined), 20_000, `SMS number ${seen + 1} to ${to}`);
    assert.equal(messages.length, seen + 1, 'one SMS per send');
    return messages;
  };
  const codeOf = (body: string) => /^(\d{6}) /.exec(body)?.[1];

  itWith({ real: wholeStack, fake: ['twilio'] }, 'sends the same code again through the next provider in turn, up to 5 sends; the code is accepted once; the report counts the resends', async () => {
    const phone = randomPhone();
    const { tenantId, users: [userId] } = await tenantWith('resend', [phone]);
    const start = await startSms(tenantId, userId!);
    const challengeId = String(start.challengeId);
    const [first] = await nextSms(phone, 0);
    assert.equal(first!.provider, 'twilio');
    const code = codeOf(first!.body);
    assert.match(code ?? '', /^\d{6}$/);

    const providers = ['twilio'];
    for (let resend = 1; resend <= 4; resend++) {
      const throughTwilio = twilio.messagesTo(phone).length;
      assert.deepEqual(await ask(Subjects.challengeResend, { tenantId, challengeId }), { challengeId, status: 'pending', resendsRemaining: 4 - resend });
      const messages = await nextSms(phone, resend);
      providers.push(twilio.messagesTo(phone).length > throughTwilio ? 'twilio' : 'console');
      assert.ok(messages.every((m) => codeOf(m.body) === code), 'the same code every time');
    }
    assert.deepEqual(providers, ['twilio', 'console', 'twilio', 'console', 'twilio'], 'the provider after the one that sent last, wrapping round');

    // A sixth send of this challenge: waiting does not help, a new start would.
    const sixth = await ask(Subjects.challengeResend, { tenantId, challengeId });
    assert.equal(sixth.error?.code, 'rate_limited');
    assert.equal(sixth.error?.retryAfterSeconds, undefined);
    assert.match(sixth.error!.message, /sent 5 times already/);

    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId, challengeId, code }), { challengeId, status: 'approved' });
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId, code })).error?.code, 'conflict', 'single use');
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId })).error?.code, 'conflict', 'nothing to resend once decided');

    // The resends counted against the user's and the number's limits: no sixth code for a new start either.
    const next = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' });
    assert.equal(next.error?.code, 'rate_limited');
    assert.ok((next.error?.retryAfterSeconds ?? 0) > 0);
    assert.match(next.error!.message, /too many codes sent to this user/);

    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 5 })) as Reply & { items?: SigninItem[] };
      const item = report.items?.find((i) => i.challengeId === challengeId);
      return item?.result === 'success' && item.resends === 4 && item.delivery?.provider === 'twilio' ? item : undefined;
    }, 20_000, 'the approved sign-in with its resends in the report');
    assert.deepEqual([row.authMethod, row.resultDetail, row.delivery], ['sms', 'MFA successfully completed', { status: 'sent', provider: 'twilio', error: null }]);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'resends count against the phone number across its users: once it has had its 5 codes, no user of it gets another', async () => {
    const phone = randomPhone();
    const { tenantId, users: [a, b] } = await tenantWith('resend-number', [phone, phone]);
    const challengeA = String((await startSms(tenantId, a!)).challengeId);
    await nextSms(phone, 0);
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId: challengeA })).status, 'pending');
    await nextSms(phone, 1);
    const challengeB = String((await startSms(tenantId, b!)).challengeId);
    await nextSms(phone, 2);
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId: challengeB })).status, 'pending');
    await nextSms(phone, 3);
    // The fifth code to the number fills its window.
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId: challengeA })).status, 'pending');
    await nextSms(phone, 4);
    const refused = await ask(Subjects.challengeResend, { tenantId, challengeId: challengeB });
    assert.equal(refused.error?.code, 'rate_limited');
    assert.match(refused.error!.message, /phone number/);
    assert.ok((refused.error?.retryAfterSeconds ?? 0) > 3000, String(refused.error?.retryAfterSeconds));
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'refuses bad input, unknown tenants, another tenant\'s challenge and challenges that are not SMS, sending nothing', async () => {
    const phone = randomPhone();
    const { tenantId, users: [userId] } = await tenantWith('resend-bad', [phone]);
    const challengeId = String((await startSms(tenantId, userId!)).challengeId);
    await nextSms(phone, 0);
    const other = await tenantWith('resend-other', []);
    const raw = async (body: string) => (await nc.request(Subjects.challengeResend, body, { timeout: 10_000 })).json<Reply>().error?.code;
    assert.equal(await raw('{"tenantId": '), 'invalid_request', 'malformed JSON');
    assert.equal(await raw('[]'), 'invalid_request', 'not an object');
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId: 42 })).error?.code, 'invalid_request', 'a number for an id');
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId: [challengeId] })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.challengeResend, { tenantId: 'no such tenant!', challengeId })).error?.code, 'invalid_request', 'not a tenant id');
    assert.equal((await ask(Subjects.challengeResend, { tenantId })).error?.code, 'invalid_request', 'no challenge');
    assert.equal((await ask(Subjects.challengeResend, { tenantId: uniqueTenant('never-created'), challengeId })).error?.code, 'not_found', 'an unknown tenant');
    assert.equal((await ask(Subjects.challengeResend, { tenantId: other.tenantId, challengeId })).error?.code, 'not_found', "another tenant's challenge");
    assert.equal((await ask(Subjects.challengeResend, { tenantId, challengeId: `${challengeId.slice(0, -4)}AAAA` })).error?.code, 'not_found', 'an unknown challenge');
    // A call is answered on the phone: there is no code to send again.
    const voice = await ask(Subjects.challengeStart, { tenantId, userId, method: 'voice' });
    assert.equal(voice.status, 'pending');
    const notSms = await ask(Subjects.challengeResend, { tenantId, challengeId: voice.challengeId });
    assert.equal(notSms.error?.code, 'conflict');
    assert.match(notSms.error!.message, /only an SMS challenge/);
    // The SMS challenge itself was never resent by any of these.
    assert.deepEqual(await ask(Subjects.challengeResend, { tenantId, challengeId }), { challengeId, status: 'pending', resendsRemaining: 3 });
    const messages = await nextSms(phone, 1);
    assert.equal(codeOf(messages[1]!.body), codeOf(messages[0]!.body));
  });
});
