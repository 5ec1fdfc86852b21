import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { Subjects } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeTwilio, itWith, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string; retryAfterSeconds?: number } };

const randomPhone = () => `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;

/**
 * Throttles across users through the whole stack: per phone number (dispatch counts the sends,
 * the start script refuses further starts of every user of the number) and per client IP (fraud
 * counts the starts that send something, auth-challenge refuses more from the address), each
 * answered rate_limited with the time to wait.
 */
describe('end to end: throttles across users', () => {
  const twilio = new FakeTwilio();
  let stack: Stack;
  let nc: NatsConnection;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    await twilio.start();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'fraud'],
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        PHONE_MAX_SENDS_PER_WINDOW: '3',
        PHONE_SEND_WINDOW_SECONDS: '3600',
        IP_MAX_STARTS_PER_WINDOW: '4',
        IP_START_WINDOW_SECONDS: '300',
        ...twilio.env(),
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-throttling' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await twilio.stop();
  });

  const tenantWithUsers = async (prefix: string, phones: string[]) => {
    const tenantId = uniqueTenant(prefix);
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const users: string[] = [];
    for (const phoneNumber of phones) {
      const userId = uniqueUser(prefix);
      assert.deepEqual(await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber }), { userId, methods: ['sms', 'voice'] });
      users.push(userId);
    }
    // The tenant and its users reach auth-challenge through their projections.
    await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId, userId: users[0], method: 'totp' })).status ? true : undefined), 10_000, 'the tenant known');
    return { tenantId, users };
  };
  const sentTo = (phone: string) => twilio.messages.filter((m) => m.to === phone).length;

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['twilio'] }, 'a phone number shared by users takes 3 codes an hour: then every user of it answers rate_limited, and nothing more is sent to it', async () => {
    const shared = randomPhone();
    const own = randomPhone();
    const { tenantId, users } = await tenantWithUsers('phone', [shared, shared, own]);
    const [alice, bob, carol] = users as [string, string, string];
    for (const userId of [alice, alice, bob]) {
      assert.equal((await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: '203.0.113.50' })).status, 'pending');
    }
    await eventually(async () => (sentTo(shared) === 3 ? true : undefined), 20_000, 'three codes sent to the shared number');
    for (const userId of [alice, bob]) {
      const refused = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' });
      assert.equal(refused.error?.code, 'rate_limited', JSON.stringify(refused));
      assert.match(refused.error!.message, /phone number; try again in \d+ s/);
      assert.ok(refused.error!.retryAfterSeconds! > 3500 && refused.error!.retryAfterSeconds! <= 3600, String(refused.error!.retryAfterSeconds));
    }
    // Another number of the same tenant is not concerned.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: carol, method: 'sms' })).status, 'pending');
    await eventually(async () => (sentTo(own) === 1 ? true : undefined), 20_000, 'the other number served');
    // A user who takes the number afterwards starts (nothing told their slot yet), but dispatch sends nothing:
    // the IdP learns it from status, with the user's other methods (none here).
    const dave = uniqueUser('phone');
    await ask(Subjects.usersRegister, { tenantId, userId: dave, phoneNumber: shared });
    const late = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: dave, method: 'sms' });
      return reply.status === 'pending' || reply.error?.code === 'rate_limited' ? reply : undefined;
    }, 10_000, 'the new user projected');
    if (late.status === 'pending') {
      const status = await eventually(async () => {
        const reply = await ask(Subjects.challengeStatus, { tenantId, challengeId: late.challengeId });
        return reply.status === 'denied' ? reply : undefined;
      }, 20_000, 'the refused delivery in the status');
      assert.deepEqual(status, { challengeId: late.challengeId, status: 'denied', reason: 'delivery_failed', fallbackMethods: ['voice'] });
    }
    assert.equal(sentTo(shared), 3, 'never a fourth code to the number');
  });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['twilio'] }, 'a client IP sending 4 codes for different users in 5 minutes is throttled, other addresses and other tenants go on', async () => {
    const { tenantId, users } = await tenantWithUsers('ip', Array.from({ length: 8 }, randomPhone));
    const ip = '198.51.100.99';
    for (const userId of users.slice(0, 4)) {
      assert.equal((await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: ip })).status, 'pending');
    }
    // fraud counts the starts from the challenge stream; every auth-challenge learns the throttle within moments.
    const refused = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: users[4], method: 'sms', clientIp: ip });
      return reply.error ? reply : undefined;
    }, 10_000, 'the address throttled');
    assert.equal(refused.error?.code, 'rate_limited');
    assert.match(refused.error!.message, /from this client IP; try again in \d+ s/);
    assert.ok(refused.error!.retryAfterSeconds! > 250 && refused.error!.retryAfterSeconds! <= 300, String(refused.error!.retryAfterSeconds));
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: users[5], method: 'sms', clientIp: '198.51.100.100' })).status, 'pending');
    // Another tenant's sign-ins from the same address are counted apart.
    const other = await tenantWithUsers('ip-other', [randomPhone()]);
    assert.equal((await ask(Subjects.challengeStart, { tenantId: other.tenantId, userId: other.users[0], method: 'sms', clientIp: ip })).status, 'pending');
  });
});
