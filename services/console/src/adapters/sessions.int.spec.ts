import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { itWith, testEnv } from '@mfa/testing';
import { Sessions } from './sessions.js';

/** Operators' sessions in the real Redis: what a forged, expired or replayed one gets. */
describe('console sessions (real Redis)', () => {
  let redis: Redis;
  let sessions: Sessions;
  const operator = { sub: 'olga' };

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    sessions = new Sessions(redis, 60);
  });
  after(async () => {
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'finds a session by its id only, stores only a hash of the id, and forgets it at sign-out', async () => {
    const id = await sessions.create({ operator, roles: ['platform-operator'], via: 'dev' }, Date.now());
    assert.match(id, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual((await sessions.load(id, Date.now()))?.operator, operator);
    assert.equal((await redis.keys(`*${id}*`)).length, 0, 'the id itself is not a key');
    for (const forged of [undefined, '', 'A'.repeat(43), `${id.slice(0, -1)}x`, `${id}x`, '../../etc']) assert.equal(await sessions.load(forged, Date.now()), undefined);
    await sessions.destroy(id);
    assert.equal(await sessions.load(id, Date.now()), undefined);
  });

  itWith({ real: ['redis'] }, 'ends a session 12 hours after sign-in however active, and after the idle time', async () => {
    const old = await sessions.create({ operator, roles: ['platform-operator'], via: 'dev' }, Date.now() - 12 * 3_600_000 - 1);
    assert.equal(await sessions.load(old, Date.now()), undefined);
    const short = new Sessions(redis, 1);
    const idle = await short.create({ operator, roles: ['platform-operator'], via: 'dev' }, Date.now());
    await new Promise((r) => setTimeout(r, 1_100));
    assert.equal(await short.load(idle, Date.now()), undefined);
  });
});
