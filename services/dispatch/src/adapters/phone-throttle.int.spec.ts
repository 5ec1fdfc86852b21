import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { loadKeyring, phoneTag, userTag } from '@mfa/crypto';
import { challengeId, RedisKeys, UserIndex } from '@mfa/projection';
import { itWith, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';
import { numberBlock, PhoneThrottle } from './phone-throttle.js';

const id = () => challengeId(randomBytes(16).toString('base64url').slice(0, 22), randomBytes(16).toString('base64url').slice(0, 22));

describe('PhoneThrottle against a real Redis', () => {
  const { keyring } = loadKeyring({});
  let redis: Redis;
  let index: UserIndex;

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    index = new UserIndex(redis, keyring);
  });

  after(async () => {
    await redis.quit();
  });

  itWith({ real: ['redis'] }, "admits 3 sends to a number in the window across its users, refuses the 4th, and copies the throttle into every user of that number's slot", async () => {
    const tenant = uniqueTenant();
    const [alice, bob, carol] = [uniqueUser(), uniqueUser(), uniqueUser()];
    const shared = '+14155550142';
    await index.put(tenant, alice, { displayName: 'Alice', phoneNumber: shared });
    await index.put(tenant, bob, { displayName: 'Bob', phoneNumber: shared });
    await index.put(tenant, carol, { displayName: 'Carol', phoneNumber: '+14155550143' });
    const throttle = new PhoneThrottle(redis, keyring, { maxSends: 3, windowSeconds: 600 });
    const now = Date.now();
    const first = id();
    assert.deepEqual(await throttle.admit(tenant, shared, first, now), { admitted: true });
    assert.deepEqual(await throttle.admit(tenant, shared, id(), now + 1000), { admitted: true });
    assert.equal(await redis.exists(RedisKeys.phoneThrottle(userTag(keyring, tenant, alice))), 0, 'not full yet: nobody throttled');
    assert.deepEqual(await throttle.admit(tenant, shared, id(), now + 2000), { admitted: true });
    // The third filled the window: both users of the number are throttled until the first leaves it.
    for (const user of [alice, bob]) {
      assert.equal(await redis.get(RedisKeys.phoneThrottle(userTag(keyring, tenant, user))), String(now + 600_000));
    }
    assert.equal(await redis.exists(RedisKeys.phoneThrottle(userTag(keyring, tenant, carol))), 0, 'another number is not');
    assert.deepEqual(await throttle.admit(tenant, shared, id(), now + 3000), { admitted: false, untilMs: now + 600_000, scope: 'number' });
    // A redelivered request already admitted is admitted again, and counted once.
    assert.deepEqual(await throttle.admit(tenant, shared, first, now + 4000), { admitted: true });
    const key = RedisKeys.phoneSends(tenant, phoneTag(keyring, tenant, shared));
    assert.equal(await redis.zcard(key), 3);
    assert.ok(!key.includes('4155550142'), 'no number in key names');
    // Another tenant's users of the same number are counted apart.
    assert.deepEqual(await throttle.admit(uniqueTenant(), shared, id(), now), { admitted: true });
    // The window slides: once the first send is older than it, one more fits.
    assert.deepEqual(await throttle.admit(tenant, shared, id(), now + 600_001), { admitted: true });
    assert.deepEqual(await throttle.admit(tenant, shared, id(), now + 600_002), { admitted: false, untilMs: now + 601_000, scope: 'number' });
  });

  itWith({ real: ['redis'] }, 'SMS pumping: sends spread over many numbers of one range stop at the range limit, per tenant and across tenants; other ranges go on', async () => {
    const range = `+88216${String(Math.floor(Math.random() * 1e4)).padStart(4, '0')}`;
    const numbers = Array.from({ length: 8 }, (_, n) => `${range}${String(1000 + n)}`);
    const throttle = new PhoneThrottle(redis, keyring, { maxSends: 10, windowSeconds: 600, prefixMaxSends: 3, prefixGlobalMaxSends: 5, prefixWindowSeconds: 600 });
    const now = Date.now();
    const [a, b] = [uniqueTenant(), uniqueTenant()];
    for (const n of numbers.slice(0, 3)) assert.deepEqual(await throttle.admit(a, n, id(), now), { admitted: true });
    const refused = await throttle.admit(a, numbers[3]!, id(), now);
    assert.deepEqual(refused, { admitted: false, untilMs: now + 600_000, scope: 'prefix' });
    // Another tenant's sends count against the range across tenants: 2 more fit, then none.
    for (const n of numbers.slice(4, 6)) assert.deepEqual(await throttle.admit(b, n, id(), now), { admitted: true });
    const across = await throttle.admit(b, numbers[6]!, id(), now);
    assert.equal(across.admitted ? 'admitted' : across.scope, 'prefix_global');
    // Another range is not concerned.
    // (A range of its own: the window across tenants outlives this test, in the Redis other runs share.)
    assert.deepEqual(await throttle.admit(a, `+88217${String(Math.floor(Math.random() * 1e8)).padStart(8, '0')}`, id(), now), { admitted: true });
  });

  itWith({ real: ['redis'] }, "a send a block's limit refuses counts in no window: pumping a block leaves its numbers' own windows, and the tenant's block window, free", async () => {
    const range = `+88218${String(Math.floor(Math.random() * 1e4)).padStart(4, '0')}`;
    const throttle = new PhoneThrottle(redis, keyring, { maxSends: 3, windowSeconds: 600, prefixMaxSends: 2, prefixGlobalMaxSends: 3, prefixWindowSeconds: 600 });
    const now = Date.now();
    const block = phoneTag(keyring, '*', numberBlock(`${range}0000`));
    const numberKey = (tenant: string, n: string) => RedisKeys.phoneSends(tenant, phoneTag(keyring, tenant, n));
    const [pump, other] = [uniqueTenant(), uniqueTenant()];
    const legit = `${range}9999`;
    const user = uniqueUser();
    await index.put(pump, user, { displayName: 'Legit', phoneNumber: legit });
    const first = id();
    assert.deepEqual(await throttle.admit(pump, `${range}1000`, first, now), { admitted: true });
    assert.deepEqual(await throttle.admit(pump, `${range}1001`, id(), now), { admitted: true });
    // The tenant's block is full: the legitimate number's sends are refused, and none of them counts for it.
    for (let i = 0; i < 4; i++) assert.deepEqual(await throttle.admit(pump, legit, id(), now + i), { admitted: false, untilMs: now + 600_000, scope: 'prefix' });
    assert.equal(await redis.zcard(numberKey(pump, legit)), 0);
    assert.equal(await redis.exists(RedisKeys.phoneThrottle(userTag(keyring, pump, user))), 0, 'its users are not throttled');
    // A request admitted before is admitted again, and stays counted once everywhere.
    assert.deepEqual(await throttle.admit(pump, `${range}1000`, first, now + 10), { admitted: true });
    assert.equal(await redis.zcard(RedisKeys.prefixSends(pump, block)), 2);
    // Another tenant fills the block across tenants (1 more); its next send, refused by that limit
    // alone, counts neither in its number's window nor in its own block window.
    assert.deepEqual(await throttle.admit(other, `${range}2000`, id(), now), { admitted: true });
    const across = await throttle.admit(other, `${range}2001`, id(), now);
    assert.equal(across.admitted ? 'admitted' : across.scope, 'prefix_global');
    assert.equal(await redis.zcard(numberKey(other, `${range}2001`)), 0);
    assert.equal(await redis.zcard(RedisKeys.prefixSends(other, block)), 1);
    assert.equal(await redis.zcard(RedisKeys.prefixSends('*', block)), 3);
  });

  itWith({ real: ['redis'] }, "a send is never taken back from a number's window: a concurrent send cannot see the number full because of a send its block refused", async () => {
    const range = `+88219${String(Math.floor(Math.random() * 1e4)).padStart(4, '0')}`;
    const throttle = new PhoneThrottle(redis, keyring, { maxSends: 1, windowSeconds: 600, prefixMaxSends: 1, prefixGlobalMaxSends: 0, prefixWindowSeconds: 600 });
    const tenant = uniqueTenant();
    const numberKey = (n: string) => RedisKeys.phoneSends(tenant, phoneTag(keyring, tenant, n));
    // Every write to a number's window, as the throttle issues it.
    const seen: string[] = [];
    const spy = new Proxy(redis, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver) as unknown;
        if (property === 'zrem') return (key: string, ...rest: string[]) => (seen.push(key), target.zrem(key, ...rest));
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const spied = new PhoneThrottle(spy as Redis, keyring, { maxSends: 1, windowSeconds: 600, prefixMaxSends: 1, prefixGlobalMaxSends: 0, prefixWindowSeconds: 600 });
    const now = Date.now();
    assert.deepEqual(await throttle.admit(tenant, `${range}1000`, id(), now), { admitted: true });
    // The block is full: a send to another of its numbers is refused before it reaches that number's window.
    const victim = `${range}2000`;
    assert.deepEqual(await spied.admit(tenant, victim, id(), now + 1), { admitted: false, untilMs: now + 600_000, scope: 'prefix' });
    assert.deepEqual(seen.filter((k) => k === numberKey(victim)), [], 'the number window was written and taken back');
    assert.equal(await redis.zcard(numberKey(victim)), 0);
  });

  itWith({ real: ['redis'] }, 'keeps its window in one hash slot per number, and does nothing when turned off', async () => {
    const tenant = uniqueTenant();
    const key = RedisKeys.phoneSends(tenant, phoneTag(keyring, tenant, '+14155550144'));
    // One hash tag, so the script's one key is in one slot on Redis Cluster whatever the number.
    assert.match(key, /^mfa:\{phone:[A-Za-z0-9_-]+:[A-Za-z0-9_-]{22}\}:sends$/);
    const off = new PhoneThrottle(redis, keyring, { maxSends: 0, windowSeconds: 600 });
    for (let i = 0; i < 5; i++) assert.deepEqual(await off.admit(tenant, '+14155550144', id(), Date.now()), { admitted: true });
    assert.equal(await redis.exists(key), 0);
  });
});
