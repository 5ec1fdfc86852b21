import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ConsumerDefinition, StreamDefinition } from '@mfa/contracts';
import { connectNats, ensureConsumer, ensureStream, EventConsumer, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { eventually, itWith, testEnv } from '@mfa/testing';
import { NatsHealth } from './messaging.module.js';

const run = randomUUID().slice(0, 8);
const stream: StreamDefinition = {
  name: `TEST_HEALTH_${run}`,
  subjects: [`testhealth.${run}.>`],
  maxAgeSeconds: 600,
  duplicateWindowSeconds: 120,
  description: 'health integration test',
};
const consumer: ConsumerDefinition = {
  stream: stream.name,
  durable: `test-health-${run}`,
  filterSubject: '>',
  maxDeliver: 3,
  ackWaitSeconds: 5,
  description: 'health integration test',
};

/** /health (NatsHealth) fails while a durable consumer that should run is not consuming (issue 7). */
describe('NATS health while a consumer is stalled', () => {
  let nats: NatsClients;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'health-test' });
    await ensureStream(nats.jsm, stream);
  });

  after(async () => {
    await nats.jsm.streams.delete(stream.name).catch(() => undefined);
    await nats.nc.drain();
  });

  itWith({ real: ['nats'] }, 'answers unhealthy while the consumer cannot be created again, healthy once it consumes', async () => {
    await ensureConsumer(nats.jsm, consumer, 100);
    let allowed = true;
    const worker = new EventConsumer({
      js: nats.js,
      definition: consumer,
      log: createLogger('health-test', { level: 'error' }),
      recreate: async () => {
        if (!allowed) throw new Error('the stream refuses new consumers (test)');
        await ensureConsumer(nats.jsm, consumer, 100);
      },
      handle: async () => undefined,
    });
    const health = new NatsHealth(nats);
    await worker.start();
    try {
      await health.check();
      allowed = false;
      await nats.jsm.consumers.delete(stream.name, consumer.durable);
      const failure = await eventually(
        async () => health.check().then(() => undefined, (error: Error) => error),
        15_000,
        'health still ok while the consumer is gone',
      );
      assert.match(failure.message, new RegExp(`not consuming: .*${consumer.durable}`));
      allowed = true;
      await eventually(async () => health.check().then(() => true, () => undefined), 15_000, 'health not back once the consumer consumes again');
    } finally {
      await worker.stop();
    }
  });
});
