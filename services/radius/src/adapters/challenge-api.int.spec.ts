import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { NatsConnection } from '@nats-io/nats-core';
import { Headers, Subjects } from '@mfa/contracts';
import { connectClient } from '@mfa/messaging';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import type { RadiusClient } from '../domain/clients.js';
import { ChallengeApi } from './challenge-api.js';

/**
 * auth-challenge as the contract has it (docs/api.md, Deadline): the decision's reply leaves before
 * the request's deadline. It runs in a thread of its own and answers only once this thread's event
 * loop is held up (flags[0]), then says its reply has reached the server (flags[1]): so the reply
 * is in time, and can only be read after the deadline.
 */
const AUTH_CHALLENGE = `
const { workerData, parentPort } = require('node:worker_threads');
const { connect } = require(workerData.nats);
const flags = new Int32Array(workerData.flags);
(async () => {
  const nc = await connect({ servers: workerData.url });
  nc.subscribe(workerData.verify, {
    callback: (_error, msg) => {
      Atomics.wait(flags, 0, 0, 5000);
      msg.respond(JSON.stringify({ challengeId: 'c', status: 'approved' }));
      nc.flush().then(() => Atomics.store(flags, 1, 1));
    },
  });
  // challenge.status: taken up, never answered (dropped at its deadline, as an overloaded service would).
  nc.subscribe(workerData.status, { callback: () => {} });
  await nc.flush();
  parentPort.postMessage('ready');
})();
`;

const client: RadiusClient = { cidr: '127.0.0.1/32', secret: Buffer.from('s'), tenantId: 'tenant-a', name: 'vpn', apiKey: undefined, passwordMode: 'challenge' };
/** nats.js as @mfa/messaging loads it, for the thread (an eval'd worker resolves nothing itself). */
const natsModule = () => {
  const local = createRequire(import.meta.url);
  return createRequire(local.resolve('@mfa/messaging')).resolve('@nats-io/transport-node');
};

/**
 * Holds this thread's event loop (a busy RADIUS front on a loaded machine) until `done` says so,
 * or for 5 s at most.
 */
function busyUntil(done: () => boolean): void {
  const cap = Date.now() + 5_000;
  while (!done() && Date.now() < cap) {
    // spin
  }
}

describe('ChallengeApi: the reply to a request', () => {
  let server: NatsServerProcess;
  let nc: NatsConnection;
  let worker: Worker;
  const flags = new Int32Array(new SharedArrayBuffer(8));

  before(async () => {
    server = await startNatsServer();
    nc = await connectClient({ servers: server.url, name: 'radius-challenge-api-test' });
    worker = new Worker(AUTH_CHALLENGE, {
      eval: true,
      workerData: { url: server.url, verify: Subjects.challengeVerify, status: Subjects.challengeStatus, flags: flags.buffer, nats: natsModule() },
    });
    await new Promise((resolve, reject) =>
      worker
        .once('message', resolve)
        .once('error', reject)
        .once('exit', (code) => reject(new Error(`the worker exited (${code})`))),
    );
    worker.removeAllListeners('exit');
  });

  after(async () => {
    await worker?.terminate();
    await nc?.close();
    await server?.stop();
  });

  itWith(
    { real: ['nats'] },
    'is taken when it arrived before the deadline but this event loop reached it only after: the decision reaches the NAS instead of silence',
    async () => {
      const api = new ChallengeApi(nc, undefined, { requestMs: 500, replyGraceMs: 1_000 });
      const sent = Date.now();
      const verified = api.verify(client, 'c', '123456');
      // 100 ms after the request the loop is held, at the end of a turn (as by the work of a burst
      // of datagrams), until the reply has reached the server and the deadline has passed by
      // 100 ms: the reply waits in the socket, and the next turn runs the expired timers before it
      // reads the socket.
      await new Promise<void>((resolve) =>
        setTimeout(
          () =>
            setImmediate(() => {
              Atomics.store(flags, 0, 1);
              Atomics.notify(flags, 0);
              busyUntil(() => Atomics.load(flags, 1) === 1 && Date.now() > sent + 600);
              resolve();
            }),
          100,
        ),
      );
      assert.equal(Atomics.load(flags, 1), 1, 'the stand-in for auth-challenge replied while the loop was held');
      assert.deepEqual(await verified, { ok: { challengeId: 'c', status: 'approved' } });
    },
  );

  itWith({ real: ['nats'] }, 'still ends as unreachable when no reply comes at all: after the deadline and its grace, not at the deadline', async () => {
    const api = new ChallengeApi(nc, undefined, { requestMs: 300, replyGraceMs: 400 });
    const sent = performance.now();
    const status = await api.status(client, 'c');
    assert.ok('unreachable' in status, JSON.stringify(status));
    // Not given up at the deadline (300 ms): the grace is waited for too.
    assert.ok(performance.now() - sent >= 600, `given up after ${performance.now() - sent} ms`);
  });

  itWith({ real: ['nats'] }, 'a start that finds no auth-challenge subscribed is sent again until one is (a reconnection), and given up 250 ms before its deadline', async () => {
    const api = new ChallengeApi(nc, undefined, { requestMs: 2_000, replyGraceMs: 300 });
    let sub: { unsubscribe(): void } | undefined;
    setTimeout(() => {
      sub = nc.subscribe(Subjects.challengeStart, { max: 1, callback: (_error, msg) => void msg.respond(JSON.stringify({ challengeId: 'c', status: 'pending' })) });
    }, 300);
    try {
      assert.deepEqual(await api.start(client, { tenantId: client.tenantId, userId: 'u' }), { ok: { challengeId: 'c', status: 'pending' } });
    } finally {
      sub?.unsubscribe();
    }
    const sent = performance.now();
    const nobody = await api.start(client, { tenantId: client.tenantId, userId: 'u' });
    const took = performance.now() - sent;
    assert.ok('unreachable' in nobody, JSON.stringify(nobody));
    assert.ok(took >= 1_300 && took < 2_000, `given up after ${took} ms`);
  });

  itWith({ real: ['nats'] }, 'a status poll given an earlier end of waiting carries it as its deadline, and gives up at it plus the grace', async () => {
    const seen: (string | undefined)[] = [];
    const sub = nc.subscribe(Subjects.challengeStatus, { callback: (_error, msg) => void seen.push(msg.headers?.get(Headers.deadline)) });
    try {
      await nc.flush();
      const api = new ChallengeApi(nc, undefined, { requestMs: 5_000, replyGraceMs: 300 });
      const until = Date.now() + 400;
      const sent = performance.now();
      const status = await api.status(client, 'c', until);
      const took = performance.now() - sent;
      assert.ok('unreachable' in status, JSON.stringify(status));
      assert.deepEqual(seen, [String(until)]);
      // Given up at the end of waiting and the grace (700 ms), not at the usual deadline (5 s).
      assert.ok(took >= 650 && took < 3_000, `given up after ${took} ms`);
    } finally {
      sub.unsubscribe();
    }
  });
});
