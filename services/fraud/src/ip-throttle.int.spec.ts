import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { defaultTenantSettings, EventSubjects, parseEvent, Streams, type EventOf } from '@mfa/contracts';
import { connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { challengeStarted, itWith, testChallenge, testEnv, testUser, uniqueTenant, uniqueUser } from '@mfa/testing';
import { IpCounterKeys, IpCounters } from './adapters/ip-counters.js';
import { IpThrottleService } from './application/ip-throttle.service.js';

/** Per-IP throttling against the real NATS and Redis: the starts counted per address, IpThrottled recorded on MFA_THROTTLES. */
describe('fraud: per-IP throttling on the real NATS and Redis', () => {
  let nats: NatsClients;
  let redis: Redis;
  let publisher: EventPublisher;
  const neverBlock = ['192.0.2.0/24'];

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'fraud-throttle-test' });
    await ensureStream(nats.jsm, Streams.throttles);
    redis = new Redis(testEnv.redisUrl);
    publisher = new EventPublisher(nats.js);
  });

  after(async () => {
    await nats.nc.drain();
    await redis.quit();
  });

  const service = (maxStarts: number) =>
    new IpThrottleService(
      { maxStarts, windowSeconds: 300 },
      new IpCounters(redis, maxStarts),
      { tenantSettings: async () => ({ ...defaultTenantSettings(), ipLockout: { ...defaultTenantSettings().ipLockout, neverBlock } }) },
      publisher,
      createLogger('fraud-test', { level: 'error' }),
    );
  const startFrom = (tenantId: string, clientIp: string, at: Date) =>
    challengeStarted(testChallenge(testUser({ tenantId, userId: uniqueUser() }), { clientIp, startedAt: at.toISOString() }), { occurredAt: at.toISOString() });
  const throttlesOf = async (tenantId: string, ip: string): Promise<Array<EventOf<'IpThrottled'>>> => {
    const out: Array<EventOf<'IpThrottled'>> = [];
    for (let seq = 0; ; ) {
      const msg = await nats.jsm.direct.getMessage(Streams.throttles.name, { seq: seq + 1, next_by_subj: EventSubjects.ipThrottle(tenantId, ip) });
      if (!msg) return out;
      seq = msg.seq;
      out.push(parseEvent(msg.json()) as EventOf<'IpThrottled'>);
    }
  };

  itWith({ real: ['nats', 'redis'] }, "the start that fills an address's window records IpThrottled until the oldest leaves it; a redelivery counts once; other users and tenants apart", async () => {
    const tenantId = uniqueTenant('throttle');
    const ip = '198.51.100.20';
    const throttle = service(3);
    const t0 = Date.now() - 10_000;
    const first = startFrom(tenantId, ip, new Date(t0));
    await throttle.countStart(first, new Date());
    await throttle.countStart(first, new Date());
    await throttle.countStart(startFrom(tenantId, ip, new Date(t0 + 1000)), new Date());
    assert.deepEqual(await throttlesOf(tenantId, ip), [], 'two distinct starts: below the limit');
    await throttle.countStart(startFrom(uniqueTenant('other'), ip, new Date(t0 + 1500)), new Date());
    await throttle.countStart(startFrom(tenantId, ip, new Date(t0 + 2000)), new Date());
    const [recorded, ...more] = await throttlesOf(tenantId, ip);
    assert.equal(more.length, 0);
    assert.equal(recorded!.data.ip, ip);
    assert.equal(recorded!.data.until, new Date(t0 + 300_000).toISOString());
    assert.equal(recorded!.data.starts, 3);
    assert.equal(recorded!.metadata.causationId !== undefined, true);
    // The same end recorded again (another instance, a redelivery) is one message: Nats-Msg-Id.
    await throttle.countStart(startFrom(tenantId, ip, new Date(t0 + 2500)), new Date());
    assert.equal((await throttlesOf(tenantId, ip)).length, 1);
  });

  itWith({ real: ['nats', 'redis'] }, 'an IPv6 client counts by its /64; the never-block list and a limit of 0 record nothing; starts older than the window do not count', async () => {
    const tenantId = uniqueTenant('throttle6');
    const throttle = service(2);
    const now = Date.now();
    await throttle.countStart(startFrom(tenantId, '2001:db8:7:8::1', new Date(now)), new Date());
    await throttle.countStart(startFrom(tenantId, '2001:db8:7:8:ffff::2', new Date(now)), new Date());
    const [v6] = await throttlesOf(tenantId, '2001:db8:7:8::/64');
    assert.equal(v6?.data.ip, '2001:db8:7:8::/64');
    for (let i = 0; i < 3; i++) await throttle.countStart(startFrom(tenantId, '192.0.2.9', new Date(now)), new Date());
    assert.deepEqual(await throttlesOf(tenantId, '192.0.2.9'), [], 'never-block');
    for (let i = 0; i < 3; i++) await service(0).countStart(startFrom(tenantId, '198.51.100.21', new Date(now)), new Date());
    for (let i = 0; i < 3; i++) await throttle.countStart(startFrom(tenantId, '198.51.100.22', new Date(now - 301_000)), new Date());
    assert.deepEqual(await throttlesOf(tenantId, '198.51.100.21'), []);
    assert.deepEqual(await throttlesOf(tenantId, '198.51.100.22'), []);
  });

  itWith({ real: ['nats', 'redis'] }, 'a limit above the 10,001 entries a window used to keep (IP_MAX_STARTS_PER_WINDOW allows 100,000) is reached', async () => {
    const tenantId = uniqueTenant('throttle-many');
    const ip = '198.51.100.30';
    const maxStarts = 10_050;
    const counters = new IpCounters(redis, maxStarts);
    const t0 = Date.now() - 60_000;
    // All but the last start counted straight into the window, a thousand at a time.
    for (let i = 0; i < maxStarts - 1; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, maxStarts - 1 - i) }, (_, j) => i + j);
      await Promise.all(batch.map((n) => counters.countStart(tenantId, ip, `start-${n}`, new Date(t0 + n), new Date(), 300)));
    }
    assert.deepEqual(await throttlesOf(tenantId, ip), [], 'one short of the limit');
    await service(maxStarts).countStart(startFrom(tenantId, ip, new Date()), new Date());
    const [recorded] = await throttlesOf(tenantId, ip);
    assert.equal(recorded?.data.starts, maxStarts);
    assert.equal(recorded?.data.until, new Date(t0 + 300_000).toISOString());
    await redis.del(IpCounterKeys.starts(tenantId, ip));
  });
});
