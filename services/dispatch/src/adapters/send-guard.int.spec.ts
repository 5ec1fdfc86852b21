import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { challengeId, RedisKeys } from '@mfa/projection';
import { itWith, testEnv } from '@mfa/testing';
import { SendGuard } from './send-guard.js';

const id = () => challengeId(randomBytes(16).toString('base64url').slice(0, 22), randomBytes(16).toString('base64url').slice(0, 22));

describe('SendGuard against a real Redis', () => {
  let redis: Redis;
  let guard: SendGuard;

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    guard = new SendGuard(redis);
  });

  after(async () => {
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'one claim at a time, a sent SMS stays sent, a released claim can be taken again, in the challenge’s slot', async () => {
    const challenge = id();
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'claimed' });
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'in_progress' });
    await guard.release(challenge);
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'claimed' });
    await guard.sent(challenge, 'twilio', 'SM0123456789abcdef0123456789abcdef', 60_000);
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'sent', provider: 'twilio', providerMessageId: 'SM0123456789abcdef0123456789abcdef' });
    const [tag, nonce] = challenge.split('.') as [string, string];
    const ttl = await redis.pttl(RedisKeys.smsSend(tag, nonce));
    assert.ok(ttl > 50_000 && ttl <= 60_000, `sent claim ttl ${ttl}`);
  });

  itWith({ real: ['redis'] }, 'a claim whose holder died ends by itself', async () => {
    const challenge = id();
    assert.deepEqual(await guard.claim(challenge, 50), { kind: 'claimed' });
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(await guard.claim(challenge, 50), { kind: 'claimed' });
  });
});
