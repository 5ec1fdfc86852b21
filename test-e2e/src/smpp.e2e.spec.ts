import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { ResultDetail, Subjects, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeSmsc, itWith, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

const randomPhone = () => `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/**
 * SMS sign-ins through the whole stack with SMS_PROVIDERS=smpp: dispatch binds to an SMSC that
 * speaks SMPP v3.4 (libs/testing's FakeSmsc), submits each code, and the SMSC's deliver_sm
 * receipts end in the sign-in report and, when undelivered, in challenge.status.
 */
describe('end to end: SMS over SMPP', () => {
  const smsc = new FakeSmsc();
  let stack: Stack;
  let nc: NatsConnection;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    await smsc.start();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'reporting'],
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        ...smsc.env('Contoso'),
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-smpp' });
    // /health is ready before the bind (the SMPP check is informational); a send waits for a bind
    // under way, but the test should not depend on that.
    await eventually(async () => {
      const health = (await (await fetch(`${stack.url('dispatch')}/health`)).json()) as { checks: Record<string, string> };
      return health.checks.smpp === 'ok' ? true : undefined;
    }, 20_000, 'dispatch bound to the SMSC');
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await smsc.stop();
  });

  const userWithPhone = async () => {
    const tenantId = uniqueTenant('smpp');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('texted');
    const phone = randomPhone();
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: phone }), { userId, methods: ['sms', 'voice'] });
    return { tenantId, userId, phone };
  };
  const startSms = (tenantId: string, userId: string) =>
    eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: '203.0.113.90' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the tenant and user known');
  const reportRow = (tenantId: string, userId: string, challengeId: unknown, ready: (item: SigninItem) => boolean) =>
    eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 5 })) as Reply & { items?: SigninItem[] };
      const item = report.items?.find((i) => i.challengeId === challengeId);
      return item && ready(item) ? item : undefined;
    }, 20_000, 'the sign-in in the report');

  itWith({ real: wholeStack, fake: ['smsc'] }, 'the user types the code the SMSC got; the receipt shows the SMS delivered by smpp in the report', async () => {
    const { tenantId, userId, phone } = await userWithPhone();
    const start = await startSms(tenantId, userId);
    const sms = await smsc.waitFor((m) => m.destinationAddr === phone.slice(1));
    assert.equal(sms.sourceAddr, 'Contoso', 'SMPP_SOURCE_ADDR, an alphanumeric sender');
    assert.equal(sms.sourceAddrTon, 5);
    assert.match(sms.text, /^\d{6} is your verification code\./);
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: FakeSmsc.codeOf(sms) }), { challengeId: start.challengeId, status: 'approved' });
    const row = await reportRow(tenantId, userId, start.challengeId, (i) => i.delivery?.status === 'delivered');
    assert.deepEqual(row.delivery, { status: 'delivered', provider: 'smpp', error: null });
    assert.equal(row.result, 'success');
    assert.equal(row.resultDetail, ResultDetail.success);
  });

  itWith({ real: wholeStack, fake: ['smsc'] }, "an undelivered receipt: challenge.status says delivery_failed at once, with the user's other method", async () => {
    const { tenantId, userId, phone } = await userWithPhone();
    smsc.receiptFor(phone, { state: 'UNDELIV', err: '001' });
    const start = await startSms(tenantId, userId);
    const status = await eventually(async () => {
      const reply = await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId });
      return reply.status !== 'pending' ? reply : undefined;
    }, 20_000, 'the undelivered SMS in the status');
    assert.deepEqual(status, { challengeId: start.challengeId, status: 'denied', reason: 'delivery_failed', fallbackMethods: ['voice'] });
    assert.equal(smsc.messagesTo(phone).length, 1, 'sent once');
    // (The report lists this sign-in only a minute after its expiry, as it never ends: the receipt's
    // SmsDeliveryReported, error code included, is checked in dispatch's integration test.)
  });
});
