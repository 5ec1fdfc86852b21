import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { EventSubjects, OATH_CSV_HEADER, Subjects } from '@mfa/contracts';
import { base32Decode, base32Encode, loadKeyring, totp, userTag } from '@mfa/crypto';
import { PROJECTION_REBUILD_LEASE_KEY, RedisKeys, STEPS_RESTORED_KEY } from '@mfa/projection';
import { connectClient, createEvent, EventPublisher, requestJson } from '@mfa/messaging';
import { jetstream } from '@nats-io/jetstream';
import {
  eventually,
  itWith,
  startNatsServer,
  startRedisServer,
  startStack,
  uniqueTenant,
  uniqueUser,
  type NatsServerProcess,
  type RedisServerProcess,
  type Stack,
} from '@mfa/testing';

type Reply = Record<string, unknown> & { status?: string; reason?: string; challengeId?: string; error?: { code: string; message: string } };

/**
 * Redis is a cache of the event log (issue 7): when it comes back empty, no existing user is sent
 * to registration, a code accepted before is not accepted after, and sign-ins work again within
 * seconds, without restarting anything. Its own nats-server and redis-server, so it can flush.
 */
describe('Redis lost while the services run', () => {
  let nats: NatsServerProcess;
  let redisServer: RedisServerProcess;
  let stack: Stack;
  let nc: NatsConnection;
  let redis: Redis;
  const tenantId = uniqueTenant('redis-loss');
  const { keyring } = loadKeyring(process.env);
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    nats = await startNatsServer();
    redisServer = await startRedisServer();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'fraud'],
      instances: 2,
      env: {
        NODE_ENV: 'test',
        MFA_AUTH: 'off',
        NATS_URL: nats.url,
        REDIS_URL: redisServer.url,
        LOG_LEVEL: 'warn',
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: nats.url, name: 'e2e-redis-loss' });
    redis = new Redis(redisServer.url);
    // Three wrong codes in the window lock a user (the lockout test below).
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { lockout: { threshold: 3 } } })).error, undefined);
  });

  after(async () => {
    await nc?.close();
    redis?.disconnect();
    await stack?.stop();
    await redisServer?.stop();
    await nats?.stop();
  });

  itWith({ real: ['nats', 'redis'] }, 'answers unavailable (never registration_required) until rebuilt, then refuses a code accepted before the loss', async () => {
    const userId = uniqueUser('app');
    const stranger = uniqueUser('never-registered');
    await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Ingrid' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
    const secret = base32Decode(String(enrolled.secret));
    const now = Date.now();
    assert.deepEqual(await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, now) }), {
      tokenId: enrolled.tokenId,
      active: true,
    });
    // A sign-in with the next step's code (the activation spent the current one).
    const code = totp(secret, now + 30_000);
    const first = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: first.challengeId, code })).status, 'approved');

    // A hardware token in the inventory: the index oath.tokens.list reads is Redis too.
    const serialNumber = `HW-${Date.now().toString(36)}`;
    const imported = await ask(Subjects.oathImport, { tenantId, format: 'csv', content: `${OATH_CSV_HEADER}\n,${serialNumber},${base32Encode(randomBytes(20))},30,Acme,K\n` });
    await eventually(async () => ((await ask(Subjects.oathImportStatus, { tenantId, jobId: imported.jobId })).state === 'completed' ? true : undefined), 30_000, 'the import');

    await redis.flushall();
    const lost = Date.now();
    const answers: string[] = [];
    let start: Reply | undefined;
    for (;;) {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
      answers.push(reply.status ?? reply.error?.code ?? 'none');
      if (reply.status === 'pending') {
        start = reply;
        break;
      }
      assert.equal(reply.error?.code, 'unavailable', `while rebuilding: ${JSON.stringify(reply)}`);
      assert.ok(Date.now() - lost < 15_000, `not rebuilt within 15 s: ${answers.join(',')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const recoveredMs = Date.now() - lost;
    assert.ok(!answers.includes('registration_required'), answers.join(','));
    // The code accepted before the loss, within its time window still: refused as reused.
    const replay = await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code });
    assert.deepEqual([replay.status, replay.reason], ['pending', 'invalid_code'], JSON.stringify(replay));
    // A user who never registered: unknown until looked up (on demand, or by the whole rebuild), then absent.
    for (;;) {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: stranger });
      if (reply.status === 'registration_required') break;
      assert.equal(reply.error?.code, 'unavailable', JSON.stringify(reply));
      assert.ok(Date.now() - lost < 15_000, 'the stranger was never looked up');
      await new Promise((r) => setTimeout(r, 100));
    }
    process.stdout.write(`# recovered ${recoveredMs} ms after FLUSHALL (${answers.length} starts tried)\n`);
    // The projection is complete again: the inventory with it.
    await eventually(async () => ((await redis.exists(RedisKeys.userProjectionMarker)) === 1 ? true : undefined), 15_000, 'the projection complete');
    const listed = await ask(Subjects.oathTokensList, { tenantId });
    assert.deepEqual((listed.items as Array<{ serialNumber: string; state: string }>).map((t) => [t.serialNumber, t.state]), [[serialNumber, 'unassigned']]);
  });

  itWith({ real: ['nats', 'redis'] }, 'before the bulk rebuild reaches them: a registered user is served, one the log does not know or erased is sent to registration', async () => {
    const known = uniqueUser('known');
    const erased = uniqueUser('erased');
    const stranger = uniqueUser('stranger');
    for (const userId of [known, erased]) {
      assert.deepEqual((await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: '+14155550142' })).methods, ['sms', 'voice']);
    }
    assert.equal((await ask(Subjects.usersDelete, { tenantId, userId: erased })).deleted, true);
    // No rebuild of an earlier loss still running (it would write the markers after the flush below).
    await eventually(async () => ((await redis.exists(RedisKeys.userProjectionMarker)) === 1 ? true : undefined), 15_000, 'the projection complete');

    // Redis lost, and the bulk rebuild held back: another (dead) instance holds its lease after
    // restoring the TOTP steps, so only users looked up on demand are projected, and no slot
    // marker comes back meanwhile.
    const [flushed, leased, restored] = (await redis.multi().flushall().set(PROJECTION_REBUILD_LEASE_KEY, 'an instance that died', 'PX', 60_000).set(STEPS_RESTORED_KEY, '1').exec())!;
    assert.deepEqual([flushed![1], leased![1], restored![1]], ['OK', 'OK', 'OK']);
    try {
      const after = async (userId: string, method?: string): Promise<Reply> => {
        const answers: string[] = [];
        for (;;) {
          const reply = await ask(Subjects.challengeStart, { tenantId, userId, ...(method ? { method } : {}) });
          if (reply.error?.code !== 'unavailable') return reply;
          answers.push(reply.error.code);
          assert.ok(answers.length < 100, `still unavailable after ${answers.length} starts`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      const served = await after(known, 'sms');
      assert.deepEqual([served.status, served.method], ['pending', 'sms'], JSON.stringify(served));
      for (const userId of [stranger, erased]) {
        const reply = await after(userId);
        assert.equal(reply.status, 'registration_required', `${userId}: ${JSON.stringify(reply)}`);
      }
      assert.equal(await redis.exists(RedisKeys.userProjectionMarker), 0, 'the bulk rebuild ran after all');
      // What says "not registered" meanwhile: a user hash holding only seq 0, for a while.
      const strangerKey = RedisKeys.user(userTag(keyring, tenantId, stranger));
      assert.deepEqual(await redis.hgetall(strangerKey), { seq: '0' });
      assert.ok((await redis.ttl(strangerKey)) > 0);
    } finally {
      await redis.del(PROJECTION_REBUILD_LEASE_KEY);
    }
    // The lease given back, the rebuild completes; the mark gives way to a registration.
    await eventually(async () => ((await redis.exists(RedisKeys.userProjectionMarker)) === 1 ? true : undefined), 15_000, 'the rebuild');
    assert.deepEqual((await ask(Subjects.usersRegister, { tenantId, userId: stranger, phoneNumber: '+14155550143' })).methods, ['sms', 'voice']);
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: stranger, method: 'sms' })).status, 'pending');
  });

  /** Starts until the rebuild lets the user through (anything but unavailable), within 15 s. */
  const startAfterLoss = async (userId: string): Promise<Reply> => {
    const lost = Date.now();
    for (;;) {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
      if (reply.error?.code !== 'unavailable') return reply;
      assert.ok(Date.now() - lost < 15_000, 'not rebuilt within 15 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  itWith({ real: ['nats', 'redis'] }, 'keeps a lockout and a block across the loss, and an unblock before the loss stays lifted', async () => {
    const locked = uniqueUser('locked');
    const endedBlock = uniqueUser('ended-block');
    const unblocked = uniqueUser('unblocked');
    const blocked = uniqueUser('blocked');
    await ask(Subjects.usersRegister, { tenantId, userId: blocked });
    assert.ok((await ask(Subjects.usersBlock, { tenantId, userId: blocked, reason: 'account takeover suspected' })).blockedUntil);
    for (const userId of [locked, unblocked, endedBlock]) {
      await ask(Subjects.usersRegister, { tenantId, userId });
      const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
      const secret = base32Decode(String(enrolled.secret));
      await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, Date.now()) });
      const started = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
      // Codes of another secret: wrong. The third locks the user (the tenant's lockout threshold is 3).
      const replies: Reply[] = [];
      for (let n = 0; n < 3; n++) {
        const wrong = totp(Buffer.alloc(20, n + 1), Date.now());
        replies.push(await ask(Subjects.challengeVerify, { tenantId, challengeId: started.challengeId, code: wrong }));
      }
      assert.deepEqual(replies.map((r) => [r.status, r.reason]), [['pending', 'invalid_code'], ['pending', 'invalid_code'], ['denied', 'locked_out']]);
      const refused = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
      assert.equal(refused.error?.code, 'rate_limited', JSON.stringify(refused));
    }
    const unblock = await ask(Subjects.usersUnblock, { tenantId, userId: unblocked, reason: "helpdesk call" });
    assert.equal(unblock.unblocked, true, JSON.stringify(unblock));
    // A block of the locked user that ended by itself after the lockout (its automatic unblock, as
    // fraud records it): it lifts no lockout, before the loss or in the rebuild after it.
    const publisher = new EventPublisher(jetstream(nc));
    const subject = EventSubjects.fraudUser(tenantId, endedBlock);
    const end = new Date(Date.now() + 300);
    await publisher.publish(subject, createEvent('UserBlocked', 1, { tenantId, aggregateId: endedBlock, now: new Date(), data: { userId: endedBlock, reason: 'short', until: end.toISOString(), source: 'admin' } }));
    await publisher.publish(subject, createEvent('UserUnblocked', 1, { tenantId, aggregateId: endedBlock, now: end, data: { userId: endedBlock, automatic: true } }));
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: endedBlock, method: 'totp' })).error?.code, 'rate_limited', 'the automatic unblock lifted the lockout');

    await redis.flushall();
    const stillLocked = await startAfterLoss(locked);
    assert.equal(stillLocked.error?.code, 'rate_limited', `the lockout was lost with Redis: ${JSON.stringify(stillLocked)}`);
    assert.match(String(stillLocked.error?.message), /locked/);
    const free = await startAfterLoss(unblocked);
    assert.equal(free.status, 'pending', `an unblocked user was locked again by the rebuild: ${JSON.stringify(free)}`);
    const stillLockedAfterEnd = await startAfterLoss(endedBlock);
    assert.equal(stillLockedAfterEnd.error?.code, 'rate_limited', `the rebuild took a block's automatic end for an unblock: ${JSON.stringify(stillLockedAfterEnd)}`);
    const stillBlocked = await startAfterLoss(blocked);
    assert.deepEqual([stillBlocked.status, stillBlocked.reason], ['denied', 'user_blocked'], `the block was lost with Redis: ${JSON.stringify(stillBlocked)}`);
  });
});
