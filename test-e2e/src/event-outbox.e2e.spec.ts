import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Headers, Streams, Subjects } from '@mfa/contracts';
import { base32Decode, totp } from '@mfa/crypto';
import { connectClient, ensureStream, eventIdOf, requestJson } from '@mfa/messaging';
import {
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

type Reply = Record<string, unknown> & { status?: string; challengeId?: string; error?: { code: string; message: string } };

/**
 * No decision without its event (issue 7): when JetStream does not take the event of a decision
 * Redis recorded, the caller still gets the decision before its deadline, and the event, kept in
 * the outbox by the same script, is published by the relay once JetStream is back. Own
 * nats-server and redis-server: the test deletes the challenge stream.
 */
describe('a decision whose event JetStream did not take', () => {
  let nats: NatsServerProcess;
  let redisServer: RedisServerProcess;
  let stack: Stack;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let redis: Redis;
  const tenantId = uniqueTenant('outbox');
  const ask = (subject: string, body: unknown, headers?: Record<string, string>) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, ...(headers ? { headers } : {}) });

  before(async () => {
    nats = await startNatsServer();
    redisServer = await startRedisServer();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge'],
      // A small bound on each slot's outbox, which the second test fills (the first keeps one decision there).
      env: { NODE_ENV: 'test', MFA_AUTH: 'off', NATS_URL: nats.url, REDIS_URL: redisServer.url, LOG_LEVEL: 'warn', OUTBOX_MAX_PER_SLOT: '3' },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: nats.url, name: 'e2e-outbox' });
    jsm = await jetstreamManager(nc);
    redis = new Redis(redisServer.url);
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} })).error, undefined);
  });

  after(async () => {
    await nc?.close();
    redis?.disconnect();
    await stack?.stop();
    await redisServer?.stop();
    await nats?.stop();
  });

  const outboxEntries = async () => {
    let entries = 0;
    for (const key of await redis.keys('mfa:{*}:outbox')) entries += await redis.hlen(key);
    return entries;
  };

  const drained = async (message: string) => {
    for (let n = 0; (await outboxEntries()) > 0; n++) {
      assert.ok(n < 40, message);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  itWith({ real: ['nats', 'redis'] }, 'answers approved before the deadline, then the relay publishes the approval once JetStream is back', async () => {
    const userId = uniqueUser('outbox');
    await ask(Subjects.usersRegister, { tenantId, userId });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
    const secret = base32Decode(String(enrolled.secret));
    const now = Date.now();
    await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, now) });
    const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
    assert.equal(start.status, 'pending', JSON.stringify(start));
    const challengeId = String(start.challengeId);
    await drained('a stored event leaves the outbox (removal is batched: within moments)');

    // JetStream loses the challenge stream: the approval cannot be stored.
    await jsm.streams.delete(Streams.challenges.name);
    const deadline = Date.now() + 2_000;
    const verify = await ask(Subjects.challengeVerify, { tenantId, challengeId, code: totp(secret, now + 30_000) }, { [Headers.deadline]: String(deadline) });
    const answeredAt = Date.now();
    assert.deepEqual(verify, { challengeId, status: 'approved' });
    assert.ok(answeredAt <= deadline, `answered ${answeredAt - deadline} ms after the deadline`);
    assert.equal(await outboxEntries(), 1, 'the decision stays in the outbox');

    await ensureStream(jsm, Streams.challenges);
    const id = eventIdOf(`${challengeId}:approved`);
    const since = Date.now();
    for (;;) {
      const got = await jsm.streams.getMessage(Streams.challenges.name, { last_by_subj: 'mfa.evt.challenge.approved' }).catch(() => null);
      if (got) {
        const event = got.json<{ id: string; type: string; aggregateId: string; data: { userId: string } }>();
        assert.deepEqual([event.id, event.type, event.aggregateId, event.data.userId], [id, 'ChallengeApproved', challengeId, userId]);
        break;
      }
      assert.ok(Date.now() - since < 30_000, 'the relay did not publish the approval within 30 s');
      await new Promise((r) => setTimeout(r, 250));
    }
    process.stdout.write(`# relayed ${Date.now() - since} ms after JetStream came back\n`);
    await drained('the outbox was not emptied after the relay published');
  });

  itWith({ real: ['nats', 'redis'] }, 'refuses to decide, counting nothing, once the slot’s outbox holds OUTBOX_MAX_PER_SLOT decisions, and decides again once JetStream takes them', async () => {
    const userId = uniqueUser('outbox-full');
    await ask(Subjects.usersRegister, { tenantId, userId });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
    const secret = base32Decode(String(enrolled.secret));
    const activatedAt = Date.now();
    await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, activatedAt) });
    await drained('the registration’s decisions leave the outbox');
    const soon = () => ({ [Headers.deadline]: String(Date.now() + 1_000) });

    await jsm.streams.delete(Streams.challenges.name);
    const pending: string[] = [];
    for (let n = 0; n < 3; n++) {
      const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' }, soon());
      assert.equal(start.status, 'pending', `start ${n + 1} of 3 (the outbox holds ${n}): ${JSON.stringify(start)}`);
      pending.push(String(start.challengeId));
    }
    assert.equal(await outboxEntries(), 3, 'three decisions wait in the outbox');
    const [outbox] = await redis.keys('mfa:{*}:outbox');
    const kept = await redis.hgetall(outbox!);
    const bytes = Object.entries(kept).reduce((sum, [name, value]) => sum + Buffer.byteLength(name) + Buffer.byteLength(value), 0);
    process.stdout.write(`# a TOTP start kept in the outbox: ${Math.round(bytes / 3)} bytes (name and record), ${await redis.memory('USAGE', outbox!)} bytes for the outbox of 3\n`);

    // The fourth decision of the slot is not taken: no challenge, and a wrong code compares and counts nothing.
    const refused = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' }, soon());
    assert.equal(refused.error?.code, 'unavailable', JSON.stringify(refused));
    const wrong = await ask(Subjects.challengeVerify, { tenantId, challengeId: pending[0], code: '000000' }, soon());
    assert.equal(wrong.error?.code, 'unavailable', JSON.stringify(wrong));
    assert.equal(await outboxEntries(), 3, 'nothing more was kept');
    const failures = await redis.keys('mfa:{*}:fails');
    assert.deepEqual(failures, [], 'no wrong code was counted');
    // Reading what was decided still works.
    const status = await ask(Subjects.challengeStatus, { tenantId, challengeId: pending[0] });
    assert.equal(status.status, 'pending', JSON.stringify(status));

    await ensureStream(jsm, Streams.challenges);
    await drained('the outbox was not emptied once JetStream took events again');
    const approved = await ask(Subjects.challengeVerify, { tenantId, challengeId: pending[2], code: totp(secret, Math.max(Date.now(), activatedAt + 30_000)) });
    assert.equal(approved.status, 'approved', JSON.stringify(approved));
    const again = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
    assert.equal(again.status, 'pending', JSON.stringify(again));
  });
});
