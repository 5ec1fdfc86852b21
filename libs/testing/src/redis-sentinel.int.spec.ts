import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { eventually } from './env.js';
import { startRedisSentinel, type RedisSentinelSetup } from './redis-sentinel.js';

// The harness against real redis-server and sentinel processes of its own (never the shared Redis).
describe('startRedisSentinel', () => {
  let setup: RedisSentinelSetup;
  let client: Redis;

  before(async () => {
    setup = await startRedisSentinel({ replicas: 2, sentinels: 3, masterName: 'mymaster' });
    const sentinels = setup.sentinels.split(',').map((address) => {
      const [host, port] = address.split(':');
      return { host: host!, port: Number(port) };
    });
    client = new Redis({ sentinels, name: setup.masterName, maxRetriesPerRequest: 1, sentinelRetryStrategy: () => 100, retryStrategy: () => 100 });
    // It cannot reach the killed master until the sentinels name the new one: expected, not news.
    client.on('error', () => undefined);
  });

  after(async () => {
    client?.disconnect();
    await setup?.stop();
  });

  it('starts a master, two linked replicas and three sentinels that agree on it', async () => {
    assert.equal(setup.servers.length, 3);
    assert.equal(setup.sentinelProcesses.length, 3);
    assert.equal(setup.sentinels, setup.sentinelProcesses.map((s) => `127.0.0.1:${s.port}`).join(','));
    assert.ok(![...setup.servers, ...setup.sentinelProcesses].some((s) => s.port === 6379 || s.port === 26379));
    const master = await setup.currentMaster();
    assert.equal(master, setup.servers[0]);
    assert.deepEqual(await Promise.all(setup.servers.map((s) => s.role())), ['master', 'replica', 'replica']);
  });

  it('promotes a replica when the master is killed; the old master comes back empty and a master until sentinel makes it a replica', { timeout: 90_000 }, async () => {
    const old = await setup.currentMaster();
    await client.set('greeting', 'hello');
    assert.equal(await client.get('greeting'), 'hello');
    // Replicated to both replicas before the master dies.
    await assertReplicated('greeting', 'hello');

    const oldPid = old.pid;
    await old.kill();
    assert.equal(old.running(), false);
    assert.throws(() => process.kill(oldPid, 0), 'the process is gone');
    const killedAt = Date.now();
    const promoted = await setup.waitForNewMaster(old.port, 30_000);
    const failoverMs = Date.now() - killedAt;
    assert.notEqual(promoted.port, old.port);
    assert.equal(await promoted.role(), 'master');
    assert.equal((await setup.currentMaster()).port, promoted.port);
    // The client follows the sentinels to the new master; the write made before the kill is there.
    assert.equal(await eventually(() => client.get('greeting').then((v) => v ?? undefined), 15_000, 'the greeting through the new master'), 'hello');
    await client.set('after', 'failover');

    // Restarted without --replicaof, the old master is an empty master beside the real one…
    await old.restart();
    assert.notEqual(old.pid, oldPid);
    assert.equal(await old.role(), 'master');
    const direct = new Redis(old.port);
    try {
      assert.equal(await direct.dbsize(), 0, 'it came back empty');
      // …until sentinel turns it into a replica of the new master, which gives it the data.
      const restartedAt = Date.now();
      const settled = await setup.waitUntilHealthy(30_000);
      const convertMs = Date.now() - restartedAt;
      // On a loaded machine the sentinels may fail over a second time (a node slow to answer for
      // down-after-milliseconds). Whichever node they settle on, it is never the old master while
      // it is empty: the write made after the first failover is there, and on the old master too.
      assert.equal(await old.role(), settled.port === old.port ? 'master' : 'replica');
      assert.equal(await eventually(() => direct.get('after').then((v) => v ?? undefined), 10_000, 'the data on the old master'), 'failover');
      assert.equal(await eventually(() => client.get('after').then((v) => v ?? undefined), 15_000, 'the write through the settled master'), 'failover');
      console.log(
        `master ${old.address} killed: sentinels named ${promoted.address} after ${failoverMs} ms; restarted, it was a master for ${convertMs} ms before sentinel made it a replica` +
          (settled.port === promoted.port ? '' : ` (then a second failover: ${settled.address} is the master)`),
      );
    } finally {
      direct.disconnect();
    }
  });

  async function assertReplicated(key: string, value: string): Promise<void> {
    for (const s of setup.servers) {
      const direct = new Redis(s.port);
      try {
        assert.equal(await eventually(() => direct.get(key).then((v) => v ?? undefined), 5_000, `${key} on ${s.address}`), value);
      } finally {
        direct.disconnect();
      }
    }
  }
});
