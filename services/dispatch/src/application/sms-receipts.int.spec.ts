import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import twilio from 'twilio';
import { EventSubjects, Streams } from '@mfa/contracts';
import { connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { challengeId, RedisKeys } from '@mfa/projection';
import { createLogger } from '@mfa/telemetry';
import { itWith, testEnv } from '@mfa/testing';
import { SendGuard } from '../adapters/send-guard.js';
import { SmsReceiptsService } from './sms-receipts.service.js';

const authToken = randomBytes(16).toString('hex');
const base = 'https://mfa.example.com/hooks';

/** Twilio's receipts against the real Redis and NATS: which of a challenge's sends they speak of. */
describe('SMS receipts of a challenge with resends (real Redis and NATS)', () => {
  let nats: NatsClients;
  let redis: Redis;
  let guard: SendGuard;
  let receipts: SmsReceiptsService;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'sms-receipts-test', connectTimeoutMs: 5_000 });
    await ensureStream(nats.jsm, Streams.dispatch);
    redis = new Redis(testEnv.redisUrl);
    guard = new SendGuard(redis);
    receipts = new SmsReceiptsService({
      authToken,
      tenantOf: (id) => guard.tenantOf(id),
      routes: { find: async () => undefined },
      publisher: new EventPublisher(nats.js),
      guard,
      log: createLogger('sms-receipts-test', { level: 'error' }),
    });
  });

  after(async () => {
    await nats.nc.drain();
    await redis.quit();
  });

  const live = async () => {
    const tag = randomBytes(16).toString('base64url').slice(0, 22);
    const nonce = randomBytes(16).toString('base64url').slice(0, 22);
    await redis.hset(RedisKeys.challenge(tag, nonce), { tenantId: 'contoso', status: 'pending' });
    await redis.pexpire(RedisKeys.challenge(tag, nonce), 60_000);
    return { id: challengeId(tag, nonce), tag, nonce };
  };
  const receipt = (id: string, params: Record<string, string>) => {
    const url = `${base}/sms/status/${encodeURIComponent(id)}`;
    return receipts.receipt({ challengeId: id, url, signature: twilio.getExpectedTwilioSignature(authToken, url, params), params });
  };

  itWith({ real: ['nats', 'redis'] }, 'a late receipt of the SMS a resend replaced is not recorded and leaves the challenge as it is; one of the latest send fails it', async () => {
    const { id, tag, nonce } = await live();
    await guard.claim(id, 10_000);
    await guard.sent(id, 'twilio', 'SM-first', 60_000, { seq: 1 });
    // auth-challenge accepts the resend; dispatch is still sending it when the first SMS's late
    // receipt comes: the user will hold the resent code.
    const recorded: string[] = [];
    const sub = nats.nc.subscribe(EventSubjects.smsReceipt, {
      callback: (_error, msg) => {
        const data = (msg.json() as { data: { challengeId: string; providerMessageId: string; status: string } }).data;
        if (data.challengeId === id) recorded.push(`${data.providerMessageId} ${data.status}`);
      },
    });
    await nats.nc.flush();
    await redis.hset(RedisKeys.challenge(tag, nonce), 'resends', 1);
    await guard.claim(id, 10_000, 1);
    assert.deepEqual(await receipt(id, { MessageSid: 'SM-first', MessageStatus: 'undelivered', ErrorCode: '30005' }), { status: 204 });
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), null, 'failed by the replaced SMS while its resend was sent');
    await guard.sent(id, 'twilio', 'SM-resend', 60_000, { seq: 1, resend: 1 });
    assert.deepEqual(await receipt(id, { MessageSid: 'SM-resend', MessageStatus: 'delivered' }), { status: 204 });
    assert.deepEqual(await receipt(id, { MessageSid: 'SM-first', MessageStatus: 'undelivered', ErrorCode: '30005' }), { status: 204 });
    // A late `delivered` of the replaced SMS does not become the report's delivery either.
    assert.deepEqual(await receipt(id, { MessageSid: 'SM-first', MessageStatus: 'delivered' }), { status: 204 });
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), null, 'the challenge failed by the replaced SMS');
    assert.equal(await redis.hget(RedisKeys.failedMethods(tag), 'sms'), null, 'SMS marked failed for the user');

    assert.deepEqual(await receipt(id, { MessageSid: 'SM-resend', MessageStatus: 'undelivered', ErrorCode: '30005' }), { status: 204 });
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), 'failed');
    assert.ok(await redis.hget(RedisKeys.failedMethods(tag), 'sms'));
    await nats.nc.flush();
    sub.unsubscribe();
    assert.deepEqual(recorded, ['SM-resend delivered', 'SM-resend undelivered'], 'only the latest send\'s receipts are recorded');
  });

  itWith({ real: ['nats', 'redis'] }, 'without a resend, an undelivered receipt of the start\'s SMS fails the challenge', async () => {
    const { id, tag, nonce } = await live();
    await guard.claim(id, 10_000);
    await guard.sent(id, 'twilio', 'SM-only', 60_000, { seq: 1 });
    assert.deepEqual(await receipt(id, { MessageSid: 'SM-only', MessageStatus: 'failed' }), { status: 204 });
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), 'failed');
  });

  itWith({ real: ['nats', 'redis'] }, 'a late undelivered receipt of a challenge already approved, expired, or gone from Redis is recorded but leaves the user\'s SMS alone', async () => {
    const approved = await live();
    await redis.hset(RedisKeys.challenge(approved.tag, approved.nonce), { status: 'approved', expiresAt: Date.now() + 60_000 });
    const expired = await live();
    await redis.hset(RedisKeys.challenge(expired.tag, expired.nonce), { expiresAt: Date.now() - 1_000 });
    for (const { id } of [approved, expired]) {
      await guard.claim(id, 10_000);
      await guard.sent(id, 'twilio', `SM-${id}`, 60_000, { seq: 1 });
      assert.deepEqual(await receipt(id, { MessageSid: `SM-${id}`, MessageStatus: 'undelivered', ErrorCode: '30008' }), { status: 204 });
    }
    // An SMSC's receipt names only its message id: its route outlives the challenge (a day).
    const gone = { ...(await live()) };
    await redis.del(RedisKeys.challenge(gone.tag, gone.nonce));
    const smsc = new SmsReceiptsService({
      authToken,
      tenantOf: (id) => guard.tenantOf(id),
      routes: { find: async () => ({ tenantId: 'contoso', challengeId: gone.id }) },
      publisher: new EventPublisher(nats.js),
      guard,
      log: createLogger('sms-receipts-test', { level: 'error' }),
    });
    await smsc.reported({ provider: 'smpp', providerMessageId: 'late-1', status: 'undelivered', errorCode: '001' });
    for (const { tag, nonce } of [approved, expired, gone]) {
      assert.equal(await redis.hget(RedisKeys.failedMethods(tag), 'sms'), null, 'SMS marked failed for the user by a receipt of a finished challenge');
      assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'delivery'), null);
    }
    // The same receipt while the challenge is open marks it, as before.
    const open = await live();
    await redis.hset(RedisKeys.challenge(open.tag, open.nonce), { expiresAt: Date.now() + 60_000 });
    await guard.claim(open.id, 10_000);
    await guard.sent(open.id, 'twilio', 'SM-open', 60_000, { seq: 1 });
    await receipt(open.id, { MessageSid: 'SM-open', MessageStatus: 'undelivered', ErrorCode: '30008' });
    assert.equal(await redis.hget(RedisKeys.challenge(open.tag, open.nonce), 'delivery'), 'failed');
    assert.ok(await redis.hget(RedisKeys.failedMethods(open.tag), 'sms'));
  });
});

