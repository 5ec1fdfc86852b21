import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { eventually } from './env.js';
import { startRedisCluster, type RedisCluster } from './redis-cluster.js';

// The harness against real redis-server processes of its own (never the shared one on 6379).
describe('startRedisCluster', () => {
  let cluster: RedisCluster;
  let client: Cluster;

  before(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
    const seeds = cluster.nodes.split(',').map((address) => {
      const [host, port] = address.split(':');
      return { host: host!, port: Number(port) };
    });
    client = new Cluster(seeds, { clusterRetryStrategy: () => 100, redisOptions: { maxRetriesPerRequest: 1 } });
    // It cannot reach the killed master until the cluster fails it over: expected, not news.
    client.on('error', () => undefined);
  });

  after(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  it('starts three masters with a linked replica each, on ports of their own', async () => {
    assert.equal(cluster.servers.length, 6);
    assert.equal(cluster.nodes, cluster.servers.map((s) => `127.0.0.1:${s.port}`).join(','));
    assert.ok(!cluster.servers.some((s) => s.port === 6379 || s.busPort === 16379));
    const masters = await cluster.masters();
    assert.equal(masters.length, 3);
    const roles = await Promise.all(cluster.servers.map((s) => s.role()));
    assert.equal(roles.filter((r) => r === 'master').length, 3);
    assert.equal(roles.filter((r) => r === 'replica').length, 3);
    for (const key of ['a', 'b', 'c', 'user:{42}']) assert.ok(masters.includes(await cluster.masterOf(key)));
  });

  it('fails a killed master over to its replica, and the cluster serves every slot again', { timeout: 60_000 }, async () => {
    const keys = Array.from({ length: 30 }, (_, i) => `key-${i}`);
    for (const key of keys) await client.set(key, `value of ${key}`);
    assert.equal(await client.get('key-7'), 'value of key-7');

    const victim = await cluster.masterOf('key-7');
    // Replication is asynchronous: the kill comes only once the victim's replica has every write.
    const direct = new Redis(victim.url);
    await eventually(async () => {
      const info = await direct.info('replication');
      const offset = /^master_repl_offset:(\d+)/m.exec(info)?.[1];
      const replica = /^slave0:.*offset=(\d+)/m.exec(info)?.[1];
      return offset !== undefined && replica === offset ? true : undefined;
    }, 10_000, "the victim's replica caught up");
    direct.disconnect();
    const victimPid = victim.pid;
    await victim.kill();
    assert.equal(victim.running(), false);
    assert.throws(() => process.kill(victimPid, 0), 'the process is gone');
    const killedAt = Date.now();
    const promoted = await cluster.waitForFailover(victim, 30_000);
    const failoverMs = Date.now() - killedAt;
    assert.notEqual(promoted.port, victim.port);
    assert.equal(await promoted.role(), 'master');
    assert.equal(await cluster.masterOf('key-7'), promoted);

    // The replica had the data: nothing written before the kill is lost.
    for (const key of keys) assert.equal(await eventually(() => client.get(key).then((v) => v ?? undefined), 30_000, key), `value of ${key}`);
    await client.set('key-7', 'after the failover');
    assert.equal(await client.get('key-7'), 'after the failover');

    // The old master comes back as a replica of the new one, empty, then synced from it.
    await victim.restart();
    assert.notEqual(victim.pid, victimPid);
    await cluster.waitUntilHealthy(30_000);
    assert.equal(await victim.role(), 'replica');
    assert.equal((await cluster.masters()).length, 3);
    assert.equal(await cluster.masterOf('key-7'), promoted);
    console.log(`master ${victim.address} killed: ${promoted.address} served its slots after ${failoverMs} ms`);
  });
});
