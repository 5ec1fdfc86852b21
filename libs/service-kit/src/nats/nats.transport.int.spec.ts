import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Module } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { z } from 'zod';
import { defaultTenantSettings, Headers, invalidRequest, Streams, type ConsumerDefinition, type StreamDefinition } from '@mfa/contracts';
import { keyringFromMasterKey } from '@mfa/crypto';
import { createEvent, EventConsumer, EventPublisher, requestJson, type Delivery } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { eventually, itWith, testEnv } from '@mfa/testing';
import { runService, type RunningService } from '../bootstrap.js';
import { MAX_WAITING, processRequestGate, REQUEST_CONCURRENCY } from '../admission.js';
import { OpsController } from '../health.js';
import { AuthModule } from '../auth/auth.module.js';
import { MessagingModule } from '../messaging.module.js';
import { ContractPipe } from './contract.pipe.js';
import { JetStreamContext, NatsRequestContext } from './context.js';
import { WAIT_WITHOUT_DEADLINE_MS } from './nats.transport.js';
import { JetStreamConsumer, NatsController } from './decorators.js';

const run = randomUUID().slice(0, 8);
const subject = `testapi.${run}.echo`; // outside every stream, or JetStream would answer
const slowSubject = `testapi.${run}.slow`;
const lateSubject = `testapi.${run}.late`;
const stream: StreamDefinition = {
  name: `TEST_TRANSPORT_${run}`,
  subjects: [`testevt.${run}.>`],
  maxAgeSeconds: 600,
  duplicateWindowSeconds: 120,
  description: 'transport integration test',
};
const consumer: ConsumerDefinition = {
  stream: stream.name,
  durable: `transport-test-${run}`,
  filterSubject: '>',
  maxDeliver: 5,
  ackWaitSeconds: 5,
  description: 'transport integration test',
};

const EchoRequest = z.object({ tenantId: z.string(), n: z.int() });
const received: Array<{ tenantId: string; deliveries: number; attempt: number; aborted: boolean }> = [];
let failuresLeft = 1;
/** For each slow request with a deadline the handler took up: how many ms it had left. */
const slowStarted: number[] = [];
/** The `n` of every echo request the handler ran. */
const echoed: number[] = [];

@NatsController()
class TestController {
  @MessagePattern(subject)
  echo(@Payload(new ContractPipe(EchoRequest)) req: z.infer<typeof EchoRequest>, @Ctx() ctx: NatsRequestContext) {
    assert.ok(ctx instanceof NatsRequestContext && ctx.subject === subject && ctx.receivedAt instanceof Date);
    echoed.push(req.n);
    if (req.n === 1) throw invalidRequest('n must not be 1');
    if (req.n === 2) throw new Error('secret internals');
    return { double: req.n * 2 };
  }

  @MessagePattern(slowSubject)
  async slow(@Payload(new ContractPipe(EchoRequest)) req: z.infer<typeof EchoRequest>, @Ctx() ctx: NatsRequestContext) {
    if (ctx.deadline !== undefined) slowStarted.push(ctx.deadline - Date.now());
    await sleep(900);
    return { n: req.n };
  }

  /** Takes longer than the deadline its test sends: its answer is ready only after it. */
  @MessagePattern(lateSubject)
  async late(@Payload(new ContractPipe(EchoRequest)) req: z.infer<typeof EchoRequest>) {
    await sleep(800);
    return { n: req.n };
  }

  @JetStreamConsumer(consumer, { batchSize: 10 })
  async project(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext) {
    const first = deliveries[0]!;
    // The first delivery fails once: the transport must nak it (not answer it), so it comes back.
    if (first.event.tenantId.endsWith('flaky') && failuresLeft-- > 0) throw new Error('not this time');
    for (const d of deliveries) {
      received.push({ tenantId: d.event.tenantId, deliveries: deliveries.length, attempt: d.msg.info.deliveryCount, aborted: ctx.signal.aborted });
    }
  }
}

const log = createLogger('transport-test', { level: 'error' });
const keyring = keyringFromMasterKey(randomBytes(32));
const config = { HTTP_HOST: '127.0.0.1', HTTP_PORT: 0, INSTANCE_NAME: `transport-test-${run}`, keyring };

