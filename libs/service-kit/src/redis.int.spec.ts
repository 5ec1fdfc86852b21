import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { itWith, startRedisServer, type RedisServerProcess } from '@mfa/testing';
import { RedisHealth } from './redis.module.js';

// Its own redis-server: the test changes the eviction policy.
describe('Redis health', () => {
  let server: RedisServerProcess;
  let redis: Redis;

  before(async () => {
    server = await startRedisServer();
    redis = new Redis(server.url);
  });

  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  itWith({ real: ['redis'] }, 'fails while the eviction policy could drop projected users, and passes under the safe ones', async () => {
    const health = new RedisHealth(redis);
    for (const policy of ['noeviction', 'volatile-lru', 'volatile-ttl']) {
      await redis.config('SET', 'maxmemory-policy', policy);
      await health.check();
    }
    for (const policy of ['allkeys-lru', 'allkeys-lfu', 'allkeys-random']) {
      await redis.config('SET', 'maxmemory-policy', policy);
      await assert.rejects(health.check(), new RegExp(`maxmemory-policy ${policy} may evict projected users`));
    }
  });
});
