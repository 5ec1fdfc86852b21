import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { eventually } from './env.js';
import { startNatsCluster, type NatsCluster } from './nats-cluster.js';

// The harness against real nats-server processes of its own (never the shared one on 4222).
describe('startNatsCluster', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;

  before(async () => {
    cluster = await startNatsCluster({ nodes: 3 });
    nc = await connect({ servers: cluster.urls.split(','), reconnectTimeWait: 200, maxReconnectAttempts: -1 });
  });

  after(async () => {
    await nc?.close();
    await cluster?.stop();
  });

  it('starts three routed JetStream nodes on ports of their own', async () => {
    assert.equal(cluster.nodes.length, 3);
    assert.equal(cluster.urls, cluster.nodes.map((n) => `nats://127.0.0.1:${n.port}`).join(','));
    const ports = cluster.nodes.flatMap((n) => [n.port, n.clusterPort, n.monitorPort]);
    assert.equal(new Set(ports).size, 9);
    assert.ok(!ports.includes(4222));
    assert.ok(cluster.nodes.every((n) => n.running() && n.pid > 0));
    const leader = await cluster.metaLeader();
    assert.ok(leader, 'a JetStream meta leader');
    const jsm = await jetstreamManager(nc);
    const info = await jsm.getAccountInfo();
    assert.equal(info.streams, 0);
  });

  it('keeps an R3 stream writable when its leader is killed: a new leader is elected, nothing acknowledged is lost, the old one rejoins', { timeout: 90_000 }, async () => {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc, { timeout: 3_000 });
    const created = await jsm.streams.add({ name: 'ORDERS', subjects: ['orders.>'], num_replicas: 3 });
    assert.equal(created.cluster?.replicas?.length, 2, 'two followers besides the leader');
    for (let i = 1; i <= 5; i++) await js.publish(`orders.${i}`, `order ${i}`);

    const leader = await cluster.waitForStreamLeader('ORDERS');
    assert.equal((await jsm.streams.info('ORDERS')).cluster?.leader, leader.name);
    const killedPid = leader.pid;
    const killed = await cluster.killStreamLeader('ORDERS');
    assert.equal(killed.name, leader.name);
    assert.equal(killed.running(), false);
    assert.throws(() => process.kill(killedPid, 0), 'the process is gone');

    const killedAt = Date.now();
    const next = await cluster.waitForStreamLeader('ORDERS', { not: killed, timeoutMs: 30_000 });
    const electionMs = Date.now() - killedAt;
    assert.notEqual(next.name, killed.name);
    const ack = await eventually(() => js.publish('orders.6', 'order 6'), 20_000, 'a publish acknowledged by the new leader');
    const writableMs = Date.now() - killedAt;
    assert.equal(ack.seq, 6);
    const info = await jsm.streams.info('ORDERS');
    assert.equal(info.state.messages, 6);
    assert.equal(info.cluster?.leader, next.name);
    assert.equal((await jsm.streams.getMessage('ORDERS', { seq: 3 }))?.string(), 'order 3');

    await killed.restart();
    assert.ok(killed.running());
    assert.notEqual(killed.pid, killedPid);
    await eventually(async () => {
      const replica = (await jsm.streams.info('ORDERS')).cluster?.replicas?.find((r) => r.name === killed.name);
      return replica?.current ? true : undefined;
    }, 20_000, `${killed.name} current again as a follower of ORDERS`);
    assert.match(killed.output(), /Server is ready/);
    console.log(`stream leader ${killed.name} killed: ${next.name} led ORDERS after ${electionMs} ms, a publish succeeded after ${writableMs} ms`);
  });
});
