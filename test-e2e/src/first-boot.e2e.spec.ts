import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectClient } from '@mfa/messaging';
import { CORE_SERVICE_NAMES, SERVICE_NAMES, itWith, startNatsServer, startRedisServer, startStack, testDatabaseUrl, type NatsServerProcess, type RedisServerProcess } from '@mfa/testing';

/**
 * A new deployment: whichever service the orchestrator starts first finds a NATS without a single
 * stream, and must create every stream it reads or writes rather than fail its boot (or wait for
 * another service that may itself be waiting). Each service boots alone against an empty NATS and
 * an empty Redis of its own; Postgres is shared (the report's database is created by reporting,
 * whichever of its instances comes first). The RADIUS front and the console use no stream: they
 * only ask the others over NATS.
 */
describe('end to end: every service can be the first of a new deployment', () => {
  let redis: RedisServerProcess;
  const natsServers: NatsServerProcess[] = [];

  before(async () => {
    redis = await startRedisServer();
  });

  after(async () => {
    await Promise.all(natsServers.map((server) => server.stop()));
    await redis?.stop();
  });

  for (const service of SERVICE_NAMES) {
    itWith(
      { real: ['postgres'], fake: [] },
      `${service} boots alone against a NATS without streams${CORE_SERVICE_NAMES.includes(service) ? ', and leaves the streams it uses' : ''}`,
      async () => {
        const nats = await startNatsServer();
        natsServers.push(nats);
        const lines: string[] = [];
        const stack = await startStack({
          services: [service],
          env: {
            NODE_ENV: 'test',
            LOG_LEVEL: 'warn',
            NATS_URL: nats.url,
            REDIS_URL: `redis://127.0.0.1:${redis.port}`,
            DATABASE_URL: testDatabaseUrl('mfa_first_boot'),
          },
          onLine: (_service, line) => lines.push(line),
          readyTimeoutMs: 60_000,
        });
        try {
          const nc = await connectClient({ servers: nats.url, name: 'first-boot-test' });
          try {
            const jsm = await jetstreamManager(nc);
            const streams: string[] = [];
            for await (const info of jsm.streams.list()) streams.push(info.config.name);
            if (CORE_SERVICE_NAMES.includes(service)) assert.ok(streams.length > 0, `${service} created no stream`);
            else assert.deepEqual(streams, [], `${service} created streams it does not declare using`);
          } finally {
            await nc.close();
          }
          assert.deepEqual(
            lines.filter((line) => /"level":"(error|fatal)"/.test(line)),
            [],
            `${service} logged errors on its first boot`,
          );
        } finally {
          await stack.stop();
        }
      },
      { timeout: 90_000 },
    );
  }
});
