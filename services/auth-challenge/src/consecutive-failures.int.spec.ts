import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Subjects } from '@mfa/contracts';
import { hotp, loadKeyring, totpStep, userTag } from '@mfa/crypto';
import { requestJson } from '@mfa/messaging';
import { RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { eventually, itWith, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';
import { boot } from './boot.js';
import { smsCodeFromLog } from './sms-code.spec-support.js';
import { loadAuthChallengeConfig } from './config.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

// A small cap and a window threshold that is never reached, so that only the cap acts.
describe('auth-challenge: the cap on consecutive wrong codes (MFA_MAX_CONSECUTIVE_FAILURES=3)', () => {
  const { keyring } = loadKeyring({});
  const tenant = uniqueTenant();
  let service: Awaited<ReturnType<typeof boot>>;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let redis: Redis;
  let writer: UserProjectionWriter;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 5000 });

  before(async () => {
    const env = { ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test', MFA_MAX_CONSECUTIVE_FAILURES: '3' };
    service = await boot(loadAuthChallengeConfig(env));
    nc = await connect({ servers: testEnv.natsUrl });
    jsm = await jetstreamManager(nc);
    redis = new Redis(testEnv.redisUrl);
    writer = new UserProjectionWriter(redis, keyring);
    // Users are seeded straight into Redis here, with no user-settings to rebuild the projection:
    // declare it complete, so a user missing is absent rather than not rebuilt yet.
    await writer.markComplete();
  });

  after(async () => {
    await service.stop();
    await nc.drain();
    await redis.quit();
  });

  async function projectUser(userId: string, secret: Buffer) {
    await writer.apply({
      tenantId: tenant,
      userId,
      seq: 1,
      phoneNumber: '+14155550120',
      methods: ['totp', 'sms'],
      defaultMethod: 'totp',
      totpTokens: [{ tokenId: 'app', secret, digits: 6, period: 30, activatedStep: 0 }],
    });
    return userTag(keyring, tenant, userId);
  }

  const smsCodeOf = (challengeId: string) => smsCodeFromLog(jsm, keyring, challengeId);

  const wrongFor = (code: string) => String((Number(code) + 500_000) % 1_000_000).padStart(6, '0');
  const verify = (challengeId: unknown, code: string) => ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code });
  const adminUnlockRequired = (reply: Reply) => {
    assert.equal(reply.error?.code, 'rate_limited');
    assert.match(reply.error?.message ?? '', /administrator must unlock/);
  };

  itWith({ real: ['nats', 'redis'] }, 'counts wrong SMS and TOTP codes in a row; at the cap the user stays locked after the window expires, until the key is deleted', async () => {
    const secret = randomBytes(20);
    const user = uniqueUser();
    const tag = await projectUser(user, secret);
    const consecutive = () => redis.get(RedisKeys.consecutiveFailures(tag));

    const totp = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    assert.equal((await verify(totp.challengeId, wrongFor(hotp(secret, totpStep(Date.now()))))).reason, 'invalid_code');
    assert.equal(await consecutive(), '1');
    const sms = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const smsCode = await smsCodeOf(String(sms.challengeId));
    assert.equal((await verify(sms.challengeId, wrongFor(smsCode))).reason, 'invalid_code');
    assert.equal((await verify(sms.challengeId, wrongFor(smsCode))).reason, 'invalid_code', 'the wrong code that reaches the cap is answered as usual');
    assert.equal(await consecutive(), '3');

    // At the cap: no code is compared, no challenge starts, the challenge itself is unchanged.
    adminUnlockRequired(await verify(sms.challengeId, smsCode));
    adminUnlockRequired(await verify(totp.challengeId, hotp(secret, totpStep(Date.now()))));
    adminUnlockRequired(await ask(Subjects.challengeStart, { tenantId: tenant, userId: user }));
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: sms.challengeId }), { challengeId: sms.challengeId, status: 'pending' });
    assert.equal(await consecutive(), '3', 'refused attempts are not counted');

    // The window counter expires; the cap does not (it has no TTL).
    assert.equal(await redis.ttl(RedisKeys.consecutiveFailures(tag)), -1);
    assert.equal(await redis.get(RedisKeys.failures(tag)), '3');
    await redis.pexpire(RedisKeys.failures(tag), 1);
    await eventually(async () => (await redis.exists(RedisKeys.failures(tag))) === 0 || undefined, 2000, 'the window to expire');
    adminUnlockRequired(await ask(Subjects.challengeStart, { tenantId: tenant, userId: user }));
    adminUnlockRequired(await verify(sms.challengeId, smsCode));

    // What users.unblock does: delete both counters. The pending challenge works again.
    await redis.del(RedisKeys.failures(tag), RedisKeys.consecutiveFailures(tag));
    assert.deepEqual(await verify(sms.challengeId, smsCode), { challengeId: sms.challengeId, status: 'approved' });
    assert.equal(await redis.exists(RedisKeys.consecutiveFailures(tag)), 0);
  });

  itWith({ real: ['nats', 'redis'] }, 'a success resets the count, so only failures in a row reach the cap', async () => {
    const secret = randomBytes(20);
    const user = uniqueUser();
    const tag = await projectUser(user, secret);
    for (let round = 0; round < 2; round++) {
      const c = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
      const code = hotp(secret, totpStep(Date.now()) + round);
      assert.equal((await verify(c.challengeId, wrongFor(code))).reason, 'invalid_code');
      assert.equal((await verify(c.challengeId, wrongFor(code))).reason, 'invalid_code');
      assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '2');
      assert.equal((await verify(c.challengeId, code)).status, 'approved');
      assert.equal(await redis.exists(RedisKeys.consecutiveFailures(tag)), 0);
    }
  });
});
