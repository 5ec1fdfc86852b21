import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import type { NatsConnection } from '@nats-io/nats-core';
import { Subjects } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { connectClient } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import { itWith, startNatsServer, testEnv, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { ChallengeApi } from '../adapters/challenge-api.js';
import { SeenRequests } from '../adapters/seen-requests.js';
import { StateStore } from '../adapters/state-store.js';
import { DuplicateCache } from '../application/duplicate-cache.js';
import { RadiusService } from '../application/radius.service.js';
import { ClientDirectory, RadiusClients } from '../domain/clients.js';
import { Code, decodePacket } from '../domain/packet.js';
import { RadiusListener } from './radius.listener.js';

const run = promisify(execFile);
const quiet = () => undefined;
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, child: () => log };
const SECRET = 'secret-of-the-loopback-nas-0123';
const clients = new ClientDirectory(RadiusClients.parse(JSON.stringify([{ cidr: '127.0.0.1', secret: SECRET, tenantId: 'tenant-a', name: 'loopback' }])), 'challenge');

/** radclient (freeradius-utils) sends one Access-Request to `port`: the answer's code, or 'none'. */
async function radclient(port: number, user: string, o: { timeoutSeconds?: number; retries?: number } = {}): Promise<string> {
  const child = run('radclient', ['-x', '-r', String(o.retries ?? 1), '-t', String(o.timeoutSeconds ?? 3), `127.0.0.1:${port}`, 'auth', SECRET], { timeout: 20_000 });
  child.child.stdin!.end(`User-Name = "${user}"\nMessage-Authenticator = 0x00\n`);
  let output: string;
  try {
    output = (await child).stdout;
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('radclient is not installed (Debian: apt-get install freeradius-utils)');
    output = `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
  return /Received (Access-\w+)/.exec(output)?.[1] ?? 'none';
}

/** A UDP socket of its own (a port of its own): sends `bytes` to `port`, and the first answer within `ms`, or undefined. */
async function sendFromNewPort(port: number, bytes: Buffer, ms: number): Promise<Buffer | undefined> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  try {
    return await new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), ms);
      socket.once('message', (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      socket.send(bytes, port, '127.0.0.1');
    });
  } finally {
    socket.close();
  }
}

/**
 * Between radclient and the front: keeps every datagram radclient sends (what an eavesdropper
 * on the path captures) and passes the datagrams both ways.
 */
class Tap {
  readonly captured: Buffer[] = [];
  readonly answers: Buffer[] = [];
  private socket: Socket | undefined;
  private nas: { port: number } | undefined;

  constructor(private readonly front: number) {}

  async open(): Promise<number> {
    const socket = createSocket('udp4');
    socket.on('message', (bytes, remote) => {
      if (remote.port === this.front) {
        this.answers.push(bytes);
        if (this.nas) socket.send(bytes, this.nas.port, '127.0.0.1');
        return;
      }
      this.nas = { port: remote.port };
      this.captured.push(bytes);
      socket.send(bytes, this.front, '127.0.0.1');
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    this.socket = socket;
    return socket.address().port;
  }

  close(): void {
    this.socket?.close();
  }
}

/**
 * Replays of a captured Access-Request over real UDP: radclient plays the NAS through a tap that
 * captures its datagrams, two instances of the front share the real Redis, and a stand-in for
 * auth-challenge on a nats-server of the test's own counts the challenges started (a TOTP one,
 * pending; users named slow-… are answered after 1.5 s).
 */
describe('RadiusListener: a captured Access-Request sent again', () => {
  let server: NatsServerProcess;
  let nc: NatsConnection;
  let redis: Redis;
  const starts: string[] = [];
  const instances: Array<{ listener: RadiusListener; cache: DuplicateCache; port: number }> = [];

  before(async () => {
    server = await startNatsServer();
    nc = await connectClient({ servers: server.url, name: 'radius-listener-test' });
    nc.subscribe(Subjects.challengeStart, {
      callback: (_error, msg) => {
        const { userId } = msg.json<{ userId: string }>();
        starts.push(userId);
        const reply = JSON.stringify({ challengeId: `ch-${randomBytes(6).toString('hex')}`, status: 'pending', method: 'totp', expiresAt: new Date(Date.now() + 60_000).toISOString() });
        setTimeout(() => msg.respond(reply), userId.startsWith('slow-') ? 1_500 : 0);
      },
    });
    await nc.flush();
    redis = new Redis(testEnv.redisUrl);
    const { keyring } = loadKeyring({ NODE_ENV: 'test' });
    for (let i = 0; i < 2; i++) {
      const cache = new DuplicateCache({ clients: clients.size });
      const service = new RadiusService(clients, new ChallengeApi(nc, undefined), new StateStore(redis, keyring), cache, { waitMs: 5_000, pollMs: 500 }, log, new SeenRequests(redis, 600_000));
      const listener = new RadiusListener(service, { address: '127.0.0.1', port: 0, receiveBufferBytes: 1 << 20 }, log);
      const { port } = await listener.start();
      instances.push({ listener, cache, port });
    }
  });

  after(async () => {
    for (const { listener, cache } of instances) {
      await listener.stop(1_000);
      cache.close();
    }
    await nc?.close();
    await server?.stop();
    await redis?.quit();
  });

  const startsOf = (user: string) => starts.filter((u) => u === user).length;

  itWith({ real: ['nats', 'redis'] }, 'radclient’s request replayed from another port gets the same answer and starts nothing; at another instance (a restart, or after the 30 s of memory) it gets no answer; radclient signing in again starts a new challenge', async () => {
    const [a, b] = instances;
    const user = uniqueUser('heidi');
    const tap = new Tap(a!.port);
    try {
      assert.equal(await radclient(await tap.open(), user), 'Access-Challenge');
      assert.equal(tap.captured.length, 1);
      assert.equal(startsOf(user), 1);
      const [captured] = tap.captured;

      const fromAnotherPort = await sendFromNewPort(a!.port, captured!, 3_000);
      assert.deepEqual(fromAnotherPort, tap.answers[0], 'the same bytes, from memory');
      assert.equal(await sendFromNewPort(b!.port, captured!, 1_500), undefined, 'another instance: no answer');
      assert.equal(startsOf(user), 1, 'no second challenge');

      assert.equal(await radclient(a!.port, user), 'Access-Challenge', 'a new request: a new Request Authenticator');
      assert.equal(await radclient(b!.port, user), 'Access-Challenge', 'also at the other instance');
      assert.equal(startsOf(user), 3);
    } finally {
      tap.close();
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'radclient’s own retransmissions of a slow request are answered once, with one challenge', async () => {
    const user = uniqueUser('slow-ivan');
    const tap = new Tap(instances[0]!.port);
    try {
      assert.equal(await radclient(await tap.open(), user, { timeoutSeconds: 1, retries: 3 }), 'Access-Challenge');
      assert.ok(tap.captured.length >= 2, `radclient retransmitted (${tap.captured.length} datagrams)`);
      assert.ok(tap.captured.every((bytes) => bytes.equals(tap.captured[0]!)), 'the same datagram each time');
      assert.equal(startsOf(user), 1);
    } finally {
      tap.close();
    }
  });
});
