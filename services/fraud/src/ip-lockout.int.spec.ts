import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { jetstream } from '@nats-io/jetstream';
import { Redis } from 'ioredis';
import { defaultTenantSettings, EventSubjects, Streams, type FraudIpEvent } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { ConcurrencyError, connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { UserProjectionWriter } from '@mfa/projection';
import { createLogger } from '@mfa/telemetry';
import { challengeCodeRejected, itWith, tenantCreated, testChallenge, testEnv, testTenant, testUser, uniqueTenant, uniqueUser } from '@mfa/testing';
import { FraudLog } from './adapters/fraud-log.js';
import { IpCounterKeys, IpCounters } from './adapters/ip-counters.js';
import { UserDirectory } from './adapters/user-directory.js';
import { BlocksService } from './application/blocks.service.js';
import { IpLockoutService, type DenialEvent } from './application/ip-lockout.service.js';

/** Per-IP lockout's unlock against the real NATS and Redis: the count starts over, whatever fails or comes in between. */
describe('fraud: per-IP lockout unlock on the real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  const tenantId = uniqueTenant('iplock');
  const logger = createLogger('fraud-test', { level: 'error' });
  const threshold = 5;
  let nats: NatsClients;
  let redis: Redis;
  let publisher: EventPublisher;
  let fraudLog: FraudLog;
  let counters: IpCounters;
  let blocks: BlocksService;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'fraud-ip-lockout-test' });
    for (const stream of [Streams.userSettings, Streams.fraud]) await ensureStream(nats.jsm, stream);
    redis = new Redis(testEnv.redisUrl);
    publisher = new EventPublisher(nats.js);
    fraudLog = new FraudLog(nats.jsm, publisher);
    counters = new IpCounters(redis);
    blocks = new BlocksService(fraudLog, new UserDirectory(nats.jsm), new UserProjectionWriter(redis, keyring), nats, logger);
    const settings = { ...defaultTenantSettings(), ipLockout: { enabled: true, threshold, windowMinutes: 15, durationMinutes: 60, neverBlock: [], dryRun: false } };
    await publisher.publish(EventSubjects.tenant(tenantId), tenantCreated(testTenant({ tenantId, settings })));
  });

  after(async () => {
    await nats.nc.drain();
    await redis.quit();
  });

  const lockout = (withCounters: IpCounters = counters, withLog: FraudLog = fraudLog) =>
    new IpLockoutService(withLog, withCounters, new UserDirectory(nats.jsm), blocks, nats, keyring, logger);
  /** A wrong code of another user from `ip`, `agoMs` ago. */
  const denial = (ip: string, agoMs = 0): DenialEvent => {
    const at = new Date(Date.now() - agoMs).toISOString();
    const challenge = testChallenge(testUser({ tenantId, userId: uniqueUser('ip') }), { clientIp: ip, startedAt: at });
    return challengeCodeRejected(challenge, { occurredAt: at, data: { clientIp: ip } });
  };
  const deny = (service: IpLockoutService, ip: string, times: number, agoMs = 0) =>
    Array.from({ length: times }).reduce<Promise<void>>((previous) => previous.then(() => service.countDenial(denial(ip, agoMs), new Date())), Promise.resolve());
  const locked = async (ip: string) => {
    const { state } = await fraudLog.loadIp(tenantId, ip);
    return state.locked && state.until > Date.now();
  };
  const unlock = (service: IpLockoutService, ip: string) => service.unlock({ tenantId, ip, reason: 'the branch office NAT' }, new Date());
  const codeOf = (error: unknown) => (error as { code?: string }).code;

  itWith({ real: ['nats', 'redis'] }, 'an unlock whose count reset fails answers unavailable; its retry unlocks, and the next denial does not lock the address again', async () => {
    const ip = '198.51.100.40';
    const ips = lockout();
    await deny(ips, ip, threshold);
    assert.equal(await locked(ip), true);
    let failures = 1;
    const flaky = Object.assign(Object.create(counters) as IpCounters, {
      reset: async (...args: Parameters<IpCounters['reset']>) => {
        if (failures-- > 0) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
        return counters.reset(...args);
      },
    });
    const unlocking = lockout(flaky);
    assert.equal(codeOf(await unlock(unlocking, ip).catch((error: unknown) => error)), 'unavailable');
    // The admin tries again, as `unavailable` says.
    const retried = await unlock(unlocking, ip).catch((error: unknown) => error);
    await deny(ips, ip, 1);
    assert.equal(await locked(ip), false, 'one wrong code after the unlock locks the address again');
    assert.deepEqual(retried, { ip }, 'the retry unlocks (the failed try left the lock in force)');
    // The count started over: the threshold locks it again, not less.
    await deny(ips, ip, threshold - 2);
    assert.equal(await locked(ip), false);
    await deny(ips, ip, 1);
    assert.equal(await locked(ip), true);
  });

  itWith({ real: ['nats', 'redis'] }, 'an unlock that cannot record IpUnlocked (the address moved on at every try) answers conflict, not unlocked', async () => {
    const ip = '198.51.100.44';
    const ips = lockout();
    await deny(ips, ip, threshold);
    assert.equal(await locked(ip), true);
    let tries = 0;
    const racedLog = Object.assign(Object.create(fraudLog) as FraudLog, {
      appendIp: async () => {
        tries++;
        throw new ConcurrencyError('the address subject moved on since it was read');
      },
    });
    const answer = await unlock(lockout(counters, racedLog), ip).catch((error: unknown) => error);
    assert.equal(codeOf(answer), 'conflict', `answered ${JSON.stringify(answer)}`);
    assert.equal(tries, 5);
    assert.equal(await locked(ip), true, 'still locked');
  });

  itWith({ real: ['nats', 'redis'] }, 'a denial counted while an unlock is under way (before or after its count is reset) does not lock the address again', async () => {
    const ip = '198.51.100.41';
    const ips = lockout();
    await deny(ips, ip, threshold);
    assert.equal(await locked(ip), true);
    // Another instance counts a denial from the address at each step of the unlock.
    let atReset = 0;
    let atUnlocked = 0;
    const busyCounters = Object.assign(Object.create(counters) as IpCounters, {
      reset: async (...args: Parameters<IpCounters['reset']>) => {
        if (atReset++ === 0) await ips.countDenial(denial(ip), new Date());
        return counters.reset(...args);
      },
    });
    const busyLog = Object.assign(Object.create(fraudLog) as FraudLog, {
      appendIp: async (...args: Parameters<FraudLog['appendIp']>) => {
        if (args[2].type === 'IpUnlocked' && atUnlocked++ === 0) await ips.countDenial(denial(ip), new Date());
        return fraudLog.appendIp(...args);
      },
    });
    assert.deepEqual(await unlock(lockout(busyCounters, busyLog), ip), { ip });
    assert.deepEqual([atReset, atUnlocked], [1, 1]);
    assert.equal(await locked(ip), false, 'a denial counted during the unlock locked the address again');
    await deny(ips, ip, 1);
    assert.equal(await locked(ip), false);
    const last = (await nats.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudIp(tenantId, ip) }))!.json<FraudIpEvent>();
    assert.equal(last.type, 'IpUnlocked');
  });

  itWith({ real: ['nats', 'redis'] }, 'a denial whose window was counted before an unlock and whose lock is decided after it does not lock the address again', async () => {
    const ip = '198.51.100.42';
    const ips = lockout();
    await deny(ips, ip, threshold);
    assert.equal(await locked(ip), true);
    const late = denial(ip, 1000);
    let counted!: () => void;
    const countedNow = new Promise<void>((resolve) => (counted = resolve));
    let go!: () => void;
    const gate = new Promise<void>((resolve) => (go = resolve));
    // The instance counting `late` is slow to go on: the unlock happens in between.
    const slow = Object.assign(Object.create(counters) as IpCounters, {
      countDenial: async (...args: Parameters<IpCounters['countDenial']>) => {
        const window = await counters.countDenial(...args);
        if (args[2] === late.id && window.failures > threshold) {
          counted();
          await gate;
        }
        return window;
      },
    });
    const pending = lockout(slow).countDenial(late, new Date());
    await countedNow;
    assert.deepEqual(await unlock(ips, ip), { ip });
    go();
    await pending;
    assert.equal(await locked(ip), false, 'a window counted before the unlock locked the address again');
  });

  itWith({ real: ['nats', 'redis'] }, 'denials from before an unlock counted after it (a consumer catching up) do not count; denials after it lock at the threshold', async () => {
    const ip = '198.51.100.43';
    const ips = lockout();
    await deny(ips, ip, threshold);
    assert.equal(await locked(ip), true);
    assert.deepEqual(await unlock(ips, ip), { ip });
    await deny(ips, ip, threshold, 60_000);
    assert.equal(await locked(ip), false, 'denials from before the unlock locked the address again');
    await deny(ips, ip, threshold);
    assert.equal(await locked(ip), true);
    // The unlock's time is kept as long as the longest window, no longer.
    const ttl = await redis.pttl(IpCounterKeys.unlocked(tenantId, ip));
    assert.ok(ttl > 86_000_000 && ttl <= 86_400_000, `the unlock's time kept ${ttl} ms`);
  });
  itWith({ real: ['nats', 'redis'] }, 'fraud.ips.list lists each address once, as its last event has it, when its read hands an address over again (its consumer made again mid-read)', async () => {
    const listTenant = uniqueTenant('iplist');
    const settings = { ...defaultTenantSettings(), ipLockout: { enabled: true, threshold, windowMinutes: 15, durationMinutes: 60, neverBlock: [], dryRun: false } };
    await publisher.publish(EventSubjects.tenant(listTenant), tenantCreated(testTenant({ tenantId: listTenant, settings })));
    const until = new Date(Date.now() + 3_600_000).toISOString();
    const lock = (failures: number) => ({ type: 'IpLocked' as const, data: { ip: '', until, failures, users: 1, windowMinutes: 15, dryRun: false } });
    // More addresses than a pull holds (100): the read has some left on the server when it is cut.
    const ips = Array.from({ length: 150 }, (_, i) => `10.77.${Math.floor(i / 100)}.${i % 100}`);
    for (const ip of ips) await fraudLog.appendIp(listTenant, ip, { ...lock(threshold), data: { ...lock(threshold).data, ip } }, new Date(), 0);
    const [renewed, lifted] = [ips[0]!, ips[1]!];
    // The read's JetStream API under a prefix of the test's own: its second pull is dropped (its
    // server silent, the first 100 addresses handed over), meanwhile the first address's lock is
    // recorded again and the second's lifted; the next consumer made gets its pulls through.
    const prefix = `$TESTIPJS.${listTenant}`;
    let pulls = 0;
    let cut = false;
    let changed: Promise<unknown> | undefined;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        const api = msg.subject.slice(prefix.length + 1);
        const send = () => nats.nc.publish(`$JS.API.${api}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
        if (api.startsWith('CONSUMER.MSG.NEXT') && ++pulls === 2) {
          cut = true;
          changed = (async () => {
            const last = async (ip: string) => (await fraudLog.loadIp(listTenant, ip)).lastSeq;
            await fraudLog.appendIp(listTenant, renewed, { ...lock(threshold + 3), data: { ...lock(threshold + 3).data, ip: renewed } }, new Date(), await last(renewed));
            await fraudLog.appendIp(listTenant, lifted, { type: 'IpUnlocked', data: { ip: lifted, reason: 'test' } }, new Date(), await last(lifted));
          })();
        }
        if (cut && api.startsWith('CONSUMER.MSG.NEXT')) return;
        if (cut && api.startsWith('CONSUMER.CREATE')) {
          cut = false;
          void changed!.then(send, send);
          return;
        }
        send();
      },
    });
    try {
      const listing = new IpLockoutService(fraudLog, counters, new UserDirectory(nats.jsm), blocks, { ...nats, js: jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }) }, keyring, logger);
      const { items } = await listing.list({ tenantId: listTenant }, new Date());
      assert.ok(pulls > 2 && changed, 'the read was cut after its first pull and went on');
      await changed;
      const listed = items.map((item) => item.ip);
      assert.deepEqual([...listed].sort(), ips.filter((ip) => ip !== lifted).sort(), 'every locked address once, the lifted one not');
      assert.equal(items.find((item) => item.ip === renewed)?.failures, threshold + 3, 'the renewed lock as its last event has it');
    } finally {
      forward.unsubscribe();
    }
  }, { timeout: 60_000 });
});
