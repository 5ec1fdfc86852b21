import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Streams, Subjects } from '@mfa/contracts';
import { formatWrappedDataKey, loadKeyring, totp, userTag } from '@mfa/crypto';
import { registry } from '@mfa/telemetry';
import { UserDataKeys } from '@mfa/service-kit';
import { ensureStream, requestJson } from '@mfa/messaging';
import { RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { itWith, testEnv, uniqueTenant } from '@mfa/testing';
import { boot } from './boot.js';
import { smsCodeFromLog } from './sms-code.spec-support.js';
import { loadAuthChallengeConfig } from './config.js';
import { ChallengeService } from './application/challenge.service.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

/**
 * The same user id in two tenants is two users: another tenant's requests naming a challenge find
 * nothing and count nothing against its user (attempts, lockout), and one tenant's user locked
 * out, or having spent a TOTP code, leaves the namesake in the other tenant as they were.
 */
describe('auth-challenge: tenant isolation against real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  let service: Awaited<ReturnType<typeof boot>>;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let redis: Redis;
  let writer: UserProjectionWriter;
  let seq = 1;
  const tenantA = uniqueTenant('ac-iso-a');
  const tenantB = uniqueTenant('ac-iso-b');
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 5000 });

  before(async () => {
    service = await boot(loadAuthChallengeConfig({ ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' }));
    nc = await connect({ servers: testEnv.natsUrl });
    jsm = await jetstreamManager(nc);
    redis = new Redis(testEnv.redisUrl);
    writer = new UserProjectionWriter(redis, keyring);
    // Users are seeded straight into Redis (no user-settings): a user missing is absent.
    await writer.markComplete();
    await ensureStream(jsm, Streams.userKeys);
  });

  after(async () => {
    await service.stop();
    await nc.drain();
    await redis.quit();
  });

  async function projectUser(tenantId: string, userId: string, opts: { phone?: string; totp?: Buffer }) {
    const methods = [...(opts.totp ? ['totp'] : []), ...(opts.phone ? ['sms'] : [])];
    const key = await new UserDataKeys({ js: jetstream(nc), jsm }, keyring).getOrCreate(tenantId, userId);
    await writer.apply({
      tenantId,
      userId,
      seq: seq++,
      dataKey: formatWrappedDataKey(key.gen, key.wrapped),
      displayName: 'Alice',
      phoneNumber: opts.phone,
      methods,
      defaultMethod: methods[0],
      totpTokens: opts.totp ? [{ tokenId: 'tok0', secret: opts.totp, digits: 6, period: 30, activatedStep: 0 }] : [],
    });
  }
  const keysOf = (tenantId: string, userId: string) => {
    const tag = userTag(keyring, tenantId, userId);
    return { failures: RedisKeys.failures(tag), consecutive: RedisKeys.consecutiveFailures(tag), steps: RedisKeys.totpSteps(tag), sends: RedisKeys.smsSends(tag) };
  };
  const wrong = (code: string) => (code === '000000' ? '111111' : '000000');

  itWith({ real: ['nats', 'redis'] }, "another tenant's verify, resend and status of a challenge: not_found each time, counting nothing against its user", async () => {
    const alice = `alice.${randomBytes(4).toString('hex')}@contoso.example`;
    await projectUser(tenantA, alice, { phone: '+14155550180' });
    await projectUser(tenantB, alice, { phone: '+14155550181' });
    const start = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: alice, method: 'sms' });
    assert.equal(start.status, 'pending', JSON.stringify(start));
    const challengeId = String(start.challengeId);
    const code = await smsCodeFromLog(jsm, keyring, challengeId);
    const sendsBefore = await redis.zcard(keysOf(tenantA, alice).sends);
    // More wrong codes than the challenge's attempts and the lockout threshold allow together.
    for (let i = 0; i < 12; i++) {
      assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantB, challengeId, code: wrong(code) })).error?.code, 'not_found');
    }
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantB, challengeId, code })).error?.code, 'not_found', 'the right code from another tenant');
    assert.equal((await ask(Subjects.challengeResend, { tenantId: tenantB, challengeId })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenantB, challengeId })).error?.code, 'not_found');
    for (const tenantId of [tenantA, tenantB]) {
      const keys = keysOf(tenantId, alice);
      assert.equal(await redis.exists(keys.failures, keys.consecutive), 0, `no failure counted in ${tenantId === tenantA ? 'A' : 'B'}`);
    }
    assert.equal(await redis.zcard(keysOf(tenantA, alice).sends), sendsBefore, 'no resend counted');
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenantA, challengeId }), { challengeId, status: 'pending' });
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId, code })).status, 'approved', 'its own tenant approves it with its code');
  });

  itWith({ real: ['nats', 'redis'] }, "another tenant's verify leaves the TOTP tokens this instance keeps for a challenge: its own verify still takes one call", async () => {
    const alice = `alice.${randomBytes(4).toString('hex')}@contoso.example`;
    const secret = randomBytes(20);
    await projectUser(tenantA, alice, { totp: secret });
    // One instance (the service itself, not a queue group of them): its start keeps the tokens.
    const challenges = service.app.get(ChallengeService);
    const checks = async () => {
      const values = (await registry.getSingleMetric('mfa_challenge_totp_checks_total')?.get())?.values ?? [];
      return Object.fromEntries(values.map((v) => [v.labels.path, v.value])) as Record<string, number | undefined>;
    };
    const start = await challenges.start({ tenantId: tenantA, userId: alice, method: 'totp' } as never, new Date());
    const challengeId = String(start.challengeId);
    await assert.rejects(challenges.verify({ tenantId: tenantB, challengeId, code: '123456' }, new Date()), { code: 'not_found' });
    const before = await checks();
    assert.deepEqual(await challenges.verify({ tenantId: tenantA, challengeId, code: totp(secret, Date.now()) }, new Date()), { challengeId, status: 'approved' });
    const afterwards = await checks();
    assert.equal((afterwards.two_calls ?? 0) - (before.two_calls ?? 0), 0, 'no second call: the tokens kept at the start served');
    assert.equal((afterwards.one_call ?? 0) - (before.one_call ?? 0), 1);
  });

  itWith({ real: ['nats', 'redis'] }, 'the same user id in two tenants: a lockout and a spent TOTP code of one are not the other’s', async () => {
    const alice = `alice.${randomBytes(4).toString('hex')}@contoso.example`;
    // The same seed in both (a token imported twice): the code is the same, the users are not.
    const secret = randomBytes(20);
    await projectUser(tenantA, alice, { totp: secret });
    await projectUser(tenantB, alice, { totp: secret });
    const startIn = async (tenantId: string) => {
      const started = await ask(Subjects.challengeStart, { tenantId, userId: alice, method: 'totp' });
      assert.equal(started.status, 'pending', JSON.stringify(started));
      return String(started.challengeId);
    };
    // A's alice spends the current code; B's alice may still use it.
    const code = totp(secret, Date.now());
    const inA = await startIn(tenantA);
    const inB = await startIn(tenantB);
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId: inA, code })).status, 'approved');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantB, challengeId: inB, code })).status, 'approved', 'not a replay in B');
    // A's alice is locked out by wrong codes (two challenges' attempts: the default threshold of 10).
    for (let round = 0; round < 2; round++) {
      const challengeId = await startIn(tenantA);
      for (let i = 0; i < 5; i++) await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId, code: wrong(totp(secret, Date.now())) });
    }
    assert.ok(Number(await redis.get(keysOf(tenantA, alice).failures)) >= 10, "A's alice reached the lockout threshold");
    const lockedA = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: alice, method: 'totp' });
    assert.match(String(lockedA.error?.message), /too many wrong codes/, JSON.stringify(lockedA));
    assert.equal(await redis.exists(keysOf(tenantB, alice).failures), 0, "B's alice has no failures");
    const inB2 = await startIn(tenantB);
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantB, challengeId: inB2, code: totp(secret, Date.now() + 30_000) })).status, 'approved', "B's alice signs in");
  });
});
