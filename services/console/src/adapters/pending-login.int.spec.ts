import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { itWith, testEnv } from '@mfa/testing';
import { PENDING_LOGIN_KEY, PENDING_LOGIN_SECONDS, PendingLogins } from './pending-login.js';

/** A sign-in under way, sealed in the browser under the deployment's key in the real Redis. */
describe('a sign-in under way, sealed in the browser', () => {
  let redis: Redis;
  let logins: PendingLogins;
  const login = { state: 'st4te', nonce: 'n0nce', verifier: 'v'.repeat(43), returnTo: '/t/contoso/users?q=a' };
  const now = Date.now();

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    logins = new PendingLogins(redis);
  });
  after(async () => {
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'opens what it sealed, on any instance of the deployment, until it expires; the key is random, in Redis', async () => {
    const sealed = await logins.seal(login, now);
    assert.deepEqual(await logins.open(sealed, now), login);
    assert.deepEqual(await new PendingLogins(redis).open(sealed, now + 1_000), login);
    assert.deepEqual(await logins.open(sealed, now + PENDING_LOGIN_SECONDS * 1000 - 1), login);
    assert.equal(await logins.open(sealed, now + PENDING_LOGIN_SECONDS * 1000), undefined);
    assert.equal(Buffer.from((await redis.get(PENDING_LOGIN_KEY)) ?? '', 'base64').length, 32);
    assert.ok(sealed.length < 1024, `${sealed.length} characters`);
    for (const value of Object.values(login)) assert.ok(!sealed.includes(value), 'nothing readable in the cookie');
  });

  itWith({ real: ['redis'] }, 'opens nothing forged, altered, sealed under another key, or not of its shape', async () => {
    const sealed = await logins.seal(login, now);
    const [iv, body, tag] = sealed.split('.') as [string, string, string];
    const flip = (part: string) => `${part.slice(0, -2)}${part.at(-2) === 'A' ? 'B' : 'A'}${part.at(-1)}`;
    for (const forged of [
      undefined,
      '',
      'garbage',
      `${flip(iv)}.${body}.${tag}`,
      `${iv}.${flip(body)}.${tag}`,
      `${iv}.${body}.${flip(tag)}`,
      `${iv}.${body}`,
      `${iv}.${body}.${tag}.x`,
      `${iv}.${body}.${tag}=`,
      `${iv}.${'A'.repeat(5000)}.${tag}`,
    ]) {
      assert.equal(await logins.open(forged, now), undefined, String(forged).slice(0, 40));
    }
  });

  itWith({ real: ['redis'] }, 'a key made again (Redis lost it, or an operator deleted it to rotate it) ends the sign-ins under way on every instance', async () => {
    const sealed = await logins.seal(login, now);
    const other = new PendingLogins(redis);
    await redis.del(PENDING_LOGIN_KEY);
    const resealed = await other.seal(login, now);
    assert.equal(await logins.open(sealed, now), undefined);
    assert.deepEqual(await logins.open(resealed, now), login, 'every instance uses the new key at once');
  });
});
