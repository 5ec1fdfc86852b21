import { after, before, describe } from 'node:test';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { EventSubjects, Streams } from '@mfa/contracts';
import { loadKeyring, userTag } from '@mfa/crypto';
import { connectNats, ensureStream, EventPublisher, readOnce, type NatsClients } from '@mfa/messaging';
import { challengeId, RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { createLogger } from '@mfa/telemetry';
import { itWith, tenantCreated, testEnv, testTenant, testUser, uniqueTenant, userRegistered } from '@mfa/testing';
import { ChallengeDenial, fraudReportsKey } from './adapters/challenge-denial.js';
import { FraudLog } from './adapters/fraud-log.js';
import { UserDirectory } from './adapters/user-directory.js';
import { BlocksService } from './application/blocks.service.js';
import { FraudAlertsService } from './application/fraud-alerts.service.js';

/**
 * The same user id in two tenants is two users for fraud: a report names a challenge of its own
 * tenant's user only, and a block, an alert or the report limit of one is none of the other's.
 */
describe('fraud: tenant isolation on the real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  const tenantA = uniqueTenant('fraud-iso-a');
  const tenantB = uniqueTenant('fraud-iso-b');
  const alice = `alice.${randomBytes(4).toString('hex')}@contoso.example`;
  const server = { name: 'fraud-test', ip: '127.0.0.1' };
  const log = createLogger('fraud-test', { level: 'error' });
  let nats: NatsClients;
  let redis: Redis;
  let alerts: FraudAlertsService;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'fraud-tenant-isolation-test' });
    for (const stream of [Streams.userSettings, Streams.fraud, Streams.challenges]) await ensureStream(nats.jsm, stream);
    redis = new Redis(testEnv.redisUrl);
    const publisher = new EventPublisher(nats.js);
    const blocks = new BlocksService(new FraudLog(nats.jsm, publisher), new UserDirectory(nats.jsm), new UserProjectionWriter(redis, keyring), nats, log);
    alerts = new FraudAlertsService(blocks, new ChallengeDenial(redis), publisher, keyring, server, true);
    for (const tenantId of [tenantA, tenantB]) {
      await publisher.publish(EventSubjects.tenant(tenantId), tenantCreated(testTenant({ tenantId })));
      await publisher.publish(EventSubjects.user(tenantId, alice), userRegistered(testUser({ tenantId, userId: alice })));
    }
  });

  after(async () => {
    await nats.nc.drain();
    await redis.quit();
  });

  /** A pending SMS challenge of alice in `tenantId`, as auth-challenge's start script leaves it. */
  const startChallenge = async (tenantId: string) => {
    const tag = userTag(keyring, tenantId, alice);
    const nonce = randomBytes(16).toString('base64url').slice(0, 22);
    await redis.hset(RedisKeys.challenge(tag, nonce), { tenantId, userId: alice, method: 'sms', status: 'pending', expiresAt: Date.now() + 120_000 });
    await redis.pexpire(RedisKeys.challenge(tag, nonce), 600_000);
    return { tag, nonce, id: challengeId(tag, nonce) };
  };
  const alertsOf = async (tenantId: string) => {
    let n = 0;
    await readOnce(nats.js, Streams.fraud.name, EventSubjects.fraudAlert(tenantId, alice), { policy: 'all' }, () => void n++);
    return n;
  };
  const blocked = (tenantId: string) => redis.exists(RedisKeys.blocked(userTag(keyring, tenantId, alice)));

  itWith({ real: ['nats', 'redis'] }, "fraud.report naming another tenant's challenge of the same user id: not_found, and nothing changes in either tenant", async () => {
    const challengeOfA = await startChallenge(tenantA);
    await assert.rejects(alerts.report({ tenantId: tenantB, userId: alice, challengeId: challengeOfA.id, source: 'idp' }, new Date()), { code: 'not_found' });
    assert.deepEqual(await redis.hmget(RedisKeys.challenge(challengeOfA.tag, challengeOfA.nonce), 'status', 'reason', 'fraudAlert'), ['pending', null, null], "A's challenge is untouched");
    assert.equal(await alertsOf(tenantA), 0);
    assert.equal(await alertsOf(tenantB), 0);
    assert.equal(await blocked(tenantA), 0);
    assert.equal(await blocked(tenantB), 0);
  });

  itWith({ real: ['nats', 'redis'] }, "a report that blocks one tenant's user blocks no namesake in another; the report limit is the user's own", async () => {
    const reply = await alerts.report({ tenantId: tenantB, userId: alice, source: 'idp', comment: 'not me' }, new Date());
    assert.equal(reply.blocked, true, 'the tenant blocks on a fraud alert (autoBlock)');
    assert.equal(await blocked(tenantB), 1);
    assert.equal(await blocked(tenantA), 0, "A's alice is not blocked");
    assert.equal(await redis.zcard(fraudReportsKey(userTag(keyring, tenantA, alice))), 0, "A's alice's report window is empty");
    // A's alice still has her challenge to answer, and it is still hers to report.
    const challengeOfA = await startChallenge(tenantA);
    const ofA = await alerts.report({ tenantId: tenantA, userId: alice, challengeId: challengeOfA.id, source: 'idp' }, new Date());
    assert.equal(ofA.challengeDenied, true);
  });
});
