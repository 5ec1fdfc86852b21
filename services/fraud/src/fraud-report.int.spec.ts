import { after, before, describe } from 'node:test';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { EventSubjects, InternalSubjects, parseEvent, Streams, type AnyEvent, type EventOf, type FraudReportReply } from '@mfa/contracts';
import { loadKeyring, userTag } from '@mfa/crypto';
import { connectNats, ensureStream, EventPublisher, readOnce, type NatsClients } from '@mfa/messaging';
import { challengeId, deviceId as formatDeviceId, RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { InternalRequests, runService, type RunningService } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { eventually, itWith, tenantCreated, testEnv, testTenant, testUser, uniqueTenant, uniqueUser, userRegistered } from '@mfa/testing';
import { ChallengeDenial, fraudReportsKey } from './adapters/challenge-denial.js';
import { FraudLog } from './adapters/fraud-log.js';
import { UserDirectory } from './adapters/user-directory.js';
import { FraudAlertsController } from './api/fraud-alerts.controller.js';
import { AppModule } from './app.module.js';
import { BlocksService } from './application/blocks.service.js';
import { FRAUD_REPORTS_PER_WINDOW, FraudAlertsService } from './application/fraud-alerts.service.js';
import { loadFraudConfig } from './config.js';

/** fraud.report against the real NATS and Redis: the alert recorded first and completed from it, once; the limit per user; push fatigue. */
describe('fraud: reports on the real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  const tenantId = uniqueTenant('report');
  const server = { name: 'fraud-test', ip: '127.0.0.1' };
  const log = createLogger('fraud-test', { level: 'error' });
  let nats: NatsClients;
  let redis: Redis;
  let publisher: EventPublisher;
  let blocks: BlocksService;
  let alerts: FraudAlertsService;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'fraud-report-test' });
    for (const stream of [Streams.userSettings, Streams.fraud, Streams.challenges]) await ensureStream(nats.jsm, stream);
    redis = new Redis(testEnv.redisUrl);
    publisher = new EventPublisher(nats.js);
    blocks = new BlocksService(new FraudLog(nats.jsm, publisher), new UserDirectory(nats.jsm), new UserProjectionWriter(redis, keyring), nats, log);
    alerts = new FraudAlertsService(blocks, new ChallengeDenial(redis), publisher, keyring, server, true);
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
  /** A challenge as auth-challenge's start script leaves it (a push also the user's pending push). */
  const startChallenge = async (userId: string, method: 'push' | 'sms' = 'push', status = 'pending') => {
    const tag = userTag(keyring, tenantId, userId);
    const nonce = randomBytes(16).toString('base64url').slice(0, 22);
    const expiresAt = Date.now() + 120_000;
    await redis.hset(RedisKeys.challenge(tag, nonce), { tenantId, userId, method, status, ip: '192.0.2.7', app: 'VPN', expiresAt });
    await redis.pexpire(RedisKeys.challenge(tag, nonce), 600_000);
    if (method === 'push') await redis.set(RedisKeys.pendingPush(tag), `${challengeId(tag, nonce)}|${expiresAt}`, 'PX', 600_000);
    return { tag, nonce, id: challengeId(tag, nonce) };
  };
  const eventsOn = async (subject: string, filter: (event: AnyEvent) => boolean = () => true) => {
    const out: Array<{ event: AnyEvent; seq: number }> = [];
    await readOnce(nats.js, subject.startsWith('mfa.evt.challenge.') ? Streams.challenges.name : Streams.fraud.name, subject, { policy: 'all' }, (msg) => {
      const event = parseEvent(msg.json());
      if (filter(event)) out.push({ event, seq: msg.seq });
    });
    return out;
  };
  const history = async (userId: string) => (await eventsOn(EventSubjects.fraudUser(tenantId, userId))).map((e) => e.event as EventOf<'UserBlocked' | 'UserUnblocked'>);
  const alertsOf = async (userId: string) => eventsOn(EventSubjects.fraudAlert(tenantId, userId)) as Promise<Array<{ event: EventOf<'FraudReported'>; seq: number }>>;
  const fraudReportedOf = async (id: string) => eventsOn(EventSubjects.challengeFraudReported, (e) => e.type === 'ChallengeFraudReported' && e.data.challengeId === id);
  const statusOf = async (c: { tag: string; nonce: string }) => redis.hmget(RedisKeys.challenge(c.tag, c.nonce), 'status', 'reason');
  const blockedKey = (userId: string) => RedisKeys.blocked(userTag(keyring, tenantId, userId));

  itWith({ real: ['nats', 'redis'] }, 'a report that fails after recording its alert is completed from the alert: the challenge denied, the user blocked and ChallengeFraudReported published, each once however often', async () => {
    // Redis goes away right after the report denied the challenge (first, before recording its
    // alert), as a crash would leave it: the report completes nothing more itself.
    let redisDown = false;
    class FlakyDenial extends ChallengeDenial {
      override async denyPending(...args: Parameters<ChallengeDenial['denyPending']>) {
        if (redisDown) throw Object.assign(new Error('Connection is closed.'), { name: 'ConnectionError' });
        const denial = await super.denyPending(...args);
        redisDown = true;
        return denial;
      }
    }
    const failing = new FraudAlertsService(blocks, new FlakyDenial(redis), publisher, keyring, server, true);
    const userId = await register();
    const challenge = await startChallenge(userId);
    const reply = await failing.report({ tenantId, userId, challengeId: challenge.id, source: 'phone', comment: 'not me' }, new Date());
    assert.equal(reply.challengeDenied, true);
    assert.equal(reply.blocked, true);
    // The challenge is denied (first) and the alert recorded, with what it does; nothing more is done yet.
    const [recorded, ...more] = await alertsOf(userId);
    assert.ok(recorded, 'the alert is recorded');
    assert.equal(more.length, 0);
    assert.deepEqual([recorded.event.data.alertId, recorded.event.data.challengeDenied, recorded.event.data.blockedUntil], [reply.alertId, true, reply.blockedUntil]);
    assert.deepEqual(await statusOf(challenge), ['denied', 'fraud_reported']);
    assert.equal(await redis.exists(blockedKey(userId)), 0);
    assert.equal((await fraudReportedOf(challenge.id)).length, 0);

    // The alerts consumer's delivery (and every redelivery) completes it, once.
    for (let delivery = 1; delivery <= 3; delivery++) await alerts.complete(recorded.event, recorded.seq);
    assert.deepEqual(await statusOf(challenge), ['denied', 'fraud_reported']);
    assert.equal(await redis.exists(RedisKeys.pendingPush(challenge.tag)), 0, 'the push no longer waits');
    assert.equal(await redis.get(blockedKey(userId)), String(Date.parse(reply.blockedUntil!)));
    assert.deepEqual(
      (await history(userId)).map((e) => [e.type, e.type === 'UserBlocked' ? e.data.alertId : undefined, e.type === 'UserBlocked' ? e.data.until : undefined]),
      [['UserBlocked', reply.alertId, reply.blockedUntil]],
    );
    const denied = await fraudReportedOf(challenge.id);
    assert.equal(denied.length, 1, 'ChallengeFraudReported once');
    assert.deepEqual([denied[0]!.event.occurredAt, (denied[0]!.event as EventOf<'ChallengeFraudReported'>).data.alertId], [recorded.event.occurredAt, reply.alertId]);
    // The caller tries again after all: the same answer, nothing more.
    redisDown = false;
    assert.deepEqual(await alerts.report({ tenantId, userId, challengeId: challenge.id, source: 'phone', comment: 'not me' }, new Date()), reply);
    assert.equal((await alertsOf(userId)).length, 1);
    assert.equal((await history(userId)).length, 1);
  });

  /**
   * A report whose alert is recorded but not completed (Redis gone once the alert is recorded, as
   * when the instance dies): the alerts consumer's to complete, and nothing names the alert on the challenge.
   */
  const reportNotCompleted = async (userId: string, challenge: { id: string }) => {
    class DownOnceRecorded extends ChallengeDenial {
      override async denyPending(...args: Parameters<ChallengeDenial['denyPending']>) {
        if (args[5] !== undefined) throw Object.assign(new Error('Connection is closed.'), { name: 'ConnectionError' });
        return super.denyPending(...args);
      }
    }
    const reply = await new FraudAlertsService(blocks, new DownOnceRecorded(redis), publisher, keyring, server, true).report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date());
    const [recorded] = await alertsOf(userId);
    assert.equal(recorded?.event.data.alertId, reply.alertId, 'the alert is recorded');
    return { reply, recorded: recorded! };
  };

  itWith({ real: ['nats', 'redis'] }, "an administrator's unblock between a fraud alert and its completion: one that only cleared a lockout leaves the alert's block to come; one that lifted a block has the last word", async () => {
    // Not blocked when reporting, locked out after wrong codes: the help desk clears the lockout
    // before the alert is completed. The user reported fraud: the block still comes.
    const userId = await register();
    await redis.set(RedisKeys.failures(userTag(keyring, tenantId, userId)), '5', 'PX', 600_000);
    const { reply, recorded } = await reportNotCompleted(userId, await startChallenge(userId));
    assert.equal(await redis.exists(blockedKey(userId)), 0, 'not blocked yet');
    await blocks.unblock({ tenantId, userId, reason: 'locked out, called the help desk' }, new Date(), { clientId: 'admin' });
    await alerts.complete(recorded.event, recorded.seq);
    assert.equal(await redis.get(blockedKey(userId)), String(Date.parse(reply.blockedUntil!)), 'blocked by the alert after the lockout-only unblock');
    assert.deepEqual((await history(userId)).map((e) => [e.type, e.type === 'UserBlocked' ? e.data.alertId : undefined]), [['UserUnblocked', undefined], ['UserBlocked', reply.alertId]]);
    await alerts.complete(recorded.event, recorded.seq);
    assert.equal((await history(userId)).length, 2, 'once');

    // Blocked when reporting (the alert records that block), unblocked by an administrator before
    // the alert is completed: no stale block comes back.
    const blockedFirst = await register();
    await blocks.block({ tenantId, userId: blockedFirst, reason: 'stolen phone' }, new Date(), { clientId: 'admin' });
    const stale = await reportNotCompleted(blockedFirst, await startChallenge(blockedFirst));
    assert.equal(stale.reply.blocked, true);
    await blocks.unblock({ tenantId, userId: blockedFirst, reason: 'phone found' }, new Date(), { clientId: 'admin' });
    await alerts.complete(stale.recorded.event, stale.recorded.seq);
    assert.equal(await redis.exists(blockedKey(blockedFirst)), 0, 'the unblock stands');
    assert.deepEqual((await history(blockedFirst)).map((e) => e.type), ['UserBlocked', 'UserUnblocked']);
  });

  itWith({ real: ['nats', 'redis'] }, "a report sent again past the stream's de-duplication window, its alert never completed, finds that alert: no second copy, the same answer, completed once", async () => {
    // Past MFA_FRAUD's duplicate window (2 minutes) the server no longer knows the alert's
    // Nats-Msg-Id: a publish of it then stores another copy, as this publisher's does at once.
    class PastDuplicateWindow extends EventPublisher {
      override async publish(...args: Parameters<EventPublisher['publish']>) {
        if (args[1].type !== 'FraudReported') return super.publish(...args);
        return nats.js.publish(args[0], JSON.stringify(args[1]));
      }
    }
    const later = new FraudAlertsService(blocks, new ChallengeDenial(redis), new PastDuplicateWindow(nats.js), keyring, server, true);
    // A challenge still waiting (denied by the report), and one that had ended (reported after the fact).
    for (const status of ['pending', 'approved']) {
      const userId = await register();
      const challenge = await startChallenge(userId, 'sms', status);
      const { reply, recorded } = await reportNotCompleted(userId, challenge);
      // Another alert of the user's in between: the copy recorded first is still found.
      await alerts.report({ tenantId, userId, source: 'idp', comment: 'another sign-in' }, new Date());
      const again = await later.report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date());
      assert.deepEqual(again, reply, `${status}: answers the same`);
      const copies = (await alertsOf(userId)).filter((a) => a.event.data.alertId === reply.alertId);
      assert.deepEqual(copies.map((a) => a.seq), [recorded.seq], `${status}: one copy of the alert`);
      assert.equal((await fraudReportedOf(challenge.id)).length, status === 'pending' ? 1 : 0, `${status}: ChallengeFraudReported as the challenge was`);
      // Completed now (named on the challenge): sent again once more, found at once.
      assert.deepEqual(await later.report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date()), reply);
      assert.equal((await alertsOf(userId)).filter((a) => a.event.data.alertId === reply.alertId).length, 1);
    }
  });

  itWith({ real: ['nats', 'redis'] }, "a report cut short between its denial and its alert's publish, or with the alert stored and its ack lost, sent again past the stream's de-duplication window: one copy of the alert", async () => {
    // The instance dies right after its denial, or before its publish (nothing stored), or once the
    // server stored the alert but before the ack came back (stored, the report none the wiser).
    // Past MFA_FRAUD's duplicate window the re-sent report's publish would store another copy (no
    // Nats-Msg-Id, as there): the note made before the publish must find the one stored.
    class Crashing extends EventPublisher {
      constructor(private readonly stored: boolean) {
        super(nats.js);
      }
      override async publish(...args: Parameters<EventPublisher['publish']>) {
        if (args[1].type !== 'FraudReported') return super.publish(...args);
        if (this.stored) await super.publish(...args);
        throw Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' });
      }
    }
    class PastDuplicateWindow extends EventPublisher {
      override async publish(...args: Parameters<EventPublisher['publish']>) {
        if (args[1].type !== 'FraudReported') return super.publish(...args);
        return nats.js.publish(args[0], JSON.stringify(args[1]));
      }
    }
    const later = new FraudAlertsService(blocks, new ChallengeDenial(redis), new PastDuplicateWindow(nats.js), keyring, server, true);
    // A challenge still waiting (the report denies it first), and one that had ended (nothing to deny).
    for (const status of ['pending', 'approved']) {
      for (const crash of ['before its note', 'before its publish', 'ack lost']) {
        const at = `${status}, crashed ${crash}`;
        const stored = crash === 'ack lost';
        const userId = await register();
        const challenge = await startChallenge(userId, 'sms', status);
        const crashing = new FraudAlertsService(blocks, new ChallengeDenial(redis), new Crashing(stored), keyring, server, true);
        await assert.rejects(crashing.report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date()));
        // Denied (if waiting) and nothing noted of where its alert will be: as a crash right after the denial leaves it.
        if (crash === 'before its note') await redis.hdel(RedisKeys.challenge(challenge.tag, challenge.nonce), 'fraudAfter');
        if (status === 'pending') assert.deepEqual(await statusOf(challenge), ['denied', 'fraud_reported'], `${at}: denied first`);
        assert.equal((await alertsOf(userId)).length, stored ? 1 : 0, `${at}: stored as the crash left it`);
        const reply = await later.report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date());
        assert.equal(reply.challengeDenied, status === 'pending', `${at}: challengeDenied`);
        const copies = async () => (await alertsOf(userId)).filter((a) => a.event.data.alertId === reply.alertId).length;
        assert.equal(await copies(), 1, `${at}: one copy of the alert`);
        assert.deepEqual(await later.report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date()), reply, `${at}: answers the same`);
        assert.equal(await copies(), 1, `${at}: still one copy`);
        assert.equal((await fraudReportedOf(challenge.id)).length, status === 'pending' ? 1 : 0, `${at}: ChallengeFraudReported as the challenge was`);
      }
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'the challenge is denied before the alert is recorded: nothing can approve it meanwhile; one approved first stays approved and the alert says so', async () => {
    let atPublish: Array<string | null> | undefined;
    let approveFirst: (() => Promise<unknown>) | undefined;
    class Watching extends EventPublisher {
      override async publish(...args: Parameters<EventPublisher['publish']>) {
        if (args[1].type === 'FraudReported' && watched) atPublish = await statusOf(watched);
        return super.publish(...args);
      }
    }
    class ApprovedFirst extends ChallengeDenial {
      override async denyPending(...args: Parameters<ChallengeDenial['denyPending']>) {
        await approveFirst?.();
        return super.denyPending(...args);
      }
    }
    let watched: { tag: string; nonce: string } | undefined;
    const watching = new FraudAlertsService(blocks, new ChallengeDenial(redis), new Watching(nats.js), keyring, server, true);
    const userId = await register();
    watched = await startChallenge(userId, 'sms');
    const reply = await watching.report({ tenantId, userId, challengeId: challengeId(watched.tag, watched.nonce), source: 'idp' }, new Date());
    assert.equal(reply.challengeDenied, true);
    assert.deepEqual(atPublish, ['denied', 'fraud_reported'], 'denied before the alert was recorded');
    // A verify that got there between the report's look and its denial: its approval stands.
    const other = await register();
    const approved = await startChallenge(other, 'sms');
    approveFirst = () => redis.hset(RedisKeys.challenge(approved.tag, approved.nonce), 'status', 'approved');
    const late = await new FraudAlertsService(blocks, new ApprovedFirst(redis), publisher, keyring, server, true).report(
      { tenantId, userId: other, challengeId: approved.id, source: 'idp' },
      new Date(),
    );
    assert.equal(late.challengeDenied, false);
    assert.deepEqual(await statusOf(approved), ['approved', null]);
    assert.equal((await alertsOf(other))[0]?.event.data.challengeDenied, false);
  });

  itWith({ real: ['nats', 'redis'] }, "a report sent again after an administrator's unblock changes nothing more and answers the same (a challenge still waiting, or one that had ended)", async () => {
    for (const status of ['pending', 'approved']) {
      const userId = await register();
      const challenge = await startChallenge(userId, 'push', status);
      const report = () => alerts.report({ tenantId, userId, challengeId: challenge.id, source: 'idp' }, new Date());
      const first = await report();
      assert.deepEqual([first.challengeDenied, first.blocked], [status === 'pending', true], status);
      await blocks.unblock({ tenantId, userId, reason: 'the help desk called the user' }, new Date(), { clientId: 'admin' });
      const again: FraudReportReply = await report();
      assert.deepEqual(again, first, `${status}: answers the same`);
      assert.equal(await redis.exists(blockedKey(userId)), 0, `${status}: not blocked again`);
      assert.deepEqual(
        (await history(userId)).map((e) => e.type),
        ['UserBlocked', 'UserUnblocked'],
        `${status}: no second block in the history`,
      );
      assert.equal((await alertsOf(userId)).length, 1, `${status}: one alert`);
      // The alerts consumer delivering the alert again after the unblock changes nothing either.
      const [alert] = await alertsOf(userId);
      await alerts.complete(alert!.event, alert!.seq);
      assert.equal((await history(userId)).length, 2);
    }
  });

  itWith({ real: ['nats', 'redis'] }, `fraud.report takes at most ${FRAUD_REPORTS_PER_WINDOW} new alerts per user in an hour (rate_limited, with when to retry); a report denying a waiting challenge always passes, a repeat counts once`, async () => {
    const userId = await register();
    const tag = userTag(keyring, tenantId, userId);
    const ended = await startChallenge(userId, 'sms', 'approved');
    const first = await alerts.report({ tenantId, userId, challengeId: ended.id, source: 'idp' }, new Date());
    for (let n = 1; n < FRAUD_REPORTS_PER_WINDOW; n++) await alerts.report({ tenantId, userId, source: 'idp', comment: `report ${n}` }, new Date());
    const refused = await alerts.report({ tenantId, userId, source: 'idp' }, new Date()).then(
      () => undefined,
      (e: { code?: string; retryAfterSeconds?: number }) => e,
    );
    assert.equal(refused?.code, 'rate_limited');
    assert.ok(refused.retryAfterSeconds! > 3_500 && refused.retryAfterSeconds! <= 3_600, `retry after ${refused.retryAfterSeconds} s`);
    assert.equal((await alertsOf(userId)).length, FRAUD_REPORTS_PER_WINDOW, 'nothing recorded for the refused report');
    // The same report again is no new alert; a sign-in still waiting is always denied.
    assert.deepEqual(await alerts.report({ tenantId, userId, challengeId: ended.id, source: 'idp' }, new Date()), first);
    const waiting = await startChallenge(userId, 'push');
    assert.equal((await alerts.report({ tenantId, userId, challengeId: waiting.id, source: 'app' }, new Date())).challengeDenied, true);
    assert.ok((await redis.pttl(fraudReportsKey(tag))) > 3_500_000, 'the window expires');
  });

  itWith({ real: ['nats', 'redis'] }, 'a push reported as fraud counts towards push fatigue like a push the user denied; another method does not', async () => {
    const userId = await register();
    const tag = userTag(keyring, tenantId, userId);
    const push = await startChallenge(userId, 'push');
    const at = new Date();
    await alerts.report({ tenantId, userId, challengeId: push.id, source: 'idp' }, at);
    assert.equal(await redis.zscore(RedisKeys.pushRefusals(tag), push.id), String(at.getTime()), 'a refusal at the report time');
    assert.ok((await redis.pttl(RedisKeys.pushRefusals(tag))) > 86_000_000, "kept as long as auth-challenge's longest window");
    // Once: the consumer completing the alert again adds nothing.
    const [alert] = await alertsOf(userId);
    await alerts.complete(alert!.event, alert!.seq);
    assert.equal(await redis.zcard(RedisKeys.pushRefusals(tag)), 1);
    const other = await register();
    const sms = await startChallenge(other, 'sms');
    await alerts.report({ tenantId, userId: other, challengeId: sms.id, source: 'idp' }, new Date());
    assert.equal(await redis.exists(RedisKeys.pushRefusals(userTag(keyring, tenantId, other))), 0);
  });

  itWith({ real: ['nats', 'redis'] }, 'a report from the app (the device API, signed) names its device in the alert and in ChallengeFraudReported; one without it names none; another user’s device is refused, an app activated under an earlier master key is not', async () => {
    const config = loadFraudConfig({ ...process.env, NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' });
    let service: RunningService | undefined;
    try {
      service = await runService({ name: 'fraud', module: AppModule.forRoot(config, log), config, log });
      const internal = new InternalRequests(nats.nc, config.keyring);
      const fromApp = (body: Record<string, unknown>) => internal.request<FraudReportReply & { error?: { code: string; message: string } }>(InternalSubjects.fraudFromApp, body, { timeoutMs: 5000 });
      const userId = await register();
      const tag = userTag(keyring, tenantId, userId);
      // The user's apps as user-settings projects them: one activated under the current master key,
      // and one under an earlier key (its id carries the user's tag of then; ProjectedDevice.id).
      const nonce = randomBytes(16).toString('base64url').slice(0, 22);
      const device = formatDeviceId(tag, nonce);
      const movedNonce = randomBytes(16).toString('base64url').slice(0, 22);
      const moved = formatDeviceId(randomBytes(16).toString('base64url').slice(0, 22), movedNonce);
      await redis.hset(RedisKeys.devices(tag), { [nonce]: JSON.stringify({ state: 'active' }), [movedNonce]: JSON.stringify({ state: 'active', id: moved }) });

      const strangerId = await register();
      const strangerNonce = randomBytes(16).toString('base64url').slice(0, 22);
      const stranger = formatDeviceId(userTag(keyring, tenantId, strangerId), strangerNonce);
      await redis.hset(RedisKeys.devices(userTag(keyring, tenantId, strangerId)), strangerNonce, JSON.stringify({ state: 'active' }));
      const refused = await fromApp({ tenantId, userId, challengeId: (await startChallenge(userId)).id, deviceId: stranger });
      assert.deepEqual([refused.error?.code, refused.error?.message], ['invalid_request', 'deviceId: not a device of this user']);
      // The stranger's nonce under this user's tag is no device of this user either.
      const forged = await fromApp({ tenantId, userId, challengeId: (await startChallenge(userId)).id, deviceId: formatDeviceId(tag, strangerNonce) });
      assert.deepEqual([forged.error?.code, forged.error?.message], ['invalid_request', 'deviceId: not a device of this user']);
      // An earlier key's id names the moved app only: the same nonce under the current tag is not it.
      const renamed = await fromApp({ tenantId, userId, challengeId: (await startChallenge(userId)).id, deviceId: formatDeviceId(tag, movedNonce) });
      assert.deepEqual([renamed.error?.code, renamed.error?.message], ['invalid_request', 'deviceId: not a device of this user']);

      const fromMoved = await startChallenge(userId);
      const movedReply = await fromApp({ tenantId, userId, challengeId: fromMoved.id, deviceId: moved });
      assert.equal(movedReply.error, undefined, JSON.stringify(movedReply.error));
      const [movedReport] = await fraudReportedOf(fromMoved.id);
      assert.equal((movedReport?.event as EventOf<'ChallengeFraudReported'> | undefined)?.data.deviceId, moved, 'the report names the app by the id it was given');

      const push = await startChallenge(userId);
      const reply = await fromApp({ tenantId, userId, challengeId: push.id, deviceId: device });
      assert.equal(reply.error, undefined, JSON.stringify(reply.error));
      assert.equal(reply.challengeDenied, true);
      const alert = (await alertsOf(userId)).find((a) => a.event.data.challengeId === push.id);
      assert.deepEqual([alert?.event.data.source, alert?.event.data.deviceId], ['app', device]);
      const [denied] = await fraudReportedOf(push.id);
      assert.equal((denied?.event as EventOf<'ChallengeFraudReported'> | undefined)?.data.deviceId, device, 'the report’s row names the app');

      // As an older auth-challenge asks: no device, none named.
      const older = await startChallenge(userId);
      assert.equal((await fromApp({ tenantId, userId, challengeId: older.id })).error, undefined);
      const [plain] = await fraudReportedOf(older.id);
      assert.ok(plain, 'ChallengeFraudReported');
      assert.equal('deviceId' in plain.event.data, false);
    } finally {
      await service?.stop();
    }
  }, { timeout: 60_000 });

  itWith({ real: ['nats', 'redis'] }, "the fraud service's alerts consumer completes an alert whose report never did", async () => {
    const config = loadFraudConfig({ ...process.env, NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' });
    const module = AppModule.forRoot(config, log);
    // The consumer's controller, if the module does not serve it itself.
    if (!module.controllers?.includes(FraudAlertsController)) module.controllers = [...(module.controllers ?? []), FraudAlertsController];
    let service: RunningService | undefined;
    try {
      service = await runService({ name: 'fraud', module, config, log });
      const userId = await register();
      const challenge = await startChallenge(userId);
      // A report that denied the challenge, recorded its alert and did nothing else (the instance died).
      let redisDown = false;
      class DeadAfterRecording extends ChallengeDenial {
        override async denyPending(...args: Parameters<ChallengeDenial['denyPending']>) {
          if (redisDown) throw Object.assign(new Error('Connection is closed.'), { name: 'ConnectionError' });
          const denial = await super.denyPending(...args);
          redisDown = true;
          return denial;
        }
      }
      const dying = new FraudAlertsService(blocks, new DeadAfterRecording(redis), publisher, config.keyring, server, true);
      const reply = await dying.report({ tenantId, userId, challengeId: challenge.id, source: 'app' }, new Date());
      await eventually(async () => ((await redis.get(blockedKey(userId))) === String(Date.parse(reply.blockedUntil!)) ? true : undefined), 15_000, 'the user blocked by the consumer');
      await eventually(async () => ((await statusOf(challenge))[1] === 'fraud_reported' ? true : undefined), 15_000, 'the challenge denied by the consumer');
      await eventually(async () => ((await fraudReportedOf(challenge.id)).length === 1 ? true : undefined), 15_000, 'ChallengeFraudReported');
      assert.deepEqual((await history(userId)).map((e) => (e as EventOf<'UserBlocked'>).data.alertId), [reply.alertId]);
    } finally {
      await service?.stop();
    }
  }, { timeout: 60_000 });
});
