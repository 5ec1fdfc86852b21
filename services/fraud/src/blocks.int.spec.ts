import { after, before, describe } from 'node:test';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { EventSubjects, parseEvent, Streams, type EventOf, type FraudUserEvent } from '@mfa/contracts';
import { loadKeyring, userTag } from '@mfa/crypto';
import { connectNats, createEvent, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { challengeId, RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { createLogger } from '@mfa/telemetry';
import { defaultTenantSettings } from '@mfa/contracts';
import { itWith, tenantCreated, testEnv, testTenant, testUser, uniqueTenant, uniqueUser, userRegistered } from '@mfa/testing';
import { BlockEnds, blockEndOf } from './adapters/block-ends.js';
import { FraudLog } from './adapters/fraud-log.js';
import { UserDirectory } from './adapters/user-directory.js';
import { ChallengeDenial } from './adapters/challenge-denial.js';
import { BlocksService } from './application/blocks.service.js';
import { FraudAlertsService } from './application/fraud-alerts.service.js';

/** The fraud service's blocks against the real NATS and Redis: the record, the Redis projection, the automatic unblock. */
describe('fraud: blocks on the real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  const tenantId = uniqueTenant('fraud');
  let nats: NatsClients;
  let redis: Redis;
  let publisher: EventPublisher;
  let blocks: BlocksService;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'fraud-test' });
    for (const stream of [Streams.userSettings, Streams.fraud]) await ensureStream(nats.jsm, stream);
    redis = new Redis(testEnv.redisUrl);
    publisher = new EventPublisher(nats.js);
    blocks = new BlocksService(new FraudLog(nats.jsm, publisher), new UserDirectory(nats.jsm), new UserProjectionWriter(redis, keyring), nats, createLogger('fraud-test', { level: 'error' }));
    await publisher.publish(EventSubjects.tenant(tenantId), tenantCreated(testTenant({ tenantId })));
  });

  after(async () => {
    await nats.nc.drain();
    await redis.quit();
  });

  const register = async () => {
    const userId = uniqueUser('fraud');
    await publisher.publish(EventSubjects.user(tenantId, userId), userRegistered(testUser({ tenantId, userId })));
    return userId;
  };
  const history = async (userId: string) => {
    const out: Array<EventOf<'UserBlocked' | 'UserUnblocked'>> = [];
    for (let seq = 0; ; ) {
      const msg = await nats.jsm.direct.getMessage(Streams.fraud.name, { seq: seq + 1, next_by_subj: EventSubjects.fraudUser(tenantId, userId) });
      if (!msg) return out;
      seq = msg.seq;
      out.push(parseEvent(msg.json()) as EventOf<'UserBlocked' | 'UserUnblocked'>);
    }
  };
  const blockedKey = (userId: string) => RedisKeys.blocked(userTag(keyring, tenantId, userId));
  const DAY_MS = 86_400_000;
  /** A block recorded straight in the log (as one that ended while no fraud instance ran): not projected, nowhere in BlockEnds. */
  const recordBlock = async (userId: string, until: Date) => {
    const blocked = createEvent('UserBlocked', 1, {
      tenantId,
      aggregateId: userId,
      now: new Date(until.getTime() - 90 * DAY_MS),
      data: { userId, reason: 'fraud reported', until: until.toISOString(), source: 'fraud_report' },
    });
    await publisher.publish(EventSubjects.fraudUser(tenantId, userId), blocked);
  };

  itWith({ real: ['nats', 'redis'] }, 'records a block with reason and actor, projects it to expire at its end, and an unblock lifts it and the lockouts', async () => {
    const userId = await register();
    const now = new Date();
    const { blockedUntil } = await blocks.block({ tenantId, userId, reason: 'stolen phone' }, now, { clientId: 'client-1' });
    const until = Date.parse(blockedUntil);
    assert.equal(until, now.getTime() + 90 * 86_400_000);
    assert.equal(await redis.get(blockedKey(userId)), String(until));
    const expiresAt = await redis.call('PEXPIRETIME', blockedKey(userId));
    assert.equal(Number(expiresAt), until);
    const tag = userTag(keyring, tenantId, userId);
    await redis.set(RedisKeys.consecutiveFailures(tag), '7');
    await blocks.unblock({ tenantId, userId, reason: 'phone found' }, new Date(), { clientId: 'client-2' });
    assert.equal(await redis.exists(blockedKey(userId), RedisKeys.consecutiveFailures(tag)), 0);
    assert.deepEqual(
      (await history(userId)).map((e) => [e.type, e.data.reason, e.data.by?.clientId]),
      [['UserBlocked', 'stolen phone', 'client-1'], ['UserUnblocked', 'phone found', 'client-2']],
    );
  });

  itWith({ real: ['nats', 'redis'] }, 'records the automatic unblock of a block past its end, dated at that end, once', async () => {
    const userId = await register();
    const end = new Date(Date.now() - 5 * 60_000);
    // A block whose 90 days ended while no fraud instance ran.
    const ended = createEvent('UserBlocked', 1, {
      tenantId,
      aggregateId: userId,
      now: new Date(end.getTime() - 90 * 86_400_000),
      data: { userId, reason: 'fraud reported', until: end.toISOString(), source: 'fraud_report' },
    });
    await publisher.publish(EventSubjects.fraudUser(tenantId, userId), ended);
    assert.ok((await blocks.expireDue(new Date())) >= 1);
    assert.equal(await blocks.expireDue(new Date()), 0, 'recorded once');
    const [, unblocked] = await history(userId);
    assert.deepEqual([unblocked?.type, unblocked?.occurredAt, (unblocked as EventOf<'UserUnblocked'>).data.automatic], ['UserUnblocked', end.toISOString(), true]);
    // A block in force is left alone.
    const other = await register();
    await blocks.block({ tenantId, userId: other, reason: 'x' }, new Date());
    await blocks.expireDue(new Date());
    assert.equal((await history(other)).length, 1);
  });

  itWith({ real: ['nats', 'redis'] }, 'a replayed old unblock lifts no lockout counters set since', async () => {
    const userId = await register();
    const tag = userTag(keyring, tenantId, userId);
    await redis.set(RedisKeys.consecutiveFailures(tag), '4');
    const old = createEvent('UserUnblocked', 1, { tenantId, aggregateId: userId, now: new Date(Date.now() - 86_400_000), data: { userId, reason: 'long ago' } });
    await blocks.project(tenantId, [{ event: old, seq: 10 }]);
    assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '4');
    const fresh = createEvent('UserUnblocked', 1, { tenantId, aggregateId: userId, now: new Date(), data: { userId, reason: 'now' } });
    await blocks.project(tenantId, [{ event: fresh, seq: 11 }]);
    assert.equal(await redis.exists(RedisKeys.consecutiveFailures(tag)), 0);
  });

  itWith({ real: ['nats', 'redis'] }, "a user's block and unblock projected out of order (two instances, a retry after a back-off): the later one in the stream wins", async () => {
    const userId = await register();
    const tag = userTag(keyring, tenantId, userId);
    const at = (ms: number) => new Date(Date.now() + ms);
    const blocked = (seq: number) => ({ event: createEvent('UserBlocked', 1, { tenantId, aggregateId: userId, now: at(0), data: { userId, reason: 'fraud', source: 'admin', until: at(3_600_000).toISOString() } }) as FraudUserEvent, seq });
    const unblocked = (seq: number) => ({ event: createEvent('UserUnblocked', 1, { tenantId, aggregateId: userId, now: at(0), data: { userId, reason: 'cleared' } }) as FraudUserEvent, seq });
    // The unblock (later in the stream) first, then the block it lifted: the user stays unblocked.
    await blocks.project(tenantId, [unblocked(1_000_002)]);
    await blocks.project(tenantId, [blocked(1_000_001)]);
    assert.equal(await redis.exists(RedisKeys.blocked(tag)), 0, 'a late block does not come back after its unblock');
    // A new block, then the old unblock delivered again: the user stays blocked.
    await redis.set(RedisKeys.consecutiveFailures(tag), '3');
    await blocks.project(tenantId, [blocked(1_000_003)]);
    await blocks.project(tenantId, [unblocked(1_000_002)]);
    assert.equal(await redis.exists(RedisKeys.blocked(tag)), 1, 'a late unblock does not lift a later block');
    assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '3', 'nor the lockout counters');
  });

  itWith({ real: ['nats', 'redis'] }, 'refuses what cannot be done: unknown tenant or user, an erased user, a second block, an unblock of someone neither blocked nor locked', async () => {
    const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code);
    assert.equal(await code(blocks.block({ tenantId: uniqueTenant('none'), userId: 'u', reason: 'x' }, new Date())), 'not_found');
    assert.equal(await code(blocks.block({ tenantId, userId: uniqueUser('none'), reason: 'x' }, new Date())), 'not_found');
    const userId = await register();
    assert.equal(await code(blocks.unblock({ tenantId, userId, reason: 'x' }, new Date())), 'conflict');
    await blocks.block({ tenantId, userId, reason: 'x' }, new Date());
    assert.equal(await code(blocks.block({ tenantId, userId, reason: 'again' }, new Date())), 'conflict');
    const erased = await register();
    await publisher.publish(EventSubjects.user(tenantId, erased), createEvent('UserErased', 1, { tenantId, aggregateId: erased, now: new Date(), data: { userId: erased, gen: 1 } }));
    assert.equal(await code(blocks.block({ tenantId, userId: erased, reason: 'x' }, new Date())), 'not_found');
  });

  itWith({ real: ['redis'] }, 'a fraud report denies only a pending challenge before its expiry; a decided or expired one keeps its outcome', async () => {
    const denial = new ChallengeDenial(redis);
    const userId = uniqueUser('fraud');
    const tag = userTag(keyring, tenantId, userId);
    const now = Date.now();
    const challenge = async (nonce: string, fields: Record<string, string | number>) => {
      await redis.hset(RedisKeys.challenge(tag, nonce), { tenantId, userId, method: 'push', status: 'pending', ip: '192.0.2.1', app: 'VPN', ...fields });
      await redis.pexpire(RedisKeys.challenge(tag, nonce), 60_000);
    };
    await challenge('live', { expiresAt: now + 30_000 });
    await challenge('expired', { expiresAt: now - 1 });
    await challenge('approved', { expiresAt: now + 30_000, status: 'approved' });
    const origin = { clientIp: '192.0.2.1', application: 'VPN' };
    // The push its user waits on (auth-challenge's marker): denied, it no longer holds back the next push.
    await redis.set(RedisKeys.pendingPush(tag), `${challengeId(tag, 'live')}|${now + 30_000}`, 'PX', 60_000);
    assert.deepEqual(await denial.denyPending(tag, 'live', tenantId, userId, new Date(now)), { kind: 'denied', method: 'push', origin, recorded: false });
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 0, 'the pending push marker is gone');
    // Denied by a report first, before its alert was recorded: its ChallengeFraudReported is still to publish.
    assert.deepEqual(await denial.denyPending(tag, 'live', tenantId, userId, new Date(now)), { kind: 'already', method: 'push', origin, recorded: false });
    // Denied by a report of an older release (no alert named, nothing pending): that report published its outcome itself.
    await challenge('legacy', { expiresAt: now + 30_000, status: 'denied', reason: 'fraud_reported' });
    assert.deepEqual(await denial.denyPending(tag, 'legacy', tenantId, userId, new Date(now)), { kind: 'already', method: 'push', origin, recorded: true });
    // Another push of the user waits: denying this one leaves that one's marker.
    await challenge('other', { expiresAt: now + 30_000 });
    await redis.set(RedisKeys.pendingPush(tag), `${challengeId(tag, 'newer')}|${now + 30_000}`, 'PX', 60_000);
    assert.deepEqual(await denial.denyPending(tag, 'other', tenantId, userId, new Date(now)), { kind: 'denied', method: 'push', origin, recorded: false });
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 1, "another push's marker stays");
    assert.deepEqual(await denial.denyPending(tag, 'expired', tenantId, userId, new Date(now)), { kind: 'completed', status: 'expired', origin });
    assert.equal(await redis.hget(RedisKeys.challenge(tag, 'expired'), 'status'), 'pending', 'an expired challenge is not rewritten to a fraud denial');
    assert.deepEqual(await denial.denyPending(tag, 'approved', tenantId, userId, new Date(now)), { kind: 'completed', status: 'approved', origin });
    assert.deepEqual(await denial.denyPending(tag, 'live', tenantId, uniqueUser('other'), new Date(now)), { kind: 'not_found' });
  });

  itWith({ real: ['nats', 'redis'] }, "the app's report on a push another device answered first is refused before anyone is blocked; an IdP's report after the fact still blocks", async () => {
    const alerts = new FraudAlertsService(blocks, new ChallengeDenial(redis), publisher, keyring, { name: 't', ip: '127.0.0.1' }, false);
    const userId = await register();
    const tag = userTag(keyring, tenantId, userId);
    const nonce = randomBytes(16).toString('base64url').slice(0, 22);
    await redis.hset(RedisKeys.challenge(tag, nonce), { tenantId, userId, method: 'push', status: 'approved', expiresAt: Date.now() + 30_000 });
    await redis.pexpire(RedisKeys.challenge(tag, nonce), 60_000);
    const id = challengeId(tag, nonce);
    await assert.rejects(alerts.report({ tenantId, userId, challengeId: id, source: 'app' }, new Date()), (e: { code?: string }) => e.code === 'conflict');
    assert.equal(await redis.exists(blockedKey(userId)), 0, 'blocked for a refused report');
    assert.equal((await history(userId)).length, 0);
    const after = await alerts.report({ tenantId, userId, challengeId: id, source: 'idp' }, new Date());
    assert.equal(after.blocked, true);
    assert.equal(await redis.hget(RedisKeys.challenge(tag, nonce), 'status'), 'approved', 'the outcome stays');
  });

  itWith({ real: ['nats', 'redis'] }, 'without an SMTP server in production, refuses a fraud report that should be mailed, and takes one that should not', async () => {
    const noSmtp = new FraudAlertsService(blocks, new ChallengeDenial(redis), publisher, keyring, { name: 't', ip: '127.0.0.1' }, false);
    const mailed = uniqueTenant('mailed');
    await publisher.publish(EventSubjects.tenant(mailed), tenantCreated(testTenant({ tenantId: mailed, settings: { ...defaultTenantSettings(), notificationEmails: ['soc@contoso.example'] } })));
    const userId = uniqueUser('fraud');
    await publisher.publish(EventSubjects.user(mailed, userId), userRegistered(testUser({ tenantId: mailed, userId })));
    await assert.rejects(noSmtp.report({ tenantId: mailed, userId, source: 'idp' }, new Date()), (e: { code?: string; message?: string }) =>
      e.code === 'unavailable' && /SMTP_URL/.test(e.message ?? ''));
    const quiet = await register();
    assert.equal((await noSmtp.report({ tenantId, userId: quiet, source: 'idp' }, new Date())).blocked, true);
  });
  itWith({ real: ['nats', 'redis'] }, "a block's automatic unblock lifts no lockout (the cap on wrong codes in a row, the window's lockout); an administrator's unblock does", async () => {
    const userId = await register();
    const tag = userTag(keyring, tenantId, userId);
    const lockouts = async () => [await redis.get(RedisKeys.failures(tag)), await redis.get(RedisKeys.consecutiveFailures(tag))];
    await redis.set(RedisKeys.failures(tag), '3', 'PX', 600_000);
    await redis.set(RedisKeys.consecutiveFailures(tag), '42');
    // The pass records the block's end a minute after it (news, as the projection sees it).
    await recordBlock(userId, new Date(Date.now() - 60_000));
    assert.ok((await blocks.expireDue(new Date())) >= 1);
    const [, ended] = await history(userId);
    assert.equal((ended as EventOf<'UserUnblocked'>).data.automatic, true);
    assert.deepEqual(await lockouts(), ['3', '42'], 'still locked after the automatic unblock');
    // The block projector delivering it again changes nothing either.
    const last = await nats.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudUser(tenantId, userId) });
    await redis.del(RedisKeys.blockedSeq(tag));
    await blocks.project(tenantId, [{ event: ended as FraudUserEvent, seq: last!.seq }]);
    assert.deepEqual(await lockouts(), ['3', '42']);
    await blocks.unblock({ tenantId, userId, reason: 'help desk checked the user' }, new Date());
    assert.deepEqual(await lockouts(), [null, null], "the administrator's unblock lifts both");
  });

  itWith({ real: ['nats', 'redis'] }, "a block after one that ended, before the pass recorded its end, keeps the end in the history: the automatic unblock first, dated at that end", async () => {
    const userId = await register();
    const end = new Date(Date.now() - 3_600_000);
    await recordBlock(userId, end);
    const now = new Date();
    const { blockedUntil } = await blocks.block({ tenantId, userId, reason: 'stolen phone' }, now, { clientId: 'client-1' });
    assert.equal(blockedUntil, new Date(now.getTime() + 90 * DAY_MS).toISOString(), 'the reply names the new block');
    assert.deepEqual(
      (await history(userId)).map((e) => [e.type, e.occurredAt, e.type === 'UserUnblocked' ? e.data.automatic : e.data.reason]),
      [
        ['UserBlocked', new Date(end.getTime() - 90 * DAY_MS).toISOString(), 'fraud reported'],
        ['UserUnblocked', end.toISOString(), true],
        ['UserBlocked', now.toISOString(), 'stolen phone'],
      ],
    );
    assert.equal(await redis.get(blockedKey(userId)), String(Date.parse(blockedUntil)), 'blocked in Redis');
    // A fraud report's auto-block keeps it the same way.
    const reported = await register();
    await recordBlock(reported, end);
    const alerts = new FraudAlertsService(blocks, new ChallengeDenial(redis), publisher, keyring, { name: 't', ip: '127.0.0.1' }, true);
    assert.equal((await alerts.report({ tenantId, userId: reported, source: 'idp' }, new Date())).blocked, true);
    assert.deepEqual((await history(reported)).map((e) => e.type), ['UserBlocked', 'UserUnblocked', 'UserBlocked']);
    assert.equal((await history(reported))[1]!.occurredAt, end.toISOString());
  });

  itWith({ real: ['nats', 'redis'] }, "the automatic unblock's pass reads the blocks due (BlockEnds), not every user ever blocked, and fills BlockEnds from the log when it is missing", async () => {
    const ends = new BlockEnds(redis);
    const tracked = new BlocksService(new FraudLog(nats.jsm, publisher), new UserDirectory(nats.jsm), new UserProjectionWriter(redis, keyring), nats, createLogger('fraud-test', { level: 'error' }), ends);
    // BlockEnds complete (filled from the log, as a first pass does).
    await tracked.expireDue(new Date());
    assert.equal(await ends.built(), true);
    // A block that ended, recorded in the log alone: the pass does not read that user's subject.
    const unseen = await register();
    await recordBlock(unseen, new Date(Date.now() - 60_000));
    // A block made through the service (91 days ago: it ended yesterday) is in BlockEnds.
    const seen = await register();
    await tracked.block({ tenantId, userId: seen, reason: 'lost phone' }, new Date(Date.now() - 91 * DAY_MS));
    const inForce = await register();
    await tracked.block({ tenantId, userId: inForce, reason: 'stolen phone' }, new Date());
    await tracked.expireDue(new Date());
    assert.deepEqual((await history(seen)).map((e) => e.type), ['UserBlocked', 'UserUnblocked'], 'the block due is recorded as ended');
    assert.equal((await history(unseen)).length, 1, 'a user absent from BlockEnds is not read');
    assert.equal((await history(inForce)).length, 1, 'a block in force is left alone');
    const endOf = (userId: string) => redis.zscore(blockEndOf(tenantId, userId).key, blockEndOf(tenantId, userId).member);
    assert.equal(await endOf(seen), null, 'the ended block leaves BlockEnds');
    assert.ok(Number(await endOf(inForce)) > Date.now(), 'the block in force stays');
    const pttl = await redis.pttl(blockEndOf(tenantId, inForce).key);
    assert.ok(pttl > 90 * DAY_MS && pttl <= 91 * DAY_MS, 'BlockEnds expires, after every block it holds');
    // A shard lost (a Redis that lost its data): the next pass fills them from the log, and finds the other one.
    await redis.zrem(blockEndOf(tenantId, unseen).key, '*');
    assert.equal(await ends.built(), false);
    await tracked.expireDue(new Date());
    assert.deepEqual((await history(unseen)).map((e) => e.type), ['UserBlocked', 'UserUnblocked']);
    assert.equal(await ends.built(), true);
  });
});
