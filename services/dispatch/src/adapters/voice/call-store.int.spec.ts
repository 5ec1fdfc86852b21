import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { challengeId, parseChallengeId, RedisKeys } from '@mfa/projection';
import { itWith, testEnv } from '@mfa/testing';
import { CallStore, type CallState } from './call-store.js';

const id = () => challengeId(randomBytes(16).toString('base64url').slice(0, 22), randomBytes(16).toString('base64url').slice(0, 22));
const keyOf = (challenge: string) => {
  const { tag, nonce } = parseChallengeId(challenge)!;
  return RedisKeys.call(tag, nonce);
};
const STATE: CallState = { tenantId: 'contoso', userId: 'helga@contoso.com', language: 'sv', pinMode: false, fraudCode: '0' };

describe('CallStore against a real Redis', () => {
  let redis: Redis;
  let calls: CallStore;

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    calls = new CallStore(redis);
  });

  after(async () => {
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'records the CallSid, each prompt’s answer and the outcome once, on the call’s TTL', async () => {
    const challenge = id();
    await calls.create(challenge, STATE, 60_000);
    await calls.setCallSid(challenge, 'CA1');
    await calls.setCallSid(challenge, 'CA2');
    assert.equal(await calls.answerOnce(challenge, 1, 'approve'), true);
    assert.equal(await calls.answerOnce(challenge, 1, 'approve'), false, 'the same prompt again');
    assert.equal(await calls.answerOnce(challenge, 2, 'check_pin'), true);
    assert.equal(await calls.finish(challenge, 'approved'), true);
    assert.equal(await calls.finish(challenge, 'denied'), false, 'an outcome again');
    assert.deepEqual(await calls.read(challenge), { ...STATE, extension: undefined, callSid: 'CA1', outcome: 'approved' });
    const ttl = await redis.pttl(keyOf(challenge));
    assert.ok(ttl > 0 && ttl <= 60_000, `the call's ttl ${ttl}`);
  });

  itWith({ real: ['redis'] }, 'writes nothing once the call expired: no call is made again without a TTL', async () => {
    const writes: Record<string, (challenge: string) => Promise<unknown>> = {
      setCallSid: (c) => calls.setCallSid(c, 'CA1'),
      answerOnce: (c) => calls.answerOnce(c, 1, 'approve'),
      finish: (c) => calls.finish(c, 'unanswered'),
    };
    const left: Record<string, { answer: unknown; exists: number; ttl: number }> = {};
    for (const [name, write] of Object.entries(writes)) {
      const challenge = id();
      await calls.create(challenge, STATE, 60_000);
      // The call's TTL ran out between the webhook's read and this write.
      await redis.del(keyOf(challenge));
      const answer = await write(challenge);
      left[name] = { answer, exists: await redis.exists(keyOf(challenge)), ttl: await redis.pttl(keyOf(challenge)) };
    }
    // Nothing recorded (false: not this webhook's to act on), and no key: PTTL -2, where -1 would be a key kept for good.
    assert.deepEqual(left, {
      setCallSid: { answer: undefined, exists: 0, ttl: -2 },
      answerOnce: { answer: false, exists: 0, ttl: -2 },
      finish: { answer: false, exists: 0, ttl: -2 },
    });
  });
});
