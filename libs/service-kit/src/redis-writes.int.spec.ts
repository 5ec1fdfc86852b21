import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { itWith, testEnv } from '@mfa/testing';
import { createLogger } from '@mfa/telemetry';
import { createRedis } from './redis.module.js';

/** Counts what a socket hands the kernel: one `_writev` per batch of chunks, one `_write` per lone chunk. */
function countWrites(socket: Socket): { batches: number[]; single: number } {
  const seen = { batches: [] as number[], single: 0 };
  const writev = socket._writev!.bind(socket);
  const write = socket._write.bind(socket);
  socket._writev = (chunks, cb) => {
    seen.batches.push(chunks.length);
    writev(chunks, cb);
  };
  socket._write = (chunk, encoding, cb) => {
    seen.single++;
    write(chunk, encoding, cb);
  };
  return seen;
}

const ready = async (redis: Redis): Promise<void> => {
  if (redis.status !== 'ready') await once(redis, 'ready');
};

describe('Redis writes: the commands of one turn leave in one write', () => {
  let redis: Redis;
  const prefix = `writes-test:${randomUUID()}`;

  before(async () => {
    redis = createRedis({
      connection: { mode: 'standalone', url: testEnv.redisUrl },
      connectionName: 'writes-test',
      log: createLogger('writes-test', { level: 'error' }),
    }) as Redis;
    await ready(redis);
  });

  after(async () => {
    await redis?.del(...Array.from({ length: 40 }, (_, i) => `${prefix}:${i}`), `${prefix}:list`);
    redis?.disconnect();
  });

  itWith({ real: ['redis'] }, 'sends the commands of one turn in one write, and each gets its own reply', async () => {
    const writes = countWrites(redis.stream as Socket);
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => redis.set(`${prefix}:${i}`, String(i), 'EX', 60)));
    assert.deepEqual(replies, Array(40).fill('OK'));
    assert.deepEqual(writes.batches, [40], 'one writev of the 40 commands');
    assert.equal(writes.single, 0);

    // The next turn is a write of its own; a command refused by Redis fails alone.
    await redis.rpush(`${prefix}:list`, 'x');
    const [value, wrongType, other] = await Promise.allSettled([redis.get(`${prefix}:7`), redis.get(`${prefix}:list`), redis.incr(`${prefix}:3`)]);
    assert.deepEqual(value, { status: 'fulfilled', value: '7' });
    assert.equal(wrongType.status, 'rejected');
    assert.match(String((wrongType as PromiseRejectedResult).reason), /WRONGTYPE/);
    assert.deepEqual(other, { status: 'fulfilled', value: 4 });
    assert.deepEqual(writes.batches, [40, 3]);
    assert.equal(writes.single, 1, 'the RPUSH, alone in its turn');
  });

  itWith({ real: ['redis'] }, 'keeps doing so on the socket of a new connection', async () => {
    const before = redis.stream;
    redis.disconnect(true);
    await once(redis, 'ready');
    assert.notEqual(redis.stream, before);
    const writes = countWrites(redis.stream as Socket);
    const values = await Promise.all(Array.from({ length: 10 }, (_, i) => redis.get(`${prefix}:${i}`)));
    assert.deepEqual(values, Array.from({ length: 10 }, (_, i) => String(i === 3 ? 4 : i)));
    assert.deepEqual(writes.batches, [10]);
    assert.equal(writes.single, 0);
  });
});
