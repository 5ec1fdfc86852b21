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
 * auth-challenge as the contract has it (docs/api.md, Deadline): a decision is answered before the
 * request's deadline, here 150 ms before it. It runs in a thread of its own, so that it answers
 * while this thread's event loop is held up.
 */
const AUTH_CHALLENGE = `
const { workerData, parentPort } = require('node:worker_threads');
const { connect } = require(workerData.nats);
(async () => {
  const nc = await connect({ servers: workerData.url });
  nc.subscribe(workerData.verify, {
    callback: (_error, msg) => {
      const deadline = Number(msg.headers.get(workerData.deadlineHeader));
      setTimeout(() => msg.respond(JSON.stringify({ challengeId: 'c', status: 'approved' })), deadline - 150 - Date.now());
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

/** Holds this thread's event loop (a busy RADIUS front on a loaded machine) until `until`. */
function busyUntil(until: number): void {
  while (Date.now() < until) {
    // spin
  }
}

describe('ChallengeApi: the reply to a request', () => {
  let server: NatsServerProcess;
  let nc: NatsConnection;
  let worker: Worker;

  before(async () => {
    server = await startNatsServer();
    nc = await connectClient({ servers: server.url, name: 'radius-challenge-api-test' });
    worker = new Worker(AUTH_CHALLENGE, {
      eval: true,
      workerData: { url: server.url, verify: Subjects.challengeVerify, status: Subjects.challengeStatus, deadlineHeader: Headers.deadline, nats: natsModule() },
    });
    await new Promise((resolve, reject) => worker.once('message', resolve).once('error', reject));
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
      // The loop is held from 200 ms to 700 ms after the request, at the end of a turn (as by the
      // work of a burst of datagrams): the reply, sent 350 ms after the request, waits in the
      // socket while the request's deadline passes, and the next turn runs the expired timers
      // before it reads the socket.
      await new Promise<void>((resolve) => setTimeout(() => setImmediate(() => (busyUntil(sent + 700), resolve())), 200));
      assert.deepEqual(await verified, { ok: { challengeId: 'c', status: 'approved' } });
    },
  );

  itWith({ real: ['nats'] }, 'still ends as unreachable when no reply comes at all: after the deadline and its grace, not at the deadline', async () => {
    const api = new ChallengeApi(nc, undefined, { requestMs: 300, replyGraceMs: 400 });
    const sent = Date.now();
    const status = await api.status(client, 'c');
    assert.ok('unreachable' in status, JSON.stringify(status));
    assert.ok(Date.now() - sent >= 690, `given up after ${Date.now() - sent} ms`);
  });
});
