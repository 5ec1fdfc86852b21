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

  /** A challenge as auth-challenge leaves it in Redis when it starts. */
  const live = async () => {
    const challenge = id();
    const [tag, nonce] = challenge.split('.') as [string, string];
    await redis.hset(RedisKeys.challenge(tag, nonce), { tenantId: 'contoso', status: 'pending' });
    await redis.pexpire(RedisKeys.challenge(tag, nonce), 60_000);
    return challenge;
  };

  itWith({ real: ['redis'] }, 'one claim at a time, a sent SMS stays sent, a released claim can be taken again, in the challenge’s slot', async () => {
    const challenge = await live();
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

  itWith({ real: ['redis'] }, 'keeps each resend\'s claim apart, and tells a resend what the earlier sends left: providers and where the start is', async () => {
    const challenge = await live();
    const [tag, nonce] = challenge.split('.') as [string, string];
    assert.deepEqual(await guard.sendsBefore(challenge, 1), { sends: [undefined], failedSeq: undefined });
    // The start's send found no provider: its sequence stays on the challenge.
    await guard.undeliverable(challenge, Date.now(), 'sms', undefined, 4711);
    assert.deepEqual(await guard.sendsBefore(challenge, 1), { sends: [undefined], failedSeq: 4711 });
    assert.deepEqual(await guard.claim(challenge, 10_000, 1), { kind: 'claimed' });
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'claimed' }, 'the start\'s claim is another one');
    await guard.sent(challenge, 'console', 'console-1', 60_000, { seq: 4711, resend: 1 });
    assert.deepEqual(await guard.claim(challenge, 10_000, 1), { kind: 'sent', provider: 'console', providerMessageId: 'console-1', seq: 4711 });
    assert.deepEqual(await guard.sendsBefore(challenge, 3), {
      sends: [{ kind: 'in_progress' }, { kind: 'sent', provider: 'console', providerMessageId: 'console-1', seq: 4711 }, undefined],
      failedSeq: 4711,
    });
    assert.equal(await redis.get(RedisKeys.smsSend(tag, nonce, 1)), 'sent console console-1 4711');
  });

  itWith({ real: ['redis'] }, 'tells which send of a challenge a message id is, and the latest send the challenge accepted', async () => {
    const challenge = await live();
    const [tag, nonce] = challenge.split('.') as [string, string];
    assert.deepEqual(await guard.smsSendOf(challenge, 'twilio', 'SM-start'), { index: undefined, latest: 0 });
    await guard.claim(challenge, 10_000);
    await guard.sent(challenge, 'twilio', 'SM-start', 60_000, { seq: 7 });
    assert.deepEqual(await guard.smsSendOf(challenge, 'twilio', 'SM-start'), { index: 0, latest: 0 });
    // auth-challenge accepts a resend: counted before dispatch has sent it.
    await redis.hset(RedisKeys.challenge(tag, nonce), 'resends', 1);
    assert.deepEqual(await guard.smsSendOf(challenge, 'twilio', 'SM-start'), { index: 0, latest: 1 });
    await guard.claim(challenge, 10_000, 1);
    await guard.sent(challenge, 'smpp', 'id with space', 60_000, { seq: 7, resend: 1 });
    assert.deepEqual(await guard.smsSendOf(challenge, 'smpp', 'id with space'), { index: 1, latest: 1 });
    assert.deepEqual(await guard.smsSendOf(challenge, 'smpp', 'id with'), { index: undefined, latest: 1 });
    assert.deepEqual(await guard.smsSendOf(challenge, 'twilio', 'id with space'), { index: undefined, latest: 1 }, 'another provider\'s id');
    assert.deepEqual(await guard.smsSendOf('not a challenge id', 'twilio', 'SM-start'), { index: undefined, latest: 0 });
  });

  itWith({ real: ['redis'] }, 'reads a message id whole, spaces and words of digits in it, with or without a seq, and the claims written before', async () => {
    const challenge = await live();
    const [tag, nonce] = challenge.split('.') as [string, string];
    for (const providerMessageId of ['3f2a9c', '0A1B 2C3D', 'msg 7', '42', 'two  spaces ']) {
      await guard.sent(challenge, 'smpp', providerMessageId, 60_000, { seq: 42, resend: 1 });
      assert.deepEqual(await guard.claim(challenge, 10_000, 1), { kind: 'sent', provider: 'smpp', providerMessageId, seq: 42 });
      assert.deepEqual(await guard.sendsBefore(challenge, 2).then((s) => s.sends[1]), { kind: 'sent', provider: 'smpp', providerMessageId, seq: 42 });
      assert.deepEqual(await guard.smsSendOf(challenge, 'smpp', providerMessageId), { index: 1, latest: 0 });
      // Without a seq (a call): no word of the id is taken for one.
      await guard.sent(challenge, 'twilio', providerMessageId, 60_000);
      assert.deepEqual(await guard.recorded(challenge), { kind: 'sent', provider: 'twilio', providerMessageId });
      await guard.pushSent(challenge, 'pixel', 'apns', providerMessageId, 60_000);
      assert.deepEqual(await guard.recordedPushes(challenge, ['pixel']), [{ kind: 'sent', provider: 'apns', providerMessageId }]);
    }
    assert.deepEqual(await guard.smsSendOf(challenge, 'smpp', 'two  spaces'), { index: undefined, latest: 0 });
    // Claims written before the last word was always there.
    await redis.set(RedisKeys.smsSend(tag, nonce), 'sent twilio CA0123', 'PX', 60_000);
    assert.deepEqual(await guard.recorded(challenge), { kind: 'sent', provider: 'twilio', providerMessageId: 'CA0123' });
    await redis.set(RedisKeys.smsSend(tag, nonce), 'sent smpp 0A1B 2C3D 7', 'PX', 60_000);
    assert.deepEqual(await guard.recorded(challenge), { kind: 'sent', provider: 'smpp', providerMessageId: '0A1B 2C3D', seq: 7 });
    assert.deepEqual(await guard.smsSendOf(challenge, 'smpp', '0A1B 2C3D'), { index: 0, latest: 0 });
    await redis.set(RedisKeys.pushSend(tag, nonce, 'pixel'), 'sent fcm projects/p/messages/0:1', 'PX', 60_000);
    assert.deepEqual(await guard.recordedPushes(challenge, ['pixel', 'iphone']), [{ kind: 'sent', provider: 'fcm', providerMessageId: 'projects/p/messages/0:1' }, undefined]);
    // Read, not claimed: nothing taken.
    assert.equal(await guard.recorded(challenge, 2), undefined);
    assert.equal(await redis.exists(RedisKeys.smsSend(tag, nonce, 2), RedisKeys.pushSend(tag, nonce, 'iphone')), 0);
    await guard.claim(challenge, 10_000, 2);
    assert.deepEqual(await guard.recorded(challenge, 2), { kind: 'in_progress' });
  });

  itWith({ real: ['redis'] }, "claims a challenge's push per device in one round trip: a device pushed to stays so, the others can be claimed again", async () => {
    const challenge = await live();
    const [tag, nonce] = challenge.split('.') as [string, string];
    assert.deepEqual(await guard.claimPush(challenge, ['pixel', 'iphone'], 10_000), [{ kind: 'claimed' }, { kind: 'claimed' }]);
    await guard.pushSent(challenge, 'pixel', 'fcm', 'projects/p/messages/0:1', 60_000);
    await guard.releasePush(challenge, ['iphone']);
    assert.deepEqual(await guard.claimPush(challenge, ['pixel', 'iphone', 'tablet'], 10_000), [
      { kind: 'sent', provider: 'fcm', providerMessageId: 'projects/p/messages/0:1' },
      { kind: 'claimed' },
      { kind: 'claimed' },
    ]);
    assert.deepEqual(await guard.claimPush(challenge, ['tablet'], 10_000), [{ kind: 'in_progress' }]);
    assert.equal(await redis.get(RedisKeys.pushSend(tag, nonce, 'pixel')), 'sent fcm projects/p/messages/0:1 -');
    assert.equal(await guard.claim(challenge, 10_000).then((c) => c.kind), 'claimed', "an SMS claim is another one");
    assert.deepEqual(await guard.claimPush(challenge, [], 10_000), []);
  });

  itWith({ real: ['redis'] }, 'a challenge Redis no longer holds is not claimed, for an SMS, a call or a push; a send recorded before still answers as sent', async () => {
    const never = id();
    assert.deepEqual(await guard.claim(never, 10_000), { kind: 'gone' });
    assert.deepEqual(await guard.claim(never, 10_000, 1), { kind: 'gone' }, 'nor a resend of it');
    const [neverTag, neverNonce] = never.split('.') as [string, string];
    assert.equal(await redis.exists(RedisKeys.smsSend(neverTag, neverNonce)), 0, 'no claim left behind');

    const challenge = await live();
    const [tag, nonce] = challenge.split('.') as [string, string];
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'claimed' });
    await guard.sent(challenge, 'twilio', 'SM1', 60_000, { seq: 7 });
    await redis.del(RedisKeys.challenge(tag, nonce));
    assert.deepEqual(await guard.claim(challenge, 10_000), { kind: 'sent', provider: 'twilio', providerMessageId: 'SM1', seq: 7 }, 'the outcome is recorded again');

    // A push: a device pushed to before the loss answers as pushed; the others are not claimed.
    assert.deepEqual(await guard.claimPush(never, ['pixel'], 10_000), [{ kind: 'gone' }]);
    assert.equal(await redis.exists(RedisKeys.pushSend(neverTag, neverNonce, 'pixel')), 0, 'no push claim left behind');
    await guard.pushSent(challenge, 'pixel', 'fcm', 'projects/p/messages/0:7', 60_000);
    assert.deepEqual(await guard.claimPush(challenge, ['pixel', 'iphone'], 10_000), [
      { kind: 'sent', provider: 'fcm', providerMessageId: 'projects/p/messages/0:7' },
      { kind: 'gone' },
    ]);
  });

  itWith({ real: ['redis'] }, 'a push no device got no longer waits for the user; the marker of another push, and a push marker after an SMS or a call that failed, stay', async () => {
    const push = await live();
    const [tag, nonce] = push.split('.') as [string, string];
    const expiresAt = Date.now() + 60_000;
    // The pending push as auth-challenge's start writes it: `<challenge id>|<expires at>`.
    await redis.set(RedisKeys.pendingPush(tag), `${push}|${expiresAt}`, 'PX', 120_000);
    await guard.undeliverable(push, Date.now(), 'push');
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 0, 'the undelivered push no longer waits');
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), 'failed');
    assert.ok(Number(await redis.hget(RedisKeys.failedMethods(tag), 'push')) > Date.now(), 'push marked failed for the user');

    // A newer push of the same user started since: it still waits.
    const newer = challengeId(tag, randomBytes(16).toString('base64url').slice(0, 22));
    await redis.set(RedisKeys.pendingPush(tag), `${newer}|${expiresAt}`, 'PX', 120_000);
    await guard.undeliverable(push, Date.now(), 'push');
    assert.equal(await redis.get(RedisKeys.pendingPush(tag)), `${newer}|${expiresAt}`);
    // An SMS or a call that failed says nothing of the user's push.
    await guard.undeliverable(newer, Date.now(), 'sms', undefined, 7);
    await guard.undeliverable(newer, Date.now(), 'voice');
    assert.equal(await redis.get(RedisKeys.pendingPush(tag)), `${newer}|${expiresAt}`);
  });

  itWith({ real: ['redis'] }, 'a claim whose holder died ends by itself', async () => {
    const challenge = await live();
    assert.deepEqual(await guard.claim(challenge, 50), { kind: 'claimed' });
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(await guard.claim(challenge, 50), { kind: 'claimed' });
  });
});
