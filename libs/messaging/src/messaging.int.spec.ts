import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { jetstream } from '@nats-io/jetstream';
import { ContractError, Headers, Streams, type ConsumerDefinition, type StreamDefinition } from '@mfa/contracts';
import { eventually, itWith, tenantCreated, testEnv, testTenant } from '@mfa/testing';
import { createLogger } from '@mfa/telemetry';
import {
  ConcurrencyError,
  connectNats,
  ensureConsumer,
  ensureStream,
  EventConsumer,
  EventPublisher,
  followSubjects,
  PoisonMessageError,
  readAggregate,
  readOnce,
  requestJson,
  stalledConsumers,
  StreamUnreachableError,
  isTransientDependencyError,
  type Delivery,
  type NatsClients,
} from './index.js';

const run = randomUUID().slice(0, 8);
const stream: StreamDefinition = {
  name: `TEST_MESSAGING_${run}`,
  subjects: [`test.${run}.>`],
  maxAgeSeconds: 600,
  duplicateWindowSeconds: 120,
  description: 'messaging integration test',
};
const consumer: ConsumerDefinition = {
  stream: stream.name,
  durable: `test-${run}`,
  filterSubject: '>',
  maxDeliver: 3,
  ackWaitSeconds: 5,
  description: 'messaging integration test',
};
const log = createLogger('messaging-test');
const tenantEvent = (tenantId: string) => tenantCreated(testTenant({ tenantId }));
/** `promise`, or a failed assertion naming `what` once `ms` passed (a hang fails the test instead of stalling it). */
async function withinMs<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what}: not within ${ms} ms` })), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('messaging against a real nats-server', () => {
  let nats: NatsClients;
  let publisher: EventPublisher;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'messaging-test' });
    await ensureStream(nats.jsm, stream);
    await ensureStream(nats.jsm, stream); // idempotent
    await ensureStream(nats.jsm, Streams.deadLetters);
    publisher = new EventPublisher(nats.js);
  });

  after(async () => {
    await nats.jsm.streams.delete(stream.name).catch(() => undefined);
    await nats.nc.drain();
  });

  itWith({ real: ['nats'] }, 'stores a re-published event once (Nats-Msg-Id) and refuses an append on a moved aggregate', async () => {
    const subject = `test.${run}.aggregate`;
    const first = tenantEvent('t1');
    const a = await publisher.publish(subject, first, { expectedLastSubjectSequence: 0 });
    const again = await publisher.publish(subject, first);
    assert.equal(again.duplicate, true);
    assert.equal(again.seq, a.seq);
    await assert.rejects(publisher.publish(subject, tenantEvent('t1'), { expectedLastSubjectSequence: 0 }), ConcurrencyError);
    const b = await publisher.publish(subject, tenantEvent('t1'), { expectedLastSubjectSequence: a.seq });
    const stored = await readAggregate(nats.jsm, stream.name, subject, log);
    assert.deepEqual(stored.events.map((s) => s.seq), [a.seq, b.seq]);
    assert.equal(stored.events[0]!.event.id, first.id);
    assert.equal(stored.lastSeq, b.seq);
  });

  itWith({ real: ['nats'] }, 'acks what succeeds, retries what fails, and dead-letters poison and exhausted messages with the reason', async () => {
    await ensureConsumer(nats.jsm, consumer, 100);
    const flaky = tenantEvent('flaky');
    const poison = tenantEvent('poison');
    const hopeless = tenantEvent('hopeless');
    const fine = tenantEvent('fine');
    const seen = new Map<string, number>();
    const handled = new Set<string>();
    const handle = async (deliveries: Delivery[]) => {
      for (const { event } of deliveries) {
        seen.set(event.tenantId, (seen.get(event.tenantId) ?? 0) + 1);
        if (event.tenantId === 'flaky' && seen.get('flaky') === 1) throw new Error('transient');
        if (event.tenantId === 'poison') throw new PoisonMessageError('cannot ever work');
        if (event.tenantId === 'hopeless') throw new Error('always failing');
      }
      for (const { event } of deliveries) handled.add(event.tenantId);
    };
    const worker = new EventConsumer({ js: nats.js, definition: consumer, log, handle, batchSize: 10, maxBackoffMs: 200 });
    await worker.start();
    for (const e of [flaky, poison, hopeless, fine]) await publisher.publish(`test.${run}.work`, e);
    await nats.nc.publish(`test.${run}.work`, '{ not an event');
    await nats.nc.publish(`test.${run}.work`, JSON.stringify({ ...tenantEvent('proto'), type: 'constructor' }));
    const deadline = Date.now() + 15_000;
    let dead: Array<{ reason: string; deliveries: string; data: string }> = [];
    while (Date.now() < deadline) {
      dead = [];
      for (let seq = 1; ; ) {
        const msg = await nats.jsm.direct.getMessage(Streams.deadLetters.name, { seq, next_by_subj: `mfa.dlq.${consumer.durable}` });
        if (!msg) break;
        dead.push({
          reason: msg.header?.get(Headers.deadLetterReason) ?? '',
          deliveries: msg.header?.get(Headers.deadLetterDeliveries) ?? '',
          data: msg.string(),
        });
        seq = msg.seq + 1;
      }
      if (dead.length >= 4 && handled.has('flaky') && handled.has('fine')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await worker.stop();
    assert.ok(handled.has('fine'), 'a good neighbour of poison messages is processed');
    assert.ok(handled.has('flaky'), 'a transient failure is retried');
    assert.equal(seen.get('flaky'), 2);
    assert.equal(dead.length, 4, JSON.stringify(dead));
    assert.ok(dead.some((d) => d.reason.startsWith('poison: cannot ever work') && d.data.includes('"poison"')));
    assert.ok(dead.some((d) => d.reason.startsWith('failed 3 deliveries') && d.deliveries === '3' && d.data.includes('"hopeless"')));
    assert.ok(dead.some((d) => d.reason.startsWith('unparseable event') && d.data === '{ not an event'));
    assert.ok(dead.some((d) => d.reason === 'unparseable event: unknown event type "constructor"' && d.data.includes('"proto"')));
    const info = await nats.jsm.consumers.info(stream.name, consumer.durable);
    assert.equal(info.num_ack_pending, 0, 'nothing left unacknowledged');
    assert.equal(info.num_pending, 0);
  });

  /** The dead letters of a durable so far (reasons). */
  const deadLettersOf = async (durable: string): Promise<string[]> => {
    const reasons: string[] = [];
    for (let seq = 1; ; ) {
      const msg = await nats.jsm.direct.getMessage(Streams.deadLetters.name, { seq, next_by_subj: `mfa.dlq.${durable}` });
      if (!msg) return reasons;
      reasons.push(msg.header?.get(Headers.deadLetterReason) ?? '');
      seq = msg.seq + 1;
    }
  };

  itWith({ real: ['nats'] }, 'outage retries do not count towards maxDeliver: four unavailable failures, then one plain error, then success is not dead-lettered', async () => {
    const def: ConsumerDefinition = { ...consumer, durable: `test-outage-${run}`, filterSubject: `test.${run}.outage`, maxDeliver: 3 };
    await ensureConsumer(nats.jsm, def, 100);
    const attempts: number[] = [];
    const worker = new EventConsumer({
      js: nats.js,
      definition: def,
      log,
      maxBackoffMs: 50,
      handle: async ([d]) => {
        attempts.push(d!.msg.info.deliveryCount);
        if (attempts.length <= 4) throw new ContractError('unavailable', 'Redis is down');
        if (attempts.length === 5) throw new Error('a real failure, the first');
      },
    });
    await worker.start();
    try {
      await publisher.publish(`test.${run}.outage`, tenantEvent('outage'));
      await eventually(async () => (attempts.length >= 6 ? true : undefined), 10_000, 'handled after the outage and one failure');
      assert.deepEqual(attempts, [1, 2, 3, 4, 5, 6]);
      assert.deepEqual(await deadLettersOf(def.durable), [], 'not dead-lettered: only one failure that was not an outage');
      await eventually(async () => ((await nats.jsm.consumers.info(def.stream, def.durable)).num_ack_pending === 0 ? true : undefined), 5_000, 'acked');
    } finally {
      await worker.stop();
      await nats.jsm.consumers.delete(def.stream, def.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'a handler cut short by the stop returns its message (nak) for another instance: not counted, not dead-lettered', async () => {
    const def: ConsumerDefinition = { ...consumer, durable: `test-interrupted-${run}`, filterSubject: `test.${run}.interrupted`, maxDeliver: 1, ackWaitSeconds: 30 };
    await ensureConsumer(nats.jsm, def, 100);
    const stopping = new AbortController();
    let started = false;
    const first = new EventConsumer({
      js: nats.js,
      definition: def,
      log,
      handle: async () => {
        started = true;
        // As dispatch's waits between retries end on the transport's stop signal.
        await new Promise<void>((_, reject) => stopping.signal.addEventListener('abort', () => reject(new Error('stopping while waiting to retry'))));
      },
    });
    await first.start();
    await publisher.publish(`test.${run}.interrupted`, tenantEvent('interrupted'));
    await eventually(async () => (started ? true : undefined), 5_000, 'taken up');
    // The transport's order: the consumers stop, then the signal aborts.
    const stopped = first.stop();
    stopping.abort();
    await stopped;
    const handled: string[] = [];
    const second = new EventConsumer({ js: nats.js, definition: def, log, handle: async (d) => void handled.push(...d.map((x) => x.event.tenantId)) });
    await second.start();
    try {
      await eventually(async () => (handled.includes('interrupted') ? true : undefined), 10_000, 'handled by the next instance');
      assert.deepEqual(await deadLettersOf(def.durable), []);
    } finally {
      await second.stop();
      await nats.jsm.consumers.delete(def.stream, def.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'a batch that fails for an outage is returned whole and comes back as a batch, not one message at a time', async () => {
    const def: ConsumerDefinition = { ...consumer, durable: `test-batch-outage-${run}`, filterSubject: `test.${run}.batch-outage` };
    await ensureConsumer(nats.jsm, def, 100);
    for (let i = 0; i < 3; i++) await publisher.publish(`test.${run}.batch-outage`, tenantEvent(`batch-${i}`));
    const calls: string[][] = [];
    const worker = new EventConsumer({
      js: nats.js,
      definition: def,
      log,
      batchSize: 10,
      maxWaitMs: 300,
      maxBackoffMs: 50,
      handle: async (deliveries) => {
        calls.push(deliveries.map((d) => d.event.tenantId));
        if (calls.length === 1) throw new ContractError('unavailable', 'Postgres is down');
      },
    });
    await worker.start();
    try {
      await eventually(async () => (calls.length >= 2 ? true : undefined), 10_000, 'the batch handled again');
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(calls, [['batch-0', 'batch-1', 'batch-2'], ['batch-0', 'batch-1', 'batch-2']], JSON.stringify(calls));
    } finally {
      await worker.stop();
      await nats.jsm.consumers.delete(def.stream, def.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'messages pulled ahead of a slow handler do not outlive their ack wait: each is handled once', async () => {
    const def: ConsumerDefinition = { ...consumer, durable: `test-ahead-${run}`, filterSubject: `test.${run}.ahead`, ackWaitSeconds: 2 };
    await ensureConsumer(nats.jsm, def, 100);
    for (let i = 0; i < 6; i++) await publisher.publish(`test.${run}.ahead`, tenantEvent(`ahead-${i}`));
    const handled: string[] = [];
    const worker = new EventConsumer({
      js: nats.js,
      definition: def,
      log,
      handle: async ([d]) => {
        handled.push(d!.event.tenantId);
        await new Promise((r) => setTimeout(r, 1_200));
      },
    });
    await worker.start();
    try {
      await eventually(async () => (handled.length >= 6 ? true : undefined), 20_000, 'all six handled');
      // Long enough for a copy whose ack wait ran out to come back.
      await new Promise((r) => setTimeout(r, 3_000));
      assert.deepEqual(handled, ['ahead-0', 'ahead-1', 'ahead-2', 'ahead-3', 'ahead-4', 'ahead-5']);
      const info = await nats.jsm.consumers.info(def.stream, def.durable);
      assert.equal(info.num_redelivered, 0, 'none delivered a second time');
      assert.equal(info.num_ack_pending, 0);
    } finally {
      await worker.stop();
      await nats.jsm.consumers.delete(def.stream, def.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'reads an aggregate past events it cannot read, logging each, and counts them in its last sequence', async () => {
    const subject = `test.${run}.unreadable`;
    const errors: Array<{ msg: string; fields: Record<string, unknown> | undefined }> = [];
    const recording = { ...log, error: (msg: string, fields?: Record<string, unknown>) => void errors.push({ msg, fields }) };
    const good = tenantEvent('t2');
    const a = await publisher.publish(subject, good, { expectedLastSubjectSequence: 0 });
    const raw = (body: unknown) => nats.js.publish(subject, typeof body === 'string' ? body : JSON.stringify(body));
    const constructor = await raw({ ...tenantEvent('t2'), type: 'constructor' });
    const unknown = await raw({ ...tenantEvent('t2'), type: 'TenantRenamed' });
    const b = await publisher.publish(subject, tenantEvent('t2'), { expectedLastSubjectSequence: unknown.seq });
    const garbage = await raw('{ not json');

    const stored = await readAggregate(nats.jsm, stream.name, subject, recording);
    assert.deepEqual(stored.events.map((s) => s.seq), [a.seq, b.seq]);
    assert.equal(stored.lastSeq, garbage.seq, 'the next append must expect the last message, even an unreadable one');
    assert.deepEqual(errors.map((e) => e.fields?.seq), [constructor.seq, unknown.seq, garbage.seq]);
    assert.ok(errors.every((e) => e.msg === 'unreadable event skipped while loading an aggregate' && e.fields?.subject === subject));
    assert.match(String((errors[0]!.fields?.error as Error).message), /unknown event type "constructor"/);
    await publisher.publish(subject, tenantEvent('t2'), { expectedLastSubjectSequence: stored.lastSeq });
  });

  itWith({ real: ['nats'] }, 'completes requests as nats.js does: answers, acks, timeouts and no responders', async () => {
    const subject = `testreq.${run}.echo`;
    const sub = nats.nc.subscribe(subject, {
      callback: (_e, m) => {
        if (m.data.length > 0) m.respond(m.data);
      },
    });
    const answered = await nats.nc.request(subject, 'ping', { timeout: 2_000 });
    assert.equal(answered.string(), 'ping');
    // JetStream publishes are requests too: their acks still arrive.
    const ack = await publisher.publish(`test.${run}.completion`, tenantEvent('completion'));
    assert.ok(ack.seq > 0);
    // An unanswered request still times out, and one nobody listens to still says so.
    await assert.rejects(nats.nc.request(subject, '', { timeout: 200 }), (e: Error) => /timeout/i.test(`${e.name} ${e.message}`));
    await assert.rejects(nats.nc.request(`testreq.${run}.nobody`, 'x', { timeout: 2_000 }), (e: Error) => /no responders/i.test(`${e.message} ${(e.cause as Error | undefined)?.message}`));
    sub.unsubscribe();
  });

  itWith({ real: ['nats'] }, 'requestJson sends a request again while nobody subscribes (a service reconnecting), and says no responders after 2 s', async () => {
    const subject = `testreq.${run}.late`;
    const late = new Promise<void>((resolve) =>
      setTimeout(() => {
        nats.nc.subscribe(subject, { max: 1, callback: (_e, m) => void m.respond(JSON.stringify({ late: true })) });
        resolve();
      }, 300),
    );
    assert.deepEqual(await requestJson(nats.nc, subject, {}, { timeoutMs: 5_000 }), { late: true });
    await late;
    const started = Date.now();
    await assert.rejects(requestJson(nats.nc, `testreq.${run}.nobody-ever`, {}, { timeoutMs: 5_000 }), (e: Error) => /no responders/i.test(`${e.message} ${(e.cause as Error | undefined)?.message}`));
    const took = Date.now() - started;
    assert.ok(took >= 1_500 && took < 3_000, `${took} ms`);
  });

  itWith({ real: ['nats'] }, 'creates a durable consumer again when the server deletes it, and consumes on', async () => {
    const gone: ConsumerDefinition = { ...consumer, durable: `test-gone-${run}`, filterSubject: `test.${run}.gone` };
    await ensureConsumer(nats.jsm, gone, 100);
    const handled: string[] = [];
    const worker = new EventConsumer({
      js: nats.js,
      definition: gone,
      log,
      recreate: () => ensureConsumer(nats.jsm, gone, 100),
      handle: async (d) => void handled.push(...d.map((x) => x.event.tenantId)),
    });
    await worker.start();
    try {
      await publisher.publish(`test.${run}.gone`, tenantEvent('before'));
      await eventually(async () => (handled.includes('before') ? true : undefined), 5_000, 'consumed before the deletion');
      await nats.jsm.consumers.delete(gone.stream, gone.durable);
      await eventually(async () => ((await nats.jsm.consumers.info(gone.stream, gone.durable).catch(() => null)) ? true : undefined), 15_000, 'the consumer created again');
      await publisher.publish(`test.${run}.gone`, tenantEvent('after'));
      await eventually(async () => (handled.includes('after') ? true : undefined), 15_000, 'consumed after the re-creation');
      assert.ok(!stalledConsumers.has(gone.durable));
    } finally {
      await worker.stop();
      await nats.jsm.consumers.delete(gone.stream, gone.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'start() looks the consumer up again when JetStream does not answer at first (a new cluster electing its leader)', async () => {
    const slow: ConsumerDefinition = { ...consumer, durable: `test-slow-${run}`, filterSubject: `test.${run}.slow` };
    await ensureConsumer(nats.jsm, slow, 100);
    // The consumer's JetStream API under a prefix of the test's own, forwarded to the server's:
    // the first look-up is left unanswered, as a consumer with no leader yet leaves it.
    const prefix = `$TESTJS.${run}`;
    const lookups: string[] = [];
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        const api = msg.subject.slice(prefix.length + 1);
        if (api.startsWith('CONSUMER.INFO.')) {
          lookups.push(api);
          if (lookups.length === 1) return;
        }
        nats.nc.publish(`$JS.API.${api}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    const handled: string[] = [];
    const worker = new EventConsumer({
      js: jetstream(nats.nc, { apiPrefix: prefix }),
      definition: slow,
      log,
      handle: async (d) => void handled.push(...d.map((x) => x.event.tenantId)),
    });
    try {
      await worker.start();
      assert.deepEqual(lookups, [`CONSUMER.INFO.${slow.stream}.${slow.durable}`, `CONSUMER.INFO.${slow.stream}.${slow.durable}`], 'looked up twice: the first went unanswered');
      await publisher.publish(`test.${run}.slow`, tenantEvent('after-a-slow-start'));
      await eventually(async () => (handled.includes('after-a-slow-start') ? true : undefined), 5_000, 'consumed after the slow start');
    } finally {
      await worker.stop();
      forward.unsubscribe();
      await nats.jsm.consumers.delete(slow.stream, slow.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'confirmAcks: each ack is confirmed by the server before the handler\'s slot is free; nothing comes again', async () => {
    const confirmed: ConsumerDefinition = { ...consumer, durable: `test-confirm-${run}`, filterSubject: `test.${run}.confirm`, ackWaitSeconds: 30 };
    await ensureConsumer(nats.jsm, confirmed, 100);
    const handled: string[] = [];
    const worker = new EventConsumer({ js: nats.js, definition: confirmed, log, confirmAcks: true, concurrency: 4, handle: async (d) => void handled.push(...d.map((x) => x.event.tenantId)) });
    await worker.start();
    try {
      for (let i = 0; i < 20; i++) await publisher.publish(`test.${run}.confirm`, tenantEvent(`confirm-${i}`));
      await eventually(async () => (handled.length >= 20 ? true : undefined), 10_000, 'all handled');
      await eventually(async () => ((await nats.jsm.consumers.info(confirmed.stream, confirmed.durable)).num_ack_pending === 0 ? true : undefined), 5_000, 'every ack recorded by the server');
      const info = await nats.jsm.consumers.info(confirmed.stream, confirmed.durable);
      assert.equal(info.num_redelivered, 0);
      assert.equal(info.ack_floor.stream_seq, info.delivered.stream_seq);
      assert.equal(new Set(handled).size, 20, 'each once');
    } finally {
      await worker.stop();
      await nats.jsm.consumers.delete(confirmed.stream, confirmed.durable).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'a follower goes on past a message its handler throws on (logged, counted), live and at catch-up', async () => {
    const subject = `test.${run}.follow`;
    await publisher.publish(subject, tenantEvent('f-before'));
    await nats.nc.publish(subject, '{ not json');
    await publisher.publish(subject, tenantEvent('f-caught-up'));
    const seen: string[] = [];
    const errors: Array<Record<string, unknown> | undefined> = [];
    const recording = { ...log, error: (_msg: string, fields?: Record<string, unknown>) => void errors.push(fields) };
    // As the callers do: msg.json() in the callback, which throws on a body that is not JSON.
    const follower = await followSubjects(nats.js, stream.name, subject, (msg) => void seen.push((msg.json() as { tenantId: string }).tenantId), 5_000, undefined, { log: recording });
    try {
      assert.deepEqual(seen, ['f-before', 'f-caught-up'], 'caught up past the unreadable message');
      await nats.nc.publish(subject, 'neither is this');
      await publisher.publish(subject, tenantEvent('f-live'));
      await eventually(async () => (seen.includes('f-live') ? true : undefined), 5_000, 'a live message after a live unreadable one');
      assert.equal(errors.length, 2);
      assert.ok(errors.every((e) => e?.stream === stream.name && typeof e.seq === 'number'));
    } finally {
      await follower.close();
    }
  });

  itWith({ real: ['nats'] }, 'a follower whose server falls silent (no heartbeat, no answer to a look-up) says so in health and consumes again, from where it was, once one answers', async () => {
    const subject = `test.${run}.silent`;
    // The follower's JetStream API under a prefix of the test's own, forwarded to the server's until
    // the test cuts it: as a server that died while holding the follower's consumer leaves it.
    const prefix = `$TESTFJS.${run}`;
    let cut = false;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        if (cut) return;
        nats.nc.publish(`$JS.API.${msg.subject.slice(prefix.length + 1)}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    const name = `follower of ${subject} on ${stream.name}`;
    const seen: string[] = [];
    await publisher.publish(subject, tenantEvent('s-1'));
    const follower = await followSubjects(jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }), stream.name, subject, (msg) => void seen.push((msg.json() as { tenantId: string }).tenantId), 5_000, undefined, { log });
    try {
      assert.deepEqual(seen, ['s-1']);
      cut = true;
      await eventually(async () => (stalledConsumers.has(name) ? true : undefined), 10_000, 'the follower stalled, in what /health reads');
      await publisher.publish(subject, tenantEvent('s-2'));
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(seen, ['s-1'], 'nothing while no server answers');
      cut = false;
      await eventually(async () => (seen.includes('s-2') ? true : undefined), 5_000, 'consuming again once a server answers');
      assert.ok(!stalledConsumers.has(name), 'health clear again');
      await publisher.publish(subject, tenantEvent('s-3'));
      await eventually(async () => (seen.includes('s-3') ? true : undefined), 5_000, 'live after it');
      assert.deepEqual(seen, ['s-1', 's-2', 's-3'], 'none skipped, none twice');
    } finally {
      await follower.close();
      forward.unsubscribe();
    }
  });

  itWith({ real: ['nats'] }, 'a follower whose consumers are made but never deliver (the API answers, pulls get nothing) stays stalled in health across its restarts, until one is heard from', async () => {
    const subject = `test.${run}.nopullfollow`;
    const prefix = `$TESTNFJS.${run}`;
    let cutPulls = false;
    let madeAfterCut = 0;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        const api = msg.subject.slice(prefix.length + 1);
        if (cutPulls && api.startsWith('CONSUMER.CREATE')) madeAfterCut++;
        if (cutPulls && api.startsWith('CONSUMER.MSG.NEXT')) return;
        nats.nc.publish(`$JS.API.${api}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    const name = `follower of ${subject} on ${stream.name}`;
    const seen: string[] = [];
    await publisher.publish(subject, tenantEvent('n-1'));
    const follower = await followSubjects(jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }), stream.name, subject, (msg) => void seen.push((msg.json() as { tenantId: string }).tenantId), 5_000, undefined, { log: createLogger('messaging-test', { level: 'error' }) });
    let stalledSince = 0;
    let clearedMeanwhile = false;
    const watch = setInterval(() => {
      if (stalledConsumers.has(name)) stalledSince ||= Date.now();
      else if (stalledSince && cutPulls) clearedMeanwhile = true;
    }, 50);
    try {
      assert.deepEqual(seen, ['n-1']);
      cutPulls = true;
      await eventually(async () => (stalledSince ? true : undefined), 10_000, 'the follower stalled');
      // Two consumers made since (about 3 s apart), each heard nothing.
      await eventually(async () => (madeAfterCut >= 2 ? true : undefined), 20_000, 'its consumer made again twice');
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(clearedMeanwhile, false, '/health cleared while the follower heard nothing');
      cutPulls = false;
      await publisher.publish(subject, tenantEvent('n-2'));
      await eventually(async () => (seen.includes('n-2') && !stalledConsumers.has(name) ? true : undefined), 10_000, 'consuming again, health clear');
    } finally {
      clearInterval(watch);
      cutPulls = false;
      await follower.close();
      forward.unsubscribe();
    }
  }, { timeout: 60_000 });

  itWith({ real: ['nats'] }, 'readOnce reads what the stream holds and stops: every message, the last of each subject, from a time; what its handler throws ends the read', async () => {
    const base = `test.${run}.once`;
    const seqs: number[] = [];
    for (const [i, s] of ['a', 'b', 'a', 'c'].entries()) seqs.push((await publisher.publish(`${base}.${s}`, tenantEvent(`o-${i}`))).seq);
    const read = async (deliver: Parameters<typeof readOnce>[3]) => {
      const seen: number[] = [];
      const count = await readOnce(nats.js, stream.name, `${base}.>`, deliver, async (msg) => {
        await new Promise((r) => setImmediate(r));
        seen.push(msg.seq);
      });
      assert.equal(count, seen.length);
      return seen;
    };
    assert.deepEqual(await read({ policy: 'all' }), seqs);
    assert.deepEqual(await read({ policy: 'last_per_subject' }), [seqs[1], seqs[2], seqs[3]]);
    assert.deepEqual(await read({ policy: 'since', time: new Date(Date.now() + 60_000) }), []);
    assert.equal(await readOnce(nats.js, `TEST_NONE_${run}`, '>', { policy: 'all' }, () => undefined), 0, 'a stream not there holds nothing');
    const boom = new Error('handler failed');
    let handled = 0;
    await assert.rejects(
      readOnce(nats.js, stream.name, `${base}.>`, { policy: 'all' }, () => {
        if (++handled === 2) throw boom;
      }),
      (error) => error === boom,
    );
    assert.equal(handled, 2, 'nothing handed over after the handler threw');
  });

  itWith({ real: ['nats'] }, 'readOnce whose server falls silent mid-read makes its consumer again and goes on after the last message handed over: the last of each subject, none twice, none skipped', async () => {
    const base = `test.${run}.reread`;
    // The read's JetStream API under a prefix of the test's own, forwarded to the server's until
    // the test cuts it: as a server that died while holding the read's consumer leaves it.
    const prefix = `$TESTRJS.${run}`;
    let cut = false;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        if (cut) return;
        nats.nc.publish(`$JS.API.${msg.subject.slice(prefix.length + 1)}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    const lastOf = new Map<string, number>();
    const publish = async (n: number, i: number) => lastOf.set(`${base}.s${n}`, (await publisher.publish(`${base}.s${n}`, tenantEvent(`r-${i}`))).seq);
    // 300 subjects, the first 60 written twice: the last of each subject are 300 messages, in
    // stream order, more than a pull (100) holds.
    for (let n = 0; n < 300; n++) await publish(n, n);
    for (let n = 0; n < 60; n++) await publish(n, 300 + n);
    const atStart = [...lastOf.values()].sort((a, b) => a - b);
    const warnings: string[] = [];
    const recording = { ...log, warn: (message: string) => void warnings.push(message) };
    const seen: number[] = [];
    try {
      const reading = readOnce(jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }), stream.name, `${base}.>`, { policy: 'last_per_subject' }, async (msg) => {
        seen.push(msg.seq);
        if (seen.length === 20) cut = true;
      }, { log: recording });
      await eventually(async () => (warnings.some((w) => w.startsWith('no heartbeat')) ? true : undefined), 20_000, 'the read noticing its server silent');
      const handedOver = seen.at(-1)!;
      assert.ok(seen.length < atStart.length, `stopped part-way (${seen.length} of ${atStart.length})`);
      // Meanwhile a subject already read and one not read yet get a newer message.
      const readSubject = `${base}.s60`;
      const unreadSubject = `${base}.s59`;
      assert.ok(lastOf.get(readSubject)! <= handedOver && lastOf.get(unreadSubject)! > handedOver);
      lastOf.set(readSubject, (await publisher.publish(readSubject, tenantEvent('r-read'))).seq);
      lastOf.set(unreadSubject, (await publisher.publish(unreadSubject, tenantEvent('r-unread'))).seq);
      cut = false;
      const count = await withinMs(reading, 30_000, 'readOnce to finish once a server answers');
      const now = [...lastOf.values()].sort((a, b) => a - b);
      const expected = [...atStart.filter((seq) => seq <= handedOver), ...now.filter((seq) => seq > handedOver)];
      assert.deepEqual(seen, expected, 'in stream order: what was handed over, then the last of each subject after it');
      assert.equal(count, seen.length);
      assert.ok(warnings.includes('stream read going on'));
    } finally {
      cut = false;
      forward.unsubscribe();
    }
  }, { timeout: 60_000 });

  itWith({ real: ['nats'] }, 'readOnce fails with StreamUnreachableError, an outage, when no server answers past its bound', async () => {
    const subject = `test.${run}.unreachable`;
    const prefix = `$TESTUJS.${run}`;
    let cut = false;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        if (cut) return;
        nats.nc.publish(`$JS.API.${msg.subject.slice(prefix.length + 1)}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    for (let i = 0; i < 250; i++) await publisher.publish(subject, tenantEvent(`u-${i}`));
    const seen: number[] = [];
    try {
      const reading = readOnce(jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }), stream.name, subject, { policy: 'all' }, (msg) => {
        seen.push(msg.seq);
        if (seen.length === 10) cut = true;
      }, { log: createLogger('messaging-test', { level: 'error' }), unreachableMs: 5_000 });
      const error = await withinMs(reading.then(() => undefined, (e: unknown) => e), 40_000, 'readOnce to fail');
      assert.ok(error instanceof StreamUnreachableError, `failed with ${String(error)}`);
      assert.equal(error.afterSeq, seen.at(-1));
      assert.ok(isTransientDependencyError(error), 'the callers see an outage');
      assert.ok(seen.length < 250);
    } finally {
      forward.unsubscribe();
    }
  }, { timeout: 60_000 });

  itWith({ real: ['nats'] }, 'readOnce whose consumers are made but never deliver (the API answers, pulls get nothing) fails with StreamUnreachableError past its bound, however often they were made again', async () => {
    const subject = `test.${run}.nopull`;
    // As a consumer placed on a server the client cannot reach over the routes, or pulls refused:
    // every API call answers, but no pull reaches the consumer (no message, no heartbeat).
    const prefix = `$TESTNJS.${run}`;
    let cutPulls = false;
    let madeAfterCut = 0;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        const api = msg.subject.slice(prefix.length + 1);
        if (cutPulls && api.startsWith('CONSUMER.CREATE')) madeAfterCut++;
        if (cutPulls && api.startsWith('CONSUMER.MSG.NEXT')) return;
        nats.nc.publish(`$JS.API.${api}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    for (let i = 0; i < 250; i++) await publisher.publish(subject, tenantEvent(`n-${i}`));
    const seen: number[] = [];
    try {
      const reading = readOnce(jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }), stream.name, subject, { policy: 'all' }, (msg) => {
        seen.push(msg.seq);
        if (seen.length === 10) cutPulls = true;
      }, { log: createLogger('messaging-test', { level: 'error' }), unreachableMs: 5_000 });
      const error = await withinMs(reading.then(() => undefined, (e: unknown) => e), 40_000, 'readOnce to fail');
      assert.ok(error instanceof StreamUnreachableError, `failed with ${String(error)}`);
      assert.equal(error.afterSeq, seen.at(-1));
      assert.ok(madeAfterCut >= 1, 'its consumer was made again meanwhile (the API answered)');
    } finally {
      forward.unsubscribe();
    }
  }, { timeout: 60_000 });

  itWith({ real: ['nats'] }, 'readOnce whose consumer fails as soon as it is made (the server refuses its pulls) pauses before making it again and fails past its bound', async () => {
    const subject = `test.${run}.badpull`;
    const prefix = `$TESTBJS.${run}`;
    let refuse = false;
    let made = 0;
    const forward = nats.nc.subscribe(`${prefix}.>`, {
      callback: (_error, msg) => {
        const api = msg.subject.slice(prefix.length + 1);
        if (refuse && api.startsWith('CONSUMER.CREATE')) made++;
        // A deterministic refusal of the pull: the consumer's messages fail straight away.
        if (refuse && api.startsWith('CONSUMER.MSG.NEXT') && msg.reply) return void nats.nc.publish(msg.reply, undefined, { headers: natsHeaders(400, 'Bad Request') });
        nats.nc.publish(`$JS.API.${api}`, msg.data, { reply: msg.reply, ...(msg.headers ? { headers: msg.headers } : {}) });
      },
    });
    for (let i = 0; i < 250; i++) await publisher.publish(subject, tenantEvent(`b-${i}`));
    const seen: number[] = [];
    try {
      const reading = readOnce(jetstream(nats.nc, { apiPrefix: prefix, timeout: 2_000 }), stream.name, subject, { policy: 'all' }, (msg) => {
        seen.push(msg.seq);
        if (seen.length === 10) refuse = true;
      }, { log: createLogger('messaging-test', { level: 'error' }), unreachableMs: 5_000 });
      const error = await withinMs(reading.then(() => undefined, (e: unknown) => e), 40_000, 'readOnce to fail');
      assert.ok(error instanceof StreamUnreachableError, `failed with ${String(error)}`);
      // One every FOLLOW_RETRY_MS (250 ms) at most over the 5 s bound: about 20; a tight loop makes thousands.
      assert.ok(made < 100, `consumers made again while the pulls were refused: ${made}`);
    } finally {
      forward.unsubscribe();
    }
  }, { timeout: 60_000 });

  itWith({ real: ['nats'] }, 'stop() finishes the batch in flight and hands buffered messages straight back (nak), starting nothing new', async () => {
    const slow: ConsumerDefinition = { ...consumer, durable: `test-stop-${run}`, filterSubject: `test.${run}.stop`, ackWaitSeconds: 30 };
    await ensureConsumer(nats.jsm, slow, 100);
    for (let i = 0; i < 5; i++) await publisher.publish(`test.${run}.stop`, tenantEvent(`stop-${i}`));
    let release: () => void = () => undefined;
    const started: string[] = [];
    const first = new EventConsumer({
      js: nats.js,
      definition: slow,
      log,
      batchSize: 1,
      handle: async (deliveries) => {
        started.push(deliveries[0]!.event.tenantId);
        await new Promise<void>((r) => (release = r));
      },
    });
    await first.start();
    await eventually(async () => (started.length === 1 ? true : undefined), 5_000, 'first message taken');
    const stopping = first.stop();
    await new Promise((r) => setTimeout(r, 200));
    release();
    await stopping;
    assert.deepEqual(started, ['stop-0'], 'no new batch after stop()');
    // The other four come back at once to another consumer, not after the 30 s ack wait.
    const handled: string[] = [];
    const second = new EventConsumer({ js: nats.js, definition: slow, log, handle: async (d) => void handled.push(...d.map((x) => x.event.tenantId)) });
    const t0 = Date.now();
    await second.start();
    await eventually(async () => (new Set(handled).size >= 4 ? true : undefined), 10_000, 'buffered messages redelivered');
    await second.stop();
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual([...new Set(handled)].sort(), ['stop-1', 'stop-2', 'stop-3', 'stop-4']);
  });
});
