import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, Redis } from 'ioredis';
import type { RedisClient } from '@mfa/projection';
import { isTransientDependencyError } from '@mfa/messaging';
import { eventually, startRedisCluster, startRedisSentinel, startRedisServer, type RedisCluster, type RedisSentinelSetup } from '@mfa/testing';
import { createLogger } from '@mfa/telemetry';
import { ConfigError } from './config.js';
import { createRedis, REDIS_COMMAND_TIMEOUT_MS, whenRedisReady } from './redis.module.js';
import { parseHostPorts, type RedisConnection } from './redis-connection.js';
import { ReplicatedWrites } from './replicated-writes.js';

/**
 * The Redis adapter in cluster and sentinel modes, against set-ups of the test's own (never the
 * shared Redis): a replay guard accepted by a script answered through ReplicatedWrites survives
 * its master being killed the instant after the answer (the promoted replica has it), the client
 * follows the new master and is not sent to the old one when it comes back empty, and seeds or
 * sentinels that do not answer stop the boot naming the variable.
 */
const log = createLogger('redis-modes-test', { level: 'error' });
/** A replay guard as the verify scripts keep one: the first use of a code is accepted, any later one refused. */
const GUARD = "if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return {'accepted'} else return {'replayed'} end";
const hostPorts = (list: string) => parseHostPorts('REDIS_NODES', list).addresses;

async function open(connection: RedisConnection, replicas: number): Promise<{ redis: RedisClient; writes: ReplicatedWrites }> {
  const redis = createRedis({ connection, connectionName: 'test', log });
  await whenRedisReady(redis, connection, 20_000);
  const own = createRedis({ connection, connectionName: 'test-decisions', log });
  await whenRedisReady(own, connection, 20_000);
  const writes = new ReplicatedWrites(own, { replicas, timeoutMs: 1_000 }, log, true);
  writes.define('mfaTestGuard', { numberOfKeys: 1, lua: GUARD });
  redis.defineCommand('mfaTestGuard', { numberOfKeys: 1, lua: GUARD });
  // watchReplicas has read each master's replicas once.
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  return { redis, writes };
}

const guard = (redis: RedisClient, key: string) => (redis as unknown as { mfaTestGuard: (k: string, v: string) => Promise<string[]> }).mfaTestGuard(key, '1');

