import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams, Subjects, type EventOf } from '@mfa/contracts';
import { hashCode, loadKeyring, userTag } from '@mfa/crypto';
import { eventIdOf, requestJson } from '@mfa/messaging';
import { hashSlotOf, RedisKeys, slotOutboxKey, UserProjectionWriter } from '@mfa/projection';
import { ReplicatedWrites } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { itWith, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';
import { ChallengeStore, type LockoutPolicy } from './adapters/challenge.store.js';
import { boot } from './boot.js';
import { loadAuthChallengeConfig } from './config.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string; retryAfterSeconds?: number } };

const lockout: LockoutPolicy = { threshold: 10, windowSeconds: 900, lockoutSeconds: 900, maxConsecutiveFailures: 100 };
const T0 = Date.parse('2030-01-01T12:00:00Z');
const at = (seconds: number) => new Date(T0 + seconds * 1000);

describe('challenge.resend against real Redis (and NATS)', () => {
  const { keyring } = loadKeyring({});
  const tenant = uniqueTenant('resend');
  let redis: Redis;
  let store: ChallengeStore;
  let writer: UserProjectionWriter;
  let seq = 1;
  /** Challenges started here: their decisions stay in the slots' outboxes (nothing publishes them) until `after`. */
  const started: Array<{ challengeId: string; slot: number }> = [];

  before(async () => {
    redis = new Redis(testEnv.redisUrl);
    store = new ChallengeStore(redis, new ReplicatedWrites(redis, { replicas: 0, timeoutMs: 100 }, createLogger('test', { level: 'error' })));
    writer = new UserProjectionWriter(redis, keyring);
    // Users are seeded straight into Redis: the projection of every slot is complete.
    await writer.markComplete();
  });

  after(async () => {
    // Contexts made up for the scripts are no events: the relay of a later run must not find them.
    for (const { challengeId, slot } of started) {
      const names = (await redis.hkeys(slotOutboxKey(slot))).filter((name) => name.startsWith(`${challengeId}:`));
      if (names.length > 0) await redis.hdel(slotOutboxKey(slot), ...names);
    }
    await redis.quit();
  });

  async function projectUser(options: { totp?: boolean } = {}) {
    const userId = uniqueUser();
    const methods = options.totp ? ['totp', 'sms'] : ['sms'];
    await writer.apply({
      tenantId: tenant,
      userId,
      seq: seq++,
      phoneNumber: '+14155550130',
      methods,
      defaultMethod: methods[0],
      totpTokens: options.totp ? [{ tokenId: 'app', secret: randomBytes(20), digits: 6, period: 30, activatedStep: 0 }] : [],
    });
    return { userId, tag: userTag(keyring, tenant, userId) };
  }

  /** A challenge started at `now` (SMS unless told), through the start script as auth-challenge runs it. */
  async function start(user: { userId: string; tag: string }, now: Date, options: { method?: 'sms' | 'totp'; smsMaxSends?: number } = {}) {
    const nonce = randomBytes(16).toString('base64url').slice(0, 22);
    const challengeId = `${user.tag}.${nonce}`;
    const verdict = await store.startChallenge({
      tag: user.tag, nonce, tenantId: tenant, userId: user.userId, requestedMethod: options.method ?? 'sms', enabledMethods: ['sms', 'totp'], now,
      expiresAt: new Date(now.getTime() + 300_000), maxAttempts: 5, codeHash: hashCode(keyring, challengeId, '123456'), ttlSeconds: 1200,
      smsMaxSends: options.smsMaxSends ?? 5, smsWindowSeconds: 3600, tenantKnown: true, lockout, challengeId, context: '{}', slot: hashSlotOf(user.tag),
    });
    started.push({ challengeId, slot: hashSlotOf(user.tag) });
    return { verdict, tag: user.tag, nonce, challengeId, slot: hashSlotOf(user.tag) };
  }

  type Started = Awaited<ReturnType<typeof start>>;
  const resend = (c: Started, now: Date, options: { tenantId?: string; smsMaxSends?: number; smsAllowed?: boolean; phoneCountries?: { allowed: string; blocked: string } } = {}) =>
    store.resend({
      tag: c.tag, nonce: c.nonce, tenantId: options.tenantId ?? tenant, now, lockout, maxSends: 5, minIntervalSeconds: 30,
      smsMaxSends: options.smsMaxSends ?? 5, smsWindowSeconds: 3600, challengeId: c.challengeId, context: '{"k":"resend"}', slot: c.slot,
      smsAllowed: options.smsAllowed ?? true, phoneCountries: options.phoneCountries ?? { allowed: '*', blocked: '' },
    });
  const sendsOf = (tag: string) => redis.zrange(RedisKeys.smsSends(tag), 0, -1);

  itWith({ real: ['redis'] }, 'counts each resend once, 30 s apart at least, at most 5 sends per challenge, each kept in the outbox under its number', async () => {
    const user = await projectUser();
    const c = await start(user, at(0));
    assert.equal(c.verdict.kind, 'pending');
    assert.deepEqual(await resend(c, at(10)), { kind: 'rate_limited', retryAfterSeconds: 20, scope: 'interval' });
    const expiresAt = T0 + 300_000;
    assert.deepEqual(await resend(c, at(30)), { kind: 'resent', userId: user.userId, resend: 1, remaining: 3, expiresAt });
    // The interval counts from the last send, not the start.
    assert.deepEqual(await resend(c, at(45)), { kind: 'rate_limited', retryAfterSeconds: 15, scope: 'interval' });
    for (const [n, seconds] of [[2, 60], [3, 90], [4, 120]] as const) {
      assert.deepEqual(await resend(c, at(seconds)), { kind: 'resent', userId: user.userId, resend: n, remaining: 4 - n, expiresAt });
    }
    assert.deepEqual(await resend(c, at(150)), { kind: 'exhausted', maxSends: 5 });
    // Counted like starts in the user's window: the start and four resends, each once.
    assert.deepEqual((await sendsOf(user.tag)).sort(), [c.challengeId, ...[1, 2, 3, 4].map((n) => `${c.challengeId}:r${n}`)].sort());
    const outbox = await redis.hget(slotOutboxKey(c.slot), `${c.challengeId}:resent:4`);
    assert.deepEqual(JSON.parse(outbox!), { c: { k: 'resend' }, r: ['resent', user.userId, 'sms', '4', '0', String(expiresAt)] });
    // The user's window is full now: the next start is throttled, with the time to wait.
    const next = await start(user, at(160));
    assert.deepEqual(next.verdict, { kind: 'rate_limited', retryAfterSeconds: 3440, scope: 'user' });
  });

  itWith({ real: ['redis'] }, 'is refused by the user\'s send window and by the phone number\'s throttle, counting nothing', async () => {
    const user = await projectUser();
    const a = await start(user, at(0), { smsMaxSends: 2 });
    await start(user, at(20), { smsMaxSends: 2 });
    assert.deepEqual(await resend(a, at(40), { smsMaxSends: 2 }), { kind: 'rate_limited', retryAfterSeconds: 3560, scope: 'user' });
    const other = await projectUser();
    const b = await start(other, at(0));
    await redis.set(RedisKeys.phoneThrottle(other.tag), String(T0 + 90_000), 'PX', 600_000);
    assert.deepEqual(await resend(b, at(40)), { kind: 'rate_limited', retryAfterSeconds: 50, scope: 'phone' });
    assert.deepEqual(await sendsOf(other.tag), [b.challengeId]);
    assert.equal(await redis.hget(RedisKeys.challenge(b.tag, b.nonce), 'resends'), null);
  });

  itWith({ real: ['redis'] }, 'answers not_found for another tenant\'s challenge or none, and changes nothing', async () => {
    const user = await projectUser();
    const c = await start(user, at(0));
    assert.deepEqual(await resend(c, at(60), { tenantId: uniqueTenant('other') }), { kind: 'not_found' });
    assert.deepEqual(await resend({ ...c, nonce: randomBytes(16).toString('base64url').slice(0, 22) }, at(60)), { kind: 'not_found' });
    assert.deepEqual(await sendsOf(user.tag), [c.challengeId]);
    assert.equal(await redis.hget(RedisKeys.challenge(c.tag, c.nonce), 'resends'), null);
    assert.equal((await resend(c, at(60))).kind, 'resent', 'its own tenant still may');
  });

  itWith({ real: ['redis'] }, 'answers conflict for a challenge decided, expired or not an SMS one, and rate_limited while the user is locked out', async () => {
    const user = await projectUser({ totp: true });
    const approved = await start(user, at(0));
    const check = await store.checkCode({
      tag: approved.tag, nonce: approved.nonce, tenantId: tenant, now: at(5), lockout, challengeId: approved.challengeId, context: '{}', slot: approved.slot,
      codeHash: hashCode(keyring, approved.challengeId, '123456'),
    });
    assert.equal(check.kind, 'approved');
    assert.deepEqual(await resend(approved, at(60)), { kind: 'conflict', status: 'approved' });
    const expired = await start(user, at(0));
    assert.deepEqual(await resend(expired, at(300)), { kind: 'conflict', status: 'expired' });
    const totp = await start(user, at(0), { method: 'totp' });
    assert.deepEqual(await resend(totp, at(60)), { kind: 'conflict', method: 'totp' });
    const locked = await start(user, at(0));
    await redis.set(RedisKeys.failures(user.tag), String(lockout.threshold), 'EX', 600);
    assert.equal((await resend(locked, at(60))).kind, 'locked');
    await redis.del(RedisKeys.failures(user.tag));
    await redis.set(RedisKeys.consecutiveFailures(user.tag), String(lockout.maxConsecutiveFailures));
    assert.equal((await resend(locked, at(60))).kind, 'capped');
    await redis.del(RedisKeys.consecutiveFailures(user.tag));
    // None of the refusals counted a send.
    assert.deepEqual((await sendsOf(user.tag)).sort(), [approved.challengeId, expired.challengeId, locked.challengeId].sort());
  });

  itWith({ real: ['redis'] }, "follows the tenant's settings as they are now: SMS disabled, or the phone's country excluded, since the start sends nothing", async () => {
    const user = await projectUser();
    await redis.hset(RedisKeys.user(user.tag), 'phoneCountry', 'US');
    const c = await start(user, at(0));
    assert.equal(c.verdict.kind, 'pending');
    assert.deepEqual(await resend(c, at(40), { smsAllowed: false }), { kind: 'not_allowed', reason: 'method_disabled' });
    assert.deepEqual(await resend(c, at(40), { phoneCountries: { allowed: '*', blocked: 'US' } }), { kind: 'not_allowed', reason: 'country_not_allowed' });
    assert.deepEqual(await resend(c, at(40), { phoneCountries: { allowed: 'CA', blocked: '' } }), { kind: 'not_allowed', reason: 'country_not_allowed' });
    assert.deepEqual(await sendsOf(user.tag), [c.challengeId], 'nothing counted');
    assert.equal((await resend(c, at(40), { phoneCountries: { allowed: 'US,CA', blocked: 'SE' } })).kind, 'resent');
  });

  itWith({ real: ['redis'] }, 'takes a challenge whose delivery failed back to pending for the resend to try again', async () => {
    const user = await projectUser();
    const c = await start(user, at(0));
    await redis.hset(RedisKeys.challenge(c.tag, c.nonce), 'delivery', 'failed');
    assert.equal((await resend(c, at(30))).kind, 'resent');
    assert.equal(await redis.hget(RedisKeys.challenge(c.tag, c.nonce), 'delivery'), null);
  });

  describe('through NATS', () => {
    let service: Awaited<ReturnType<typeof boot>>;
    let nc: NatsConnection;
    let jsm: JetStreamManager;
    const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 5000 });

    before(async () => {
      service = await boot(loadAuthChallengeConfig({ ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' }));
      nc = await connect({ servers: testEnv.natsUrl });
      jsm = await jetstreamManager(nc);
    });

    after(async () => {
      await service.stop();
      await nc.drain();
    });

    /** The resend events of a challenge recorded after sequence `from`. */
    async function resendEvents(from: number, challengeId: string): Promise<Array<EventOf<'ChallengeResendRequested'>>> {
      const found: Array<EventOf<'ChallengeResendRequested'>> = [];
      for (let next = from + 1; ; ) {
        const msg = await jsm.direct.getMessage(Streams.challenges.name, { seq: next, next_by_subj: EventSubjects.challengeResendRequested });
        if (!msg) return found;
        const event = msg.json<EventOf<'ChallengeResendRequested'>>();
        if (event.data.challengeId === challengeId) found.push(event);
        next = msg.seq + 1;
      }
    }

    itWith({ real: ['nats', 'redis'] }, 'answers pending with the resends left, records one event per resend with an id derived from its number', async () => {
      const user = await projectUser();
      const started = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user.userId, method: 'sms' });
      assert.equal(started.status, 'pending');
      const challengeId = String(started.challengeId);
      const from = (await jsm.streams.info(Streams.challenges.name)).state.last_seq;
      const tooSoon = await ask(Subjects.challengeResend, { tenantId: tenant, challengeId });
      assert.equal(tooSoon.error?.code, 'rate_limited');
      assert.ok(tooSoon.error!.retryAfterSeconds! >= 1 && tooSoon.error!.retryAfterSeconds! <= 30, String(tooSoon.error!.retryAfterSeconds));
      // As if the start were 31 s old: the interval has passed.
      const [, nonce] = challengeId.split('.');
      const key = RedisKeys.challenge(user.tag, nonce!);
      await redis.hset(key, 'createdAt', Date.now() - 31_000);
      assert.deepEqual(await ask(Subjects.challengeResend, { tenantId: tenant, challengeId }), { challengeId, status: 'pending', resendsRemaining: 3 });
      // A retry right after is refused by the interval: one resend, one event.
      assert.equal((await ask(Subjects.challengeResend, { tenantId: tenant, challengeId })).error?.code, 'rate_limited');
      const events = await resendEvents(from, challengeId);
      assert.equal(events.length, 1);
      assert.equal(events[0]!.id, eventIdOf(`${challengeId}:resent:1`));
      assert.deepEqual(
        { ...events[0]!.data, server: undefined },
        { challengeId, userId: user.userId, method: 'sms', server: undefined, resend: 1, expiresAt: started.expiresAt },
      );
      assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId }), { challengeId, status: 'pending' });
      // Another tenant sees no such challenge.
      assert.equal((await ask(Subjects.challengeResend, { tenantId: uniqueTenant('other'), challengeId })).error?.code, 'not_found');
    });
  });
});