@Module({
  imports: [
    MessagingModule.forRoot({
      serviceName: `transport-test-${run}`,
      nats: { NATS_URL: testEnv.natsUrl },
      log,
      streams: [stream, Streams.userSettings, Streams.state, Streams.deadLetters],
      replicas: 1,
    }),
    AuthModule.forRoot({ auth: { mode: 'off', platformKey: undefined }, keyring }),
  ],
  controllers: [TestController, OpsController],
})
class TestModule {}

/** mfa_requests_dropped_total for a subject and reason, as the service's /metrics says (0 when absent). */
async function droppedCount(url: string, dropped: string, reason: string): Promise<number> {
  return metric(url, 'mfa_requests_dropped_total', [`subject="${dropped}"`, `reason="${reason}"`]);
}

/** A counter's value for the labels given, as the service's /metrics says (0 when absent). */
async function metric(url: string, name: string, labels: string[]): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.every((label) => l.includes(label)));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

describe('NatsTransport: Nest handlers on nats.js', () => {
  let service: RunningService;
  let nc: NatsConnection;
  type Reply = { double?: number; n?: number; error?: { code: string; message: string } };
  const ask = (body: unknown, headers?: Record<string, string>) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 2_000, ...(headers ? { headers } : {}) });

  before(async () => {
    // The configuration's word over the declaration (dispatch's SMS_CONCURRENCY works so).
    service = await runService({ name: `transport-test-${run}`, module: { module: TestModule }, config, log, consumers: { [consumer.durable]: { maxAckPending: 7 } } });
    nc = await connect({ servers: testEnv.natsUrl });
  });

  after(async () => {
    await service.stop();
    await nc.drain();
  });

  itWith({ real: ['nats'] }, 'answers every request once: results, contract errors, safe internal errors', async () => {
    assert.deepEqual(await ask({ tenantId: 't', n: 21 }), { double: 42 });
    assert.deepEqual(await ask({ tenantId: 't', n: 1 }), { error: { code: 'invalid_request', message: 'n must not be 1' } });
    assert.deepEqual(await ask({ tenantId: 't', n: 2 }), { error: { code: 'internal', message: 'internal error' } });
  });

  itWith({ real: ['nats'] }, 'validates in the pipe and refuses bad bodies in the transport', async () => {
    const wrongType = await ask({ tenantId: 't', n: 'x' });
    assert.equal(wrongType.error?.code, 'invalid_request');
    assert.match(wrongType.error!.message, /^n: /);
    assert.doesNotMatch(wrongType.error!.message, /"x"/, 'the offending value is not echoed');
    const big = await ask({ tenantId: 't', n: 3, pad: 'x'.repeat(20_000) });
    assert.match(big.error?.message ?? '', /larger than/);
    assert.deepEqual(await ask('{not json'), { error: { code: 'invalid_request', message: 'request body is not valid JSON' } });
    assert.deepEqual(await ask('[1,2]'), { error: { code: 'invalid_request', message: 'request body must be a JSON object' } });
    assert.equal((await ask(new Uint8Array([0xff, 0xfe]))).error?.code, 'invalid_request');
  });

  itWith({ real: ['nats'] }, 'drops a request whose Mfa-Deadline has passed, answers one whose deadline is ahead', async () => {
    await assert.rejects(ask({ tenantId: 't', n: 4 }, { [Headers.deadline]: String(Date.now() - 1) }), /timeout/i);
    assert.deepEqual(await ask({ tenantId: 't', n: 4 }, { [Headers.deadline]: String(Date.now() + 5_000) }), { double: 8 });
    // Unsigned decimal milliseconds, however spelt, are a deadline; a past one drops the request.
    // Exponent notation too (Java's Double.toString, Go's %g): "1e3" is 1970, long past.
    const past = () => Date.now() - 1_000;
    // (Half a second is plenty for an answer that should not come: the echo answers in milliseconds.)
    for (const value of [`000${past()}`, `${past()}.5`, '0', '1e3', past().toExponential(), `${past() / 1e12}E12`, `${past() / 1e15}e+15`, `${past() * 1e3}e-3`]) {
      await assert.rejects(requestJson<Reply>(nc, subject, { tenantId: 't', n: 4 }, { timeoutMs: 500, headers: { [Headers.deadline]: value } }), /timeout/i, value);
    }
    const ahead = () => Date.now() + 5_000;
    for (const value of [`00${ahead()}.25`, ahead().toExponential(), `${ahead() / 1e12}E12`, `${ahead() / 1e12}e+12`]) {
      assert.deepEqual(await ask({ tenantId: 't', n: 4 }, { [Headers.deadline]: value }), { double: 8 }, value);
    }
    // Not an unsigned decimal number of milliseconds: not a deadline, so the request is handled.
    for (const value of ['-1', '0x10', '+5', '.5', '1.', '1e', '1e+', 'e12', '1e400', 'soon', '9'.repeat(400)]) {
      assert.deepEqual(await ask({ tenantId: 't', n: 4 }, { [Headers.deadline]: value }), { double: 8 }, value);
    }
  });

  itWith({ real: ['nats'] }, 'under overload, handles a bounded number at once and drops untouched the waiting ones whose deadline comes too close', async () => {
    // 400 requests of 900 ms each, all due within 1,000 ms: the first RequestGate admits (256)
    // run at once; when they end, the others have under 100 ms left and are dropped unhandled.
    // (The 900 ms leave room for a loaded machine: those admitted at once are handled with the
    // time left when they arrived, however long their 400 took to arrive.)
    slowStarted.length = 0;
    const deadline = String(Date.now() + 1_000);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 400 }, (_, n) => requestJson<Reply>(nc, slowSubject, { tenantId: 't', n }, { timeoutMs: 2_500, headers: { [Headers.deadline]: deadline } })),
    );
    const answered = outcomes.filter((o) => o.status === 'fulfilled').length;
    assert.ok(slowStarted.length > 0 && slowStarted.length < 400, `${slowStarted.length} of 400 taken up`);
    assert.ok(answered <= slowStarted.length, `${answered} answered, ${slowStarted.length} taken up: nothing answered that was not handled`);
    assert.ok(Math.min(...slowStarted) >= 50, `every request taken up had time left (least: ${Math.min(...slowStarted)} ms)`);
    // The service is not wedged: the next request is answered.
    assert.deepEqual(await ask({ tenantId: 't', n: 6 }), { double: 12 });
  });

  itWith({ real: ['nats'] }, 'answers a request taken up in time even when its answer is ready only after the deadline, and counts it', async () => {
    const lateBefore = await metric(service.url, 'mfa_requests_answered_late_total', [`subject="${lateSubject}"`]);
    // The handler takes 800 ms; the deadline is 250 ms ahead; the caller waits 3 s.
    const reply = await requestJson<Reply>(nc, lateSubject, { tenantId: 't', n: 31 }, { timeoutMs: 3_000, headers: { [Headers.deadline]: String(Date.now() + 250) } });
    assert.deepEqual(reply, { n: 31 });
    assert.equal(await metric(service.url, 'mfa_requests_answered_late_total', [`subject="${lateSubject}"`]), lateBefore + 1);
  });

  itWith({ real: ['nats'] }, 'answers unavailable, untouched, the waiting requests turned away for the queue\'s size whose caller still waits; not one whose deadline has passed', async () => {
    const gate = processRequestGate();
    await eventually(async () => (gate.active === 0 && gate.waiting === 0 ? true : undefined), 10_000, 'the gate idle');
    // Every slot taken, as by requests under way: what arrives waits.
    let held = 0;
    while (held < REQUEST_CONCURRENCY && gate.tryEnter()) held++;
    assert.equal(held, REQUEST_CONCURRENCY);
    const overloadBefore = await droppedCount(service.url, subject, 'overload');
    let released = false;
    try {
      const noDeadline = requestJson<Reply>(nc, subject, { tenantId: 't', n: 41 }, { timeoutMs: 4_000 });
      await eventually(async () => (gate.waiting === 1 ? true : undefined), 2_000, 'the first waiting');
      const deadlineAhead = requestJson<Reply>(nc, subject, { tenantId: 't', n: 42 }, { timeoutMs: 4_000, headers: { [Headers.deadline]: String(Date.now() + 10_000) } });
      await eventually(async () => (gate.waiting === 2 ? true : undefined), 2_000, 'the second waiting');
      const passedAt = Date.now() + 300;
      const deadlinePassed = requestJson<Reply>(nc, subject, { tenantId: 't', n: 43 }, { timeoutMs: 2_000, headers: { [Headers.deadline]: String(passedAt) } });
      await eventually(async () => (gate.waiting === 3 ? true : undefined), 2_000, 'the third waiting');
      while (Date.now() <= passedAt + 50) await sleep(50);
      // The queue overflows: its three oldest, the test's requests, are turned away.
      for (let i = 0; i < MAX_WAITING; i++) {
        gate.enqueue({ deadline: undefined, run: () => queueMicrotask(() => gate.exit()), drop: () => undefined });
      }
      const saturated = { error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } };
      assert.deepEqual(await noDeadline, saturated, 'no deadline: its caller waits for an answer');
      assert.deepEqual(await deadlineAhead, saturated, 'deadline ahead: its caller waits for an answer');
      await assert.rejects(deadlinePassed, /timeout/i, 'deadline passed: nobody waits, nothing is sent');
      for (; held > 0; held--) gate.exit();
      released = true;
      await eventually(async () => (gate.active === 0 && gate.waiting === 0 ? true : undefined), 10_000, 'the gate idle again');
      assert.ok(![41, 42, 43].some((n) => echoed.includes(n)), 'the handler ran for none of them');
      assert.equal(await droppedCount(service.url, subject, 'overload'), overloadBefore + 3);
      assert.deepEqual(await ask({ tenantId: 't', n: 44 }), { double: 88 });
    } finally {
      if (!released) for (; held > 0; held--) gate.exit();
    }
  });

  itWith({ real: ['nats'] }, 'answers unavailable, untouched, a request without a deadline that waited its bound for a slot, even while no slot frees', async () => {
    const gate = processRequestGate();
    await eventually(async () => (gate.active === 0 && gate.waiting === 0 ? true : undefined), 10_000, 'the gate idle');
    let held = 0;
    while (held < REQUEST_CONCURRENCY && gate.tryEnter()) held++;
    assert.equal(held, REQUEST_CONCURRENCY);
    const waitedBefore = await droppedCount(service.url, subject, 'wait_limit');
    try {
      const noDeadline = requestJson<Reply>(nc, subject, { tenantId: 't', n: 51 }, { timeoutMs: WAIT_WITHOUT_DEADLINE_MS + 5_000 });
      await eventually(async () => (gate.waiting === 1 ? true : undefined), 2_000, 'the request waiting');
      // Every slot stays held (requests stuck on a dependency): the bound answers it all the same.
      assert.deepEqual(await noDeadline, { error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } });
      // When its turn comes after all, nothing is done for it and nothing counted twice.
      gate.exit();
      held--;
      await eventually(async () => (gate.waiting === 0 ? true : undefined), 2_000, 'its turn taken');
      assert.ok(!echoed.includes(51), 'the handler did not run for it');
      assert.equal(await droppedCount(service.url, subject, 'wait_limit'), waitedBefore + 1);
    } finally {
      for (; held > 0; held--) gate.exit();
    }
    await eventually(async () => (gate.active === 0 && gate.waiting === 0 ? true : undefined), 10_000, 'the gate idle again');
    assert.deepEqual(await ask({ tenantId: 't', n: 52 }), { double: 104 });
  });

  itWith({ real: ['nats'] }, 'refuses a request whose headers nats.js cannot read, and goes on reading its connection', async () => {
    // A raw client: nats.js would not send a header name with a space, any client may.
    const { connect: tcp } = await import('node:net');
    const url = new URL(testEnv.natsUrl.replace(/^nats:/, 'http:'));
    const socket = tcp({ host: url.hostname, port: Number(url.port || 4222) });
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('utf8')));
    await new Promise((resolve) => socket.once('connect', resolve));
    const inbox = `_INBOX.raw${run}`;
    const headers = 'NATS/1.0\r\nBad Key: x\r\n\r\n';
    const body = JSON.stringify({ tenantId: 't', n: 7 });
    socket.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n');
    socket.write(`SUB ${inbox} 1\r\n`);
    socket.write(`HPUB ${subject} ${inbox} ${headers.length} ${headers.length + body.length}\r\n${headers}${body}\r\nPING\r\n`);
    try {
      await eventually(async () => (received.includes('invalid_request') ? true : undefined), 2_000, 'the refusal');
      assert.match(received, /the request headers could not be read/);
      // The service still reads its connection: the next requests are answered at once.
      for (let n = 8; n < 11; n++) assert.deepEqual(await ask({ tenantId: 't', n }), { double: n * 2 });
    } finally {
      socket.destroy();
    }
  });

  itWith({ real: ['nats'] }, 'drops a request whose reply subject is not an inbox: nothing is published there', async () => {
    const jsm = await jetstreamManager(nc);
    const before = (await jsm.streams.info(stream.name)).state.last_seq;
    // A reply subject inside the test stream: an answer would be stored there.
    nc.publish(subject, JSON.stringify({ tenantId: 't', n: 5 }), { reply: `testevt.${run}.reply` });
    assert.deepEqual(await ask({ tenantId: 't', n: 5 }), { double: 10 });
    await sleep(100);
    assert.equal((await jsm.streams.info(stream.name)).state.last_seq, before);
  });

  itWith({ real: ['nats'] }, 'drops a request with no reply subject (a plain publish) before the handler runs, and counts it', async () => {
    const droppedBefore = await droppedCount(service.url, subject, 'no_reply');
    nc.publish(subject, JSON.stringify({ tenantId: 't', n: 9_001 }));
    // Same connection, same order: once this is answered, the plain publish was taken up before it.
    assert.deepEqual(await ask({ tenantId: 't', n: 9_002 }), { double: 18_004 });
    await sleep(100);
    assert.ok(echoed.includes(9_002));
    assert.ok(!echoed.includes(9_001), 'the handler never ran for the request nobody could receive the answer of');
    assert.equal(await droppedCount(service.url, subject, 'no_reply'), droppedBefore + 1);
  });

  itWith({ real: ['nats'] }, 'feeds @JetStreamConsumer handlers from the durable consumer; a handler error naks', async () => {
    const publisher = new EventPublisher(jetstream(nc));
    for (const tenantId of [`${run}-flaky`, `${run}-a`, `${run}-b`]) {
      const event = createEvent('TenantCreated', 1, { tenantId, aggregateId: tenantId, now: new Date(), data: { settings: defaultTenantSettings() } });
      await publisher.publish(`testevt.${run}.tenant`, event);
    }
    await eventually(async () => (received.length >= 3 ? true : undefined), 15_000, 'three events handled');
    const flaky = received.find((r) => r.tenantId.endsWith('flaky'));
    assert.ok(flaky && flaky.attempt >= 2, `the failed batch came back (${JSON.stringify(received)})`);
    assert.deepEqual(new Set(received.map((r) => r.tenantId)), new Set([`${run}-flaky`, `${run}-a`, `${run}-b`]));
    assert.ok(received.every((r) => !r.aborted));
    const info = await (await jetstreamManager(nc)).consumers.info(stream.name, consumer.durable);
    assert.equal(info.config.max_ack_pending, 7, 'the option the service was started with, not the default');
  });

  itWith({ real: ['nats'] }, 'stop() does not wait for the HTTP requests that share the process\'s gate (they go on until HTTP closes)', async () => {
    const second = await runService({ name: `transport-test-${run}`, module: { module: TestModule }, config, log });
    // A device-API request under way (auth-challenge's HTTP routes take the process's slots).
    const gate = processRequestGate();
    assert.ok(gate.tryEnter());
    try {
      const started = Date.now();
      const stopped = await Promise.race([second.stop().then(() => 'stopped'), sleep(5_000).then(() => 'still stopping after 5 s')]);
      assert.equal(stopped, 'stopped');
      assert.ok(Date.now() - started < 5_000);
    } finally {
      gate.exit();
      await second.stop();
    }
  });

  itWith({ real: ['nats'] }, 'stop() answers the requests it took before the connection closes', async () => {
    const second = await runService({
      name: `transport-test-${run}`,
      module: { module: TestModule },
      config,
      log,
    });
    // Both instances share the queue group; send enough that the second takes some, then stop it.
    const replies = Array.from({ length: 12 }, (_, n) => requestJson<Reply>(nc, slowSubject, { tenantId: 't', n }, { timeoutMs: 3_000 }));
    await sleep(50);
    const ready = await fetch(`${second.url}/health`);
    assert.equal(ready.status, 200);
    const stopped = second.stop();
    // While what it took finishes, it is no longer ready (a load balancer in front of its HTTP
    // stops sending to it), but it is alive and still scraped.
    const health = await fetch(`${second.url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: 'stopping', checks: {} });
    assert.equal((await fetch(`${second.url}/health/live`)).status, 200);
    assert.equal((await fetch(`${second.url}/metrics`)).status, 200);
    await stopped;
    assert.deepEqual((await Promise.all(replies)).map((r) => r.n), [...Array(12).keys()]);
  });
});

/** A consumer whose handler waits, as dispatch's waits between retries do, until the stop signal ends it. */
const interruptible: ConsumerDefinition = {
  stream: stream.name,
  durable: `transport-interrupt-${run}`,
  filterSubject: `testevt.${run}.interrupt`,
  maxDeliver: 1,
  ackWaitSeconds: 30,
  description: 'transport integration test: a handler the stop cuts short',
};
let interruptedStarted = false;

@NatsController()
class InterruptibleController {
  @JetStreamConsumer(interruptible)
  async wait(@Payload() _deliveries: Delivery[], @Ctx() ctx: JetStreamContext) {
    interruptedStarted = true;
    await new Promise<void>((_, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('stopping while waiting to retry'))));
  }
}

@Module({
  imports: [
    MessagingModule.forRoot({ serviceName: `transport-interrupt-${run}`, nats: { NATS_URL: testEnv.natsUrl }, log, streams: [stream, Streams.userSettings, Streams.state, Streams.deadLetters], replicas: 1 }),
    AuthModule.forRoot({ auth: { mode: 'off', platformKey: undefined }, keyring }),
  ],
  controllers: [InterruptibleController],
})
class InterruptibleModule {}

describe('NatsTransport: stopping while an event handler waits', () => {
  itWith({ real: ['nats'] }, 'a handler the stop signal cuts short returns its message for another instance: not counted as a failure, not dead-lettered', async () => {
    const service = await runService({ name: `transport-interrupt-${run}`, module: { module: InterruptibleModule }, config: { ...config, INSTANCE_NAME: `transport-interrupt-${run}` }, log });
    const nc = await connect({ servers: testEnv.natsUrl });
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    try {
      const event = createEvent('TenantCreated', 1, { tenantId: `${run}-interrupted`, aggregateId: `${run}-interrupted`, now: new Date(), data: { settings: defaultTenantSettings() } });
      await new EventPublisher(js).publish(`testevt.${run}.interrupt`, event);
      await eventually(async () => (interruptedStarted ? true : undefined), 10_000, 'the handler waiting');
      await service.stop();
      // maxDeliver 1: a failure counted would have dead-lettered it at once.
      const dead = await jsm.direct.getMessage(Streams.deadLetters.name, { last_by_subj: `mfa.dlq.${interruptible.durable}` }).catch(() => null);
      assert.equal(dead, null, 'not dead-lettered');
      const handled: string[] = [];
      const next = new EventConsumer({ js, definition: interruptible, log, handle: async (d) => void handled.push(...d.map((x) => x.event.tenantId)) });
      await next.start();
      try {
        await eventually(async () => (handled.includes(`${run}-interrupted`) ? true : undefined), 10_000, 'handled by the next instance');
      } finally {
        await next.stop();
      }
    } finally {
      await service.stop();
      await jsm.consumers.delete(interruptible.stream, interruptible.durable).catch(() => undefined);
      await nc.drain();
    }
  });
});