describe('Redis in sentinel mode: decisions survive a failover', () => {
  let setup: RedisSentinelSetup;
  let redis: RedisClient;
  let writes: ReplicatedWrites;

  before(async () => {
    setup = await startRedisSentinel({ replicas: 2, sentinels: 3, masterName: 'mymaster' });
    ({ redis, writes } = await open({ mode: 'sentinel', sentinels: hostPorts(setup.sentinels), name: setup.masterName }, 1));
  });
  after(async () => {
    await writes?.stop();
    redis?.disconnect();
    await setup?.stop();
  });

  it('a code accepted the instant before the master is killed is refused by the promoted replica, and the old master coming back empty is not used', { timeout: 120_000 }, async () => {
    const old = await setup.currentMaster();
    const keys = Array.from({ length: 50 }, (_, i) => `mfa:{t${i}}:totp:step`);
    // Fifty decisions in one tick: one pipeline and one WAIT; every one answered accepted.
    assert.deepEqual(await Promise.all(keys.map((k) => writes.run('mfaTestGuard', [k, '1']))), keys.map(() => ['accepted']));
    await old.kill();
    const promoted = await setup.waitForNewMaster(old.port, 30_000);
    const recovered = Date.now();
    // The replay is refused once the client reaches the new master (it retries until then).
    const replay = await eventually(() => writes.run('mfaTestGuard', [keys[49]!, '1']).catch(() => undefined), 15_000, 'a verify through the new master');
    assert.deepEqual(replay, ['replayed']);
    process.stdout.write(`# sentinel: sign-ins through the new master ${Date.now() - recovered} ms after it was named\n`);
    for (const k of keys) assert.deepEqual(await guard(redis, k), ['replayed'], k);
    // The old master restarts empty and, for seconds, a master: nothing goes to it.
    await old.restart();
    for (let i = 0; i < 10; i++) {
      assert.deepEqual(await guard(redis, keys[i]!), ['replayed']);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    // On a loaded machine the sentinels (down-after 1 s) may fail over once more, to either
    // replica. Whichever server is master now holds every decision: the one that came back empty
    // was not made master before it had them.
    const master = await setup.currentMaster();
    if (master.port !== promoted.port) process.stdout.write(`# sentinel: failed over again, to ${master.address} (the old master was 127.0.0.1:${old.port})\n`);
    const direct = new Redis({ host: '127.0.0.1', port: master.port, lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await direct.connect();
      assert.equal(await direct.exists(...keys), keys.length, `the master ${master.address} holds every decision`);
    } finally {
      direct.disconnect();
    }
  });
});

describe('Redis in sentinel mode: a master that hangs', () => {
  let setup: RedisSentinelSetup;
  let redis: RedisClient;

  before(async () => {
    setup = await startRedisSentinel({ replicas: 2, sentinels: 3, masterName: 'mymaster' });
    const connection: RedisConnection = { mode: 'sentinel', sentinels: hostPorts(setup.sentinels), name: setup.masterName };
    redis = createRedis({ connection, connectionName: 'test', log });
    await whenRedisReady(redis, connection, 20_000);
  });
  after(async () => {
    redis?.disconnect();
    await setup?.stop();
  });

  it('commands to a frozen master fail fast as an outage, and the connection moves to the replica the sentinels promote: no write answered by the old master', { timeout: 120_000 }, async () => {
    const old = await setup.currentMaster();
    assert.equal(await redis.set('mfa:{hang}:before', '1'), 'OK');
    // A hung master (or one cut off by a partition): its socket stays open, nothing answers.
    process.kill(old.pid, 'SIGSTOP');
    const frozenAt = Date.now();
    const acknowledged: string[] = [];
    try {
      const first = await Promise.race([
        redis.set('mfa:{hang}:during', '1').then(() => 'answered', (error: unknown) => error),
        new Promise((resolve) => setTimeout(() => resolve('no answer within 10 s'), 10_000)),
      ]);
      const failedAfter = Date.now() - frozenAt;
      assert.ok(first instanceof Error && isTransientDependencyError(first), `a transient error, not ${String(first)}`);
      assert.ok(failedAfter < 5_000, `failed after ${failedAfter} ms`);
      // Writes go on failing fast until the sentinels name the new master, then reach it.
      const writes = (async () => {
        for (let i = 0; Date.now() - frozenAt < 30_000; i++) {
          const ok = await redis.set(`mfa:{hang}:w${i}`, '1').then(() => true, () => false);
          if (ok) acknowledged.push(`mfa:{hang}:w${i}`);
          if (acknowledged.length >= 5) return;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      const promoted = await setup.waitForNewMaster(old.port, 30_000);
      const namedAt = Date.now();
      await writes;
      assert.ok(acknowledged.length >= 5, `writes acknowledged after the failover: ${acknowledged.length}`);
      const direct = new Redis({ host: '127.0.0.1', port: promoted.port, lazyConnect: true, maxRetriesPerRequest: 1 });
      try {
        await direct.connect();
        assert.equal(await direct.exists(...acknowledged), acknowledged.length, 'every acknowledged write is on the promoted master');
      } finally {
        direct.disconnect();
      }
      process.stdout.write(`# sentinel: a command to the frozen master failed after ${failedAfter} ms; new master named ${namedAt - frozenAt} ms after the freeze; writes reached it\n`);
    } finally {
      process.kill(old.pid, 'SIGCONT');
    }
  });
});

describe('Redis in cluster mode: scripts in one slot each, decisions survive a failover', () => {
  let cluster: RedisCluster;
  let redis: RedisClient;
  let writes: ReplicatedWrites;

  before(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
    ({ redis, writes } = await open({ mode: 'cluster', nodes: hostPorts(cluster.nodes) }, 1));
  });
  after(async () => {
    await writes?.stop();
    redis?.disconnect();
    await cluster?.stop();
  });

  it('runs decisions of users on every master in one tick (a pipeline and a WAIT per master)', async () => {
    assert.ok(redis instanceof Cluster);
    const keys = Array.from({ length: 60 }, (_, i) => `mfa:{u${i}}:totp:step`);
    const masters = new Set(await Promise.all(keys.map(async (k) => (await cluster.masterOf(k)).port)));
    assert.equal(masters.size, 3, 'the keys fall on all three masters');
    assert.deepEqual(await Promise.all(keys.map((k) => writes.run('mfaTestGuard', [k, '1']))), keys.map(() => ['accepted']));
    assert.deepEqual(await Promise.all(keys.map((k) => writes.run('mfaTestGuard', [k, '1']))), keys.map(() => ['replayed']));
  });

  it('a script whose keys are in two slots is refused by the cluster (CROSSSLOT), not run', async () => {
    redis.defineCommand('mfaTestTwoSlots', { numberOfKeys: 2, lua: "redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[2], 1); return 1" });
    const twoSlots = (redis as unknown as { mfaTestTwoSlots: (a: string, b: string) => Promise<number> }).mfaTestTwoSlots;
    await assert.rejects(twoSlots.call(redis, 'mfa:{a}:x', 'mfa:{b}:x'), /CROSSSLOT|same slot/i);
  });

  it('a code accepted the instant before its master is killed is refused after the replica took over', { timeout: 120_000 }, async () => {
    const key = 'mfa:{failover-user}:totp:step';
    const master = await cluster.masterOf(key);
    assert.deepEqual(await writes.run('mfaTestGuard', [key, '1']), ['accepted']);
    await master.kill();
    const killedAt = Date.now();
    await cluster.waitForFailover(master, 30_000);
    const replay = await eventually(() => writes.run('mfaTestGuard', [key, '1']).catch(() => undefined), 15_000, 'a verify through the promoted replica');
    assert.deepEqual(replay, ['replayed']);
    process.stdout.write(`# cluster: the replay refused ${Date.now() - killedAt} ms after the master was killed\n`);
    assert.deepEqual(await guard(redis, key), ['replayed']);
  });
});

describe('Redis standalone: a server that does not answer', () => {
  it('fails a command after the command timeout, as an outage, instead of leaving it (and its request) waiting; answers again once the server does', { timeout: 60_000 }, async () => {
    const server = await startRedisServer();
    const connection: RedisConnection = { mode: 'standalone', url: server.url };
    const redis = createRedis({ connection, connectionName: 'test', log });
    try {
      assert.equal(await redis.set('mfa:{hung}:k', '1'), 'OK');
      process.kill(server.pid, 'SIGSTOP');
      const started = Date.now();
      try {
        const outcome = await Promise.race([
          redis.get('mfa:{hung}:k').then(() => 'answered', (error: unknown) => error),
          new Promise((resolve) => setTimeout(() => resolve('no answer within 10 s'), 10_000)),
        ]);
        const took = Date.now() - started;
        assert.ok(outcome instanceof Error && isTransientDependencyError(outcome), `a transient error, not ${String(outcome)}`);
        assert.ok(took >= REDIS_COMMAND_TIMEOUT_MS - 50 && took < REDIS_COMMAND_TIMEOUT_MS + 1_000, `failed after ${took} ms`);
      } finally {
        process.kill(server.pid, 'SIGCONT');
      }
      assert.equal(await eventually(() => redis.get('mfa:{hung}:k').then((v) => v ?? undefined), 5_000, 'an answer once the server answers'), '1');
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });
});

describe('Redis seeds or sentinels that do not answer', () => {
  it('stop the boot naming the variable', { timeout: 30_000 }, async () => {
    const cases: Array<[RedisConnection, RegExp]> = [
      [{ mode: 'cluster', nodes: [{ host: '127.0.0.1', port: 1 }] }, /^REDIS_NODES: Redis \(cluster 127\.0\.0\.1:1\) not ready within 1\.5 s/],
      [{ mode: 'sentinel', sentinels: [{ host: '127.0.0.1', port: 1 }], name: 'mymaster' }, /^REDIS_SENTINELS: Redis \(sentinel mymaster via 127\.0\.0\.1:1\) not ready/],
    ];
    for (const [connection, variable] of cases) {
      const redis = createRedis({ connection, connectionName: 'test', log });
      await assert.rejects(whenRedisReady(redis, connection, 1_500), (e: Error) => e instanceof ConfigError && variable.test(e.message));
      redis.disconnect();
    }
  });
});
