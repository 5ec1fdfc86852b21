import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type ConsumerMessages } from '@nats-io/jetstream';
import type { StreamDefinition } from '@mfa/contracts';
import { eventually, startNatsCluster, tenantCreated, testTenant, type NatsCluster, type NatsClusterNode } from '@mfa/testing';
import { createLogger } from '@mfa/telemetry';
import { ensureStream, EventPublisher, followSubjects, readOnce, stalledConsumers } from './index.js';

/**
 * Followers (the ordered consumers behind the API clients, tenant settings and per-IP locks every
 * instance keeps in memory) on a NATS cluster of the test's own, never the shared server: the
 * server holding a follower's consumer dies for good, and the follower goes on from a live server
 * within seconds, with nothing skipped and nothing twice.
 */
const log = createLogger('follow-cluster-test', { level: 'error' });
const stream: StreamDefinition = {
  name: 'TEST_FOLLOW',
  subjects: ['follow.>'],
  maxAgeSeconds: 600,
  duplicateWindowSeconds: 120,
  description: 'follower cluster test',
};
const subject = 'follow.clients';

interface Follower {
  via: NatsClusterNode;
  nc: NatsConnection;
  seen: number[];
  messages?: ConsumerMessages;
}

describe('followers on a NATS cluster', () => {
  let cluster: NatsCluster;
  let followers: Follower[] = [];
  let admin: NatsConnection;
  const connections: NatsConnection[] = [];
  // The services' own reconnect settings (connectNats), each connection first to another node.
  const open = async (first: NatsClusterNode) => {
    const nc = await connect({
      servers: [first.url, ...cluster.nodes.filter((n) => n !== first).map((n) => n.url)],
      noRandomize: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      pingInterval: 10_000,
    });
    connections.push(nc);
    return nc;
  };

  before(async () => {
    cluster = await startNatsCluster({ nodes: 3 });
    admin = await open(cluster.nodes[0]!);
    await ensureStream(await jetstreamManager(admin, { timeout: 5_000 }), stream, 3);
    followers = await Promise.all(cluster.nodes.map(async (via) => ({ via, nc: await open(via), seen: [] as number[] })));
  });

  after(async () => {
    for (const f of followers) {
      await f.messages?.close().catch(() => undefined);
      await f.nc.close().catch(() => undefined);
    }
    for (const nc of connections) await nc.close().catch(() => undefined);
    await cluster?.stop();
  });

  it('a follower whose consumer\'s server dies for good consumes again from a live one, nothing skipped or repeated', { timeout: 180_000 }, async () => {
    const publisher = new EventPublisher(jetstream(admin, { timeout: 5_000 }));
    const publish = (n: number) => eventually(() => publisher.publish(subject, tenantCreated(testTenant({ tenantId: `t-${n}` }))).then((ack) => ack.seq), 30_000, `publish ${n}`);
    for (let n = 0; n < 3; n++) await publish(n);
    for (const f of followers) {
      f.messages = await followSubjects(jetstream(f.nc, { timeout: 5_000 }), stream.name, subject, (msg) => void f.seen.push(msg.seq), 10_000, undefined, { log });
      assert.deepEqual(f.seen, [1, 2, 3], `caught up through ${f.via.name}`);
    }
    // Each follower's consumer has one replica, on one server: kill the server holding the most.
    const jsm = await jetstreamManager(admin, { timeout: 5_000 });
    const placed = new Map<string, number>();
    for await (const c of jsm.consumers.list(stream.name)) {
      const at = c.cluster?.leader;
      if (at) placed.set(at, (placed.get(at) ?? 0) + 1);
    }
    const [victimName] = [...placed].sort((a, b) => b[1] - a[1])[0]!;
    const victim = cluster.node(victimName);
    await victim.kill();
    const killedAt = Date.now();
    let stalledSeen = false;
    const watch = setInterval(() => {
      if ([...stalledConsumers].some((name) => name.startsWith(`follower of ${subject}`))) stalledSeen = true;
    }, 100);
    try {
      // Events keep coming while the cluster re-elects what the dead server led.
      const published: number[] = [1, 2, 3];
      for (let n = 3; n < 13; n++) {
        published.push(await publish(n));
        await new Promise((r) => setTimeout(r, 200));
      }
      const publishedMs = Date.now() - killedAt;
      await eventually(async () => (followers.every((f) => f.seen.length === published.length) ? true : undefined), 30_000, `every follower to see the ${published.length} events (${followers.map((f) => `${f.via.name}: ${f.seen.length}`).join(', ')})`);
      const caughtUpMs = Date.now() - killedAt;
      for (const f of followers) assert.deepEqual(f.seen, published, `through ${f.via.name}: in order, none skipped, none twice`);
      // (Whether one was seen stalled depends on who noticed first: nats.js itself makes an ordered
      // consumer again when a live server answers that it is gone; the follower's watchdog when
      // none answers. messaging.int.spec.ts covers the stall itself.)
      await eventually(async () => ([...stalledConsumers].some((name) => name.startsWith(`follower of ${subject}`)) ? undefined : true), 5_000, 'health clear again');
      process.stdout.write(`# followers: ${victimName} (held ${placed.get(victimName)} of 3 consumers) killed for good; the last event published ${publishedMs} ms later, every follower had every event ${caughtUpMs} ms later${stalledSeen ? ' (a follower was stalled meanwhile)' : ''}\n`);
      // And it keeps going live.
      published.push(await publish(13));
      await eventually(async () => (followers.every((f) => f.seen.length === published.length) ? true : undefined), 10_000, 'the next live event');
    } finally {
      clearInterval(watch);
    }
  });

  it('a rebuild\'s read (readOnce) whose consumer\'s server dies for good mid-read goes on from a live one: every message once, in order', { timeout: 180_000 }, async () => {
    // The test before killed a node for good: back, so that the stream keeps a quorum when another dies.
    for (const node of cluster.nodes) if (!node.running()) await node.restart();
    await cluster.waitUntilReady(60_000);
    const filter = 'follow.read.>';
    const publisher = new EventPublisher(jetstream(admin, { timeout: 5_000 }));
    const published: number[] = [];
    // More than a pull holds (100), so that the read has messages left on the server when it dies.
    for (let n = 0; n < 400; n++) {
      published.push(await eventually(() => publisher.publish(`follow.read.${n % 20}`, tenantCreated(testTenant({ tenantId: `r-${n}` }))).then((ack) => ack.seq), 30_000, `publish ${n}`));
    }
    const jsm = await jetstreamManager(admin, { timeout: 5_000 });
    const reader = await open(cluster.nodes[1]!);
    const seen: number[] = [];
    let victim: NatsClusterNode | undefined;
    let killedAt = 0;
    const warnings: string[] = [];
    const reading = readOnce(jetstream(reader, { timeout: 5_000 }), stream.name, filter, { policy: 'all' }, async (msg) => {
      seen.push(msg.seq);
      if (seen.length !== 50) return;
      // The read's consumer has one replica, on one server: kill it for good.
      for await (const c of jsm.consumers.list(stream.name)) {
        if ((c.config.filter_subject === filter || c.config.filter_subjects?.includes(filter)) && c.cluster?.leader) victim = cluster.node(c.cluster.leader);
      }
      assert.ok(victim, 'the server holding the read\'s consumer');
      await victim.kill();
      killedAt = Date.now();
    }, { log: { ...log, warn: (message: string) => void warnings.push(message) } });
    let timer: NodeJS.Timeout | undefined;
    const count = await Promise.race([
      reading,
      new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new assert.AssertionError({ message: `readOnce did not finish within 90 s of the kill (${seen.length} of ${published.length} read)` })), 90_000))),
    ]).finally(() => clearTimeout(timer));
    assert.ok(victim);
    assert.deepEqual(seen, published, 'in order, none skipped, none twice');
    assert.equal(count, published.length);
    // By readOnce's own watchdog: nats.js asks the dead server for its consumer's info, which
    // nobody answers, and never makes it again itself.
    assert.ok(warnings.includes('stream read going on'), `readOnce made its consumer again (warnings: ${warnings.join('; ')})`);
    process.stdout.write(`# readOnce: ${victim.name} (held the read's consumer) killed after 50 of ${published.length} messages; the read finished ${Date.now() - killedAt} ms later\n`);
  });
});
