import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { Subjects } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { connectClient } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import { itWith, startNatsServer, testEnv, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { ChallengeApi } from '../adapters/challenge-api.js';
import { SeenRequests } from '../adapters/seen-requests.js';
import { StateStore } from '../adapters/state-store.js';
import { ClientDirectory, RadiusClients } from '../domain/clients.js';
import { Attr, attributeOf, attributesOf, checkResponse, Code, decodePacket, encodeRequest, hidePassword, textAttributes, type Attribute } from '../domain/packet.js';
import { DuplicateCache } from './duplicate-cache.js';
import { drops } from './metrics.js';
import { RadiusService } from './radius.service.js';

const quiet = () => undefined;
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, child: () => log };
const CODE = '123456';

/** Four NASes: two of tenant A (one in otp mode), one more of tenant A, one of tenant B. */
const NAS = {
  a: { cidr: '192.0.2.0/24', secret: 'secret-of-vpn-a-0123456789', tenantId: 'tenant-a', name: 'vpn-a', address: '192.0.2.10' },
  a2: { cidr: '10.1.0.0/16', secret: 'secret-of-vpn-a2-0123456789', tenantId: 'tenant-a', name: 'vpn-a2', address: '10.1.0.10' },
  b: { cidr: '198.51.100.0/24', secret: 'secret-of-vpn-b-0123456789', tenantId: 'tenant-b', name: 'vpn-b', address: '198.51.100.10' },
  otp: { cidr: '203.0.113.0/24', secret: 'secret-of-otp-vpn-0123456789', tenantId: 'tenant-a', name: 'otp-vpn', address: '203.0.113.10', passwordMode: 'otp' as const },
};
type Nas = (typeof NAS)[keyof typeof NAS];
const clients = new ClientDirectory(RadiusClients.parse(JSON.stringify(Object.values(NAS).map(({ address: _address, ...entry }) => entry))), 'challenge');

/**
 * The RADIUS front with its real adapters: States in the real Redis, the challenge API over a
 * nats-server of the test's own, where a stand-in for auth-challenge answers every start with a
 * pending TOTP challenge and accepts the code 123456, keeping what it was asked.
 */
