import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import twilio from 'twilio';
import { EventSubjects, Streams } from '@mfa/contracts';
import { connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { challengeId, RedisKeys } from '@mfa/projection';
import { createLogger, registry } from '@mfa/telemetry';
import { itWith, testEnv } from '@mfa/testing';
import { ReceiptRoutes } from '../adapters/receipt-routes.js';
import { SendGuard } from '../adapters/send-guard.js';
import { submitWindow } from '../adapters/sms/smpp/smpp-protocol.js';
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
      routes: { find: async () => ({ kind: 'route' as const, route: { tenantId: 'contoso', challengeId: gone.id }, sentAt: undefined }) },
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

  /** The receipts recorded (SmsDeliveryReported) while `body` runs, as `<challenge> <status>`. */
  const recordedDuring = async (body: () => Promise<void>): Promise<string[]> => {
    const recorded: string[] = [];
    const sub = nats.nc.subscribe(EventSubjects.smsReceipt, {
      callback: (_error, msg) => {
        const { tenantId, data } = msg.json() as { tenantId: string; data: { challengeId: string; status: string } };
        recorded.push(`${tenantId} ${data.challengeId} ${data.status}`);
      },
    });
    await nats.nc.flush();
    try {
      await body();
      await nats.nc.flush();
    } finally {
      sub.unsubscribe();
    }
    return recorded;
  };
  const counted = async (status: string) =>
    (await registry.getSingleMetric('mfa_sms_receipts_total')?.get())?.values.find((v) => v.labels.provider === 'smpp' && v.labels.status === status)?.value ?? 0;
  /** The receipt text's submit date of `at` on an SMSC whose clock is `offsetHours` from UTC. */
  const submitDate = (at: number, offsetHours = 0) => new Date(at + offsetHours * 3600_000).toISOString().replace(/\D/g, '').slice(2, 12);

  itWith({ real: ['nats', 'redis'] }, 'an SMSC that gave one message id to SMS of two tenants\' challenges: its receipts are recorded for neither, not for the latest', async () => {
    const routes = new ReceiptRoutes(redis);
    const smsc = new SmsReceiptsService({ authToken, tenantOf: (id) => guard.tenantOf(id), routes, publisher: new EventPublisher(nats.js), guard, log: createLogger('sms-receipts-test', { level: 'error' }) });
    const first = await live();
    const second = await live();
    await redis.hset(RedisKeys.challenge(second.tag, second.nonce), { tenantId: 'fabrikam', expiresAt: Date.now() + 60_000 });
    const messageId = `reused-${randomBytes(4).toString('hex')}`;
    const now = Date.now();
    const submitted = submitWindow(submitDate(now));
    const ambiguous = await counted('ambiguous');
    let reused: boolean | undefined;
    const recorded = await recordedDuring(async () => {
      assert.deepEqual(await routes.remember('smpp', messageId, { tenantId: 'contoso', challengeId: first.id }, now), { reused: false });
      await smsc.reported({ provider: 'smpp', providerMessageId: messageId, status: 'delivered', submitted });
      // The SMSC gives the id again (its counter wrapped): the first SMS's late receipts must not become the second's.
      reused = (await routes.remember('smpp', messageId, { tenantId: 'fabrikam', challengeId: second.id }, now)).reused;
      await smsc.reported({ provider: 'smpp', providerMessageId: messageId, status: 'undelivered', errorCode: '001', submitted });
    });
    assert.deepEqual(recorded, [`contoso ${first.id} delivered`], 'only the receipt that came while the id named one SMS');
    assert.equal(reused, true);
    assert.equal(await counted('ambiguous'), ambiguous + 1);
    assert.equal(await redis.hget(RedisKeys.challenge(second.tag, second.nonce), 'delivery'), null, "another tenant's SMS failed by the first SMS's receipt");
    assert.equal(await redis.hget(RedisKeys.failedMethods(second.tag), 'sms'), null);
  });

  itWith({ real: ['nats', 'redis'] }, "a receipt whose submit date no time zone makes its route's is of an earlier SMS under the same id: not recorded; the SMSC's local time in any zone is", async () => {
    const routes = new ReceiptRoutes(redis);
    const smsc = new SmsReceiptsService({ authToken, tenantOf: (id) => guard.tenantOf(id), routes, publisher: new EventPublisher(nats.js), guard, log: createLogger('sms-receipts-test', { level: 'error' }) });
    const now = Date.now();
    const sends = await Promise.all([-12, 0, 5.75, 14, 'stale' as const].map(async (zone) => ({ zone, challenge: await live(), messageId: `msg-${randomBytes(6).toString('hex')}` })));
    const mismatched = await counted('mismatched');
    const recorded = await recordedDuring(async () => {
      for (const { zone, challenge, messageId } of sends) {
        await routes.remember('smpp', messageId, { tenantId: 'contoso', challengeId: challenge.id }, now);
        // The earlier SMS under this id was sent 30 hours before (its route expired): its receipt comes late.
        const date = zone === 'stale' ? submitDate(now - 30 * 3600_000) : submitDate(now, zone);
        await smsc.reported({ provider: 'smpp', providerMessageId: messageId, status: 'undelivered', submitted: submitWindow(date) });
      }
    });
    assert.deepEqual(recorded.sort(), sends.filter((s) => s.zone !== 'stale').map((s) => `contoso ${s.challenge.id} undelivered`).sort());
    assert.equal(await counted('mismatched'), mismatched + 1);
    const stale = sends.find((s) => s.zone === 'stale')!.challenge;
    assert.equal(await redis.hget(RedisKeys.challenge(stale.tag, stale.nonce), 'delivery'), null);
  });
});