describe('RadiusService with Redis and NATS: States and User-Password', () => {
  let server: NatsServerProcess;
  let nc: NatsConnection;
  let redis: Redis;
  let cache: DuplicateCache;
  let service: RadiusService;
  const subscriptions: Subscription[] = [];
  const starts: Array<{ tenantId: string; userId: string }> = [];
  const verifies: Array<{ challengeId: string; code: string }> = [];
  let port = 40_000;

  before(async () => {
    server = await startNatsServer();
    nc = await connectClient({ servers: server.url, name: 'radius-service-test' });
    subscriptions.push(
      nc.subscribe(Subjects.challengeStart, {
        callback: (_error, msg) => {
          const body = msg.json<{ tenantId: string; userId: string }>();
          starts.push(body);
          msg.respond(JSON.stringify({ challengeId: `ch-${randomBytes(6).toString('hex')}`, status: 'pending', method: 'totp', expiresAt: new Date(Date.now() + 60_000).toISOString() }));
        },
      }),
      nc.subscribe(Subjects.challengeVerify, {
        callback: (_error, msg) => {
          const body = msg.json<{ challengeId: string; code: string }>();
          verifies.push(body);
          msg.respond(JSON.stringify(body.code === CODE ? { challengeId: body.challengeId, status: 'approved' } : { challengeId: body.challengeId, status: 'pending', reason: 'invalid_code' }));
        },
      }),
    );
    await nc.flush();
    redis = new Redis(testEnv.redisUrl);
    cache = new DuplicateCache({ clients: clients.size });
    service = instance(cache);
  });

  /** An instance of the front: its own duplicate cache, the shared Redis. */
  function instance(own: DuplicateCache): RadiusService {
    const { keyring } = loadKeyring({ NODE_ENV: 'test' });
    return new RadiusService(clients, new ChallengeApi(nc, undefined), new StateStore(redis, keyring), own, { waitMs: 5_000, pollMs: 500 }, log, new SeenRequests(redis, 600_000));
  }

  after(async () => {
    cache?.close();
    for (const s of subscriptions) s.unsubscribe();
    await nc?.close();
    await server?.stop();
    await redis?.quit();
  });

  /** An Access-Request from `nas`, each on a port of its own (never a retransmission): its answer, decoded, after its authenticators were checked. */
  async function send(nas: Nas, o: { user: string; state?: Buffer; code?: string; hiddenPassword?: Buffer }) {
    const secret = Buffer.from(nas.secret);
    const authenticator = randomBytes(16);
    const attributes: Attribute[] = [...textAttributes(Attr.UserName, o.user)];
    if (o.code !== undefined) attributes.push({ type: Attr.UserPassword, value: hidePassword(Buffer.from(o.code), secret, authenticator) });
    if (o.hiddenPassword) attributes.push({ type: Attr.UserPassword, value: o.hiddenPassword });
    if (o.state) attributes.push({ type: Attr.State, value: o.state });
    const bytes = encodeRequest({ code: Code.AccessRequest, identifier: 1, authenticator, attributes, secret });
    const answer = await service.receive({ bytes, address: nas.address, port: port++ });
    assert.ok(answer, 'an answer');
    assert.equal(checkResponse(answer, authenticator, secret).authentic, true);
    const packet = decodePacket(answer);
    return { code: packet.code, state: attributeOf(packet, Attr.State), message: attributesOf(packet, Attr.ReplyMessage).map((v) => v.toString('utf8')).join('') };
  }

  itWith({ real: ['nats', 'redis'] }, "a State presented by another user, another client or another tenant's client is refused and stays good for its own user, once", async () => {
    const carol = uniqueUser('carol');
    const challenged = await send(NAS.a, { user: carol });
    assert.equal(challenged.code, Code.AccessChallenge);
    const state = challenged.state!;
    assert.ok(state);

    for (const [nas, user, who] of [
      [NAS.a, uniqueUser('mallory'), 'another user of the same client'],
      [NAS.a2, carol, 'another client of the same tenant'],
      [NAS.b, carol, "another tenant's client"],
      [NAS.otp, carol, 'another client of the same tenant, in otp mode'],
    ] as const) {
      const refused = await send(nas, { user, state, code: CODE });
      assert.equal(refused.code, Code.AccessReject, who);
      assert.match(refused.message, /expired or was already answered/, who);
    }
    assert.deepEqual(verifies, [], 'no refused answer reached challenge.verify');

    const accepted = await send(NAS.a, { user: carol, state, code: CODE });
    assert.equal(accepted.code, Code.AccessAccept, "carol's code, after all those, with her State");
    assert.equal(verifies.length, 1);
    const again = await send(NAS.a, { user: carol, state, code: CODE });
    assert.equal(again.code, Code.AccessReject, 'a State is single-use');
    assert.equal(verifies.length, 1);
  });

  itWith({ real: ['nats', 'redis'] }, "challenge mode ignores a first request's User-Password, even a malformed one; otp mode, which reads it as the code, refuses a malformed one", async () => {
    const startsBefore = starts.length;
    // 17 octets (not a multiple of 16) and 144 (above 128): neither can be decrypted.
    for (const hiddenPassword of [randomBytes(17), randomBytes(144)]) {
      const first = await send(NAS.a, { user: uniqueUser('dave'), hiddenPassword });
      assert.equal(first.code, Code.AccessChallenge, `${hiddenPassword.length} octets: a challenge starts`);
    }
    assert.equal(starts.length, startsBefore + 2);

    const otp = await send(NAS.otp, { user: uniqueUser('erin'), hiddenPassword: randomBytes(17) });
    assert.equal(otp.code, Code.AccessReject);
    assert.match(otp.message, /User-Password attribute is malformed/);
    assert.equal(starts.length, startsBefore + 2, 'no challenge started for it');
    // And an answer to a State still reads the password as the code.
    const challenged = await send(NAS.a, { user: 'frank@example.com' });
    const malformed = await send(NAS.a, { user: 'frank@example.com', state: challenged.state!, hiddenPassword: randomBytes(17) });
    assert.equal(malformed.code, Code.AccessReject);
    assert.match(malformed.message, /User-Password attribute is malformed/);
  });
  itWith({ real: ['nats', 'redis'] }, 'a captured Access-Request sent again starts no second challenge: from another port it gets the same answer while it is remembered in memory; from another address of the range, after the memory forgot it, or at another instance, no answer; a new request of the user starts one', async () => {
    const user = uniqueUser('grace');
    const secret = Buffer.from(NAS.a.secret);
    const authenticator = randomBytes(16);
    const bytes = encodeRequest({ code: Code.AccessRequest, identifier: 42, authenticator, attributes: textAttributes(Attr.UserName, user), secret });
    const startsOf = () => starts.filter((s) => s.userId === user).length;
    const replays = async () => (await drops.get()).values.find((v) => v.labels.reason === 'replay')?.value ?? 0;
    const replaysBefore = await replays();
    const shortMemory = new DuplicateCache({ clients: clients.size, keepMs: 50 });
    const other = new DuplicateCache({ clients: clients.size });
    try {
      const front = instance(shortMemory);
      const first = await front.receive({ bytes, address: NAS.a.address, port: 50_000 });
      assert.equal(decodePacket(first!).code, Code.AccessChallenge);
      assert.equal(startsOf(), 1);
      // Within keepMs of the answer: the NAS's retransmission from another socket.
      assert.deepEqual(await front.receive({ bytes, address: NAS.a.address, port: 50_001 }), first, 'another port: the same bytes');
      assert.equal(await front.receive({ bytes, address: '192.0.2.99', port: 50_000 }), undefined, 'another address of the range: no answer');
      await new Promise((resolve) => setTimeout(resolve, 1_500)); // past keepMs and the next sweep
      assert.equal(await front.receive({ bytes, address: NAS.a.address, port: 50_000 }), undefined, 'the same port, after the memory forgot it: no answer');
      assert.equal(await front.receive({ bytes, address: NAS.a.address, port: 50_002 }), undefined, 'another port, after the memory forgot it: no answer');
      assert.equal(await instance(other).receive({ bytes, address: NAS.a.address, port: 50_000 }), undefined, 'another instance: no answer');
      assert.equal(startsOf(), 1, 'no second challenge');
      // Counted once per source address and instance (the same address again is answered from memory: silence).
      assert.equal(await replays(), replaysBefore + 3);

      // The same authenticator from another client (its own secret) is that client's request.
      const fromB = encodeRequest({ code: Code.AccessRequest, identifier: 42, authenticator, attributes: textAttributes(Attr.UserName, user), secret: Buffer.from(NAS.b.secret) });
      assert.equal(decodePacket((await front.receive({ bytes: fromB, address: NAS.b.address, port: 50_000 }))!).code, Code.AccessChallenge);
      assert.equal(startsOf(), 2);

      const again = await send(NAS.a, { user });
      assert.equal(again.code, Code.AccessChallenge, 'the user signing in again: a new Request Authenticator');
      assert.equal(startsOf(), 3);
    } finally {
      shortMemory.close();
      other.close();
    }
  });
});
