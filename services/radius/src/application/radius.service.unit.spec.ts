import { describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Logger } from '@mfa/telemetry';
import type { ChallengeStartReply, ChallengeStatusReply } from '@mfa/contracts';
import type { ApiResult, ChallengeApi } from '../adapters/challenge-api.js';
import type { StateStore } from '../adapters/state-store.js';
import { ClientDirectory, RadiusClients } from '../domain/clients.js';
import { Attr, attributesOf, checkResponse, Code, decodePacket, encodeRequest, hidePassword, textAttributes, type Attribute } from '../domain/packet.js';
import { DuplicateCache } from './duplicate-cache.js';
import { drops } from './metrics.js';
import { RadiusService } from './radius.service.js';

const quiet = () => undefined;
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, child: () => log };
const SECRET = 'a-shared-secret-of-the-vpn';
const clients = new ClientDirectory(RadiusClients.parse(JSON.stringify([{ cidr: '192.0.2.0/24', secret: SECRET, tenantId: 'tenant-a', name: 'vpn' }])), 'challenge');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Every Access-Request new (SeenRequests, with Redis, is in the int spec). */
const alwaysNew = { firstSight: async () => true, forget: async () => undefined };

/**
 * The challenge API as a push user's sign-in meets it: the start answers `pending` (push) after
 * `startMs`; every status poll answers `pending` after `pollReplyMs`, and the `until` each poll
 * was given is kept. As auth-challenge's transport does, a poll with under 100 ms left to its
 * deadline gets no reply; `down`: no poll gets one.
 */
function pushApi(o: { startMs: number | (() => number); pollReplyMs: number; down?: boolean }) {
  const untils: number[] = [];
  const api = {
    longestCallMs: 6_000,
    replyGraceMs: 1_000,
    async start(): Promise<ApiResult<ChallengeStartReply>> {
      await sleep(typeof o.startMs === 'number' ? o.startMs : o.startMs());
      return { ok: { challengeId: 'ch-1', status: 'pending', method: 'push', expiresAt: new Date(Date.now() + 60_000).toISOString() } as ChallengeStartReply };
    },
    async status(_client: unknown, challengeId: string, until?: number): Promise<ApiResult<ChallengeStatusReply>> {
      untils.push(until ?? Number.NaN);
      if (o.down || (until ?? Infinity) - Date.now() < 100) {
        await sleep(Math.max(0, (until ?? Date.now()) - Date.now()));
        return { unreachable: 'TIMEOUT' };
      }
      await sleep(o.pollReplyMs);
      return { ok: { challengeId, status: 'pending' } as ChallengeStatusReply };
    },
  };
  return { api: api as unknown as ChallengeApi, untils };
}

function accessRequest(userName: string) {
  const authenticator = randomBytes(16);
  const bytes = encodeRequest({ code: Code.AccessRequest, identifier: 7, authenticator, attributes: textAttributes(Attr.UserName, userName), secret: Buffer.from(SECRET) });
  return { bytes, authenticator };
}

describe('RadiusService: how long a push is waited for', () => {
  it('counts RADIUS_WAIT_SECONDS from the request’s arrival, and caps every status poll’s deadline there: a slow start does not push the answer past the NAS’s timeout', async () => {
    const { api, untils } = pushApi({ startMs: 300, pollReplyMs: 20 });
    const cache = new DuplicateCache();
    const service = new RadiusService(clients, api, {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, log, alwaysNew);
    // The service's own timers do not hold the process open (a shutdown does not wait for them).
    const alive = setInterval(quiet, 1_000);
    try {
      const { bytes, authenticator } = accessRequest('alice@example.com');
      const before = Date.now();
      const answer = await service.receive({ bytes, address: '192.0.2.10', port: 40_000 });
      assert.ok(answer, 'an answer');
      assert.equal(checkResponse(answer, authenticator, Buffer.from(SECRET)).authentic, true);
      const reply = decodePacket(answer);
      assert.equal(reply.code, Code.AccessReject);
      assert.match(attributesOf(reply, Attr.ReplyMessage).map((v) => v.toString('utf8')).join(''), /not answered in time/);
      assert.ok(untils.length > 0, 'the status was asked');
      // Every poll ends where waiting ends: RADIUS_WAIT_SECONDS after the arrival, not after the
      // start's reply (which came 300 ms later).
      assert.deepEqual(new Set(untils).size, 1, `one end for every poll: ${untils.join(', ')}`);
      const end = untils[0]! - before;
      assert.ok(end >= 700 && end < 700 + 300, `waiting ends ${end} ms after the request was handed over`);
    } finally {
      clearInterval(alive);
      cache.close();
    }
  });

  it('answers a push still pending when the wait ends with Access-Reject, however little time its last poll had; with no poll answered at all, with silence', async () => {
    const cache = new DuplicateCache();
    const alive = setInterval(quiet, 1_000);
    try {
      // Starts of every length within a poll interval: the last poll begins anywhere in it.
      const { api } = pushApi({ startMs: () => Math.random() * 100, pollReplyMs: 5 });
      const service = new RadiusService(clients, api, {} as StateStore, cache, { waitMs: 600, pollMs: 100 }, log, alwaysNew);
      const answers = await Promise.all(
        Array.from({ length: 60 }, (_, i) => service.receive({ bytes: accessRequest(`user-${i}@example.com`).bytes, address: '192.0.2.10', port: 40_000 + i })),
      );
      assert.deepEqual(
        answers.map((a) => a && decodePacket(a).code),
        answers.map(() => Code.AccessReject),
        'every one rejected, none left unanswered',
      );

      const down = pushApi({ startMs: 0, pollReplyMs: 5, down: true });
      const forgotten: string[] = [];
      const seen = { firstSight: async () => true, forget: async (_: unknown, authenticator: Buffer) => void forgotten.push(authenticator.toString('hex')) };
      const unreachable = new RadiusService(clients, down.api, {} as StateStore, cache, { waitMs: 600, pollMs: 100 }, log, seen);
      const unanswered = accessRequest('bob@example.com');
      assert.equal(await unreachable.receive({ bytes: unanswered.bytes, address: '192.0.2.11', port: 41_000 }), undefined, 'no answer: the NAS tries its next server');
      assert.ok(down.untils.length > 0);
      // The next server (another instance) may get the very same packet: it is not kept as taken.
      assert.deepEqual(forgotten, [decodePacket(unanswered.bytes).authenticator.toString('hex')], 'the unanswered request is forgotten');
    } finally {
      clearInterval(alive);
      cache.close();
    }
  });

  it('gives a shutdown as long as the longest answer: otp mode’s two calls, or the wait and its last poll’s grace', () => {
    const cache = new DuplicateCache();
    try {
      const { api } = pushApi({ startMs: 0, pollReplyMs: 0 });
      assert.equal(new RadiusService(clients, api, {} as StateStore, cache, { waitMs: 25_000, pollMs: 500 }, log, alwaysNew).longestAnswerMs, 26_000);
      assert.equal(new RadiusService(clients, api, {} as StateStore, cache, { waitMs: 5_000, pollMs: 500 }, log, alwaysNew).longestAnswerMs, 12_000);
    } finally {
      cache.close();
    }
  });
});

/** A logger that keeps every line, with its level. */
const recording = () => {
  const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
  const at = (level: string) => (message: string, fields: Record<string, unknown> = {}) => void lines.push({ level, message, fields });
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => logger };
  return { logger, lines };
};

describe('RadiusService: answers that cannot be given, and refusals the operator must see', () => {
  const refusing = (error: 'forbidden' | 'not_found') =>
    ({
      longestCallMs: 6_000,
      replyGraceMs: 1_000,
      start: async () => ({ error, message: error === 'forbidden' ? 'the API key lacks the challenges scope' : 'unknown user' }),
    }) as unknown as ChallengeApi;

  it('drops, counts and logs an answer over 4096 octets (a request full of Proxy-State, each echoed), for the retransmission too; the request stays taken (a copy elsewhere would start a challenge that fails the same way)', async () => {
    const { logger, lines } = recording();
    const cache = new DuplicateCache();
    const forgotten: string[] = [];
    const seen = { firstSight: async () => true, forget: async (_: unknown, authenticator: Buffer) => void forgotten.push(authenticator.toString('hex')) };
    const service = new RadiusService(clients, refusing('forbidden'), {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, logger, seen);
    try {
      const authenticator = randomBytes(16);
      // 4096 octets in all; the answer's Reply-Message is longer than the User-Name.
      const proxyStates = [...Array.from({ length: 16 }, () => randomBytes(240)), randomBytes(181)].map((value) => ({ type: Attr.ProxyState, value }));
      const bytes = encodeRequest({ code: Code.AccessRequest, identifier: 9, authenticator, attributes: [...textAttributes(Attr.UserName, 'a'), ...proxyStates], secret: Buffer.from(SECRET) });
      assert.equal(bytes.length, 4096);
      assert.equal(await service.receive({ bytes, address: '192.0.2.10', port: 40_001 }), undefined);
      assert.equal(await service.receive({ bytes, address: '192.0.2.10', port: 40_001 }), undefined);
      assert.equal(lines.filter((l) => l.level === 'error' && l.message === 'radius request failed').length, 1);
      assert.deepEqual(forgotten, [], 'not forgotten: not left for the next server');
    } finally {
      cache.close();
    }
  });

  it('logs a refusal of the client by the challenge API (its key), with the client and the reason', async () => {
    const { logger, lines } = recording();
    const cache = new DuplicateCache();
    const service = new RadiusService(clients, refusing('forbidden'), {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, logger, alwaysNew);
    try {
      const { bytes } = accessRequest('alice@example.com');
      const answer = await service.receive({ bytes, address: '192.0.2.10', port: 40_002 });
      assert.equal(decodePacket(answer!).code, Code.AccessReject);
      const warned = lines.find((l) => l.level === 'warn' && /refused by the challenge API/.test(l.message));
      assert.deepEqual([warned?.fields.client, warned?.fields.reason], ['vpn', 'the API key lacks the challenges scope']);
    } finally {
      cache.close();
    }
  });
});

describe('RadiusService: log lines about dropped datagrams', () => {
  /** A service, its log lines and a request's bytes, on a mocked clock from 10:00, for datagrams dropped before any request is made. */
  const droppingService = async (test: (t: { service: RadiusService; lines: ReturnType<typeof recording>['lines']; bytes: Buffer }) => void | Promise<void>) => {
    mock.timers.enable({ apis: ['Date', 'setTimeout'], now: Date.parse('2026-12-01T10:00:00Z') });
    const cache = new DuplicateCache();
    try {
      const { logger, lines } = recording();
      const service = new RadiusService(clients, pushApi({ startMs: 0, pollReplyMs: 0 }).api, {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, logger, alwaysNew);
      await test({ service, lines, bytes: accessRequest('alice@example.com').bytes });
    } finally {
      mock.timers.reset();
      cache.close();
    }
  };
  const dropped = async (reason: string) => (await drops.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  /** A source no RADIUS_CLIENTS entry covers: the `n`th address of an IPv6 /64. */
  const stranger = (n: number) => `2001:db8:0:1::${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;

  it('writes at most 20 a minute however many sources a flood comes from, then one saying how many were left out; the metric counts every drop', () =>
    droppingService(async ({ service, lines, bytes }) => {
      const before = await dropped('unknown_client');
      for (let n = 0; n < 50_000; n++) assert.equal(service.receive({ bytes, address: stranger(n), port: 1812 }), undefined);
      assert.equal(await dropped('unknown_client'), before + 50_000, 'every drop counted');
      assert.equal(lines.filter((l) => l.message === 'radius datagram dropped').length, 20);
      assert.equal(lines.length, 20, 'nothing else yet');

      mock.timers.tick(60_000);
      assert.deepEqual(lines.slice(20).map((l) => [l.message, l.fields.suppressed, l.fields.byReason]), [
        ['radius datagrams dropped: log lines left out', 49_980, { unknown_client: 49_980 }],
      ]);

      // The next minute has its budget again; a source already logged stays quiet for its minute.
      for (let n = 50_000; n < 50_100; n++) service.receive({ bytes, address: stranger(n), port: 1812 });
      assert.equal(lines.length, 41);
      service.receive({ bytes, address: stranger(0), port: 1812 });
      mock.timers.tick(60_000);
      assert.equal(lines.length, 42);
      assert.equal(lines[41]!.fields.suppressed, 81);
    }));

  it('logs a source once a minute per reason, and forgets no more than the sources whose minute has passed', () =>
    droppingService(({ service, lines, bytes }) => {
      for (let i = 0; i < 100; i++) service.receive({ bytes, address: '198.51.100.7', port: 1812 + i });
      assert.equal(lines.length, 1);
      mock.timers.tick(30_000);
      for (let n = 0; n < 5; n++) service.receive({ bytes, address: stranger(n), port: 1812 });
      service.receive({ bytes, address: '198.51.100.7', port: 1812 });
      assert.equal(lines.length, 6, 'the first source still within its minute');
      mock.timers.tick(30_000);
      service.receive({ bytes, address: '198.51.100.7', port: 1812 });
      assert.equal(lines.length, 7, 'its minute passed');
      for (let n = 0; n < 5; n++) service.receive({ bytes, address: stranger(n), port: 1812 });
      assert.equal(lines.length, 7, 'the others remembered still');
    }));
});

describe('RadiusService: what a datagram costs before its Message-Authenticator is checked', () => {
  /**
   * A datagram that counts the views taken of it: decoding takes one per attribute, checking the
   * Message-Authenticator one in all. So the count tells whether a packet was decoded.
   */
  const counting = (bytes: Buffer) => {
    let views = 0;
    Object.defineProperty(bytes, 'subarray', { value: (start?: number, end?: number) => (views++, Buffer.prototype.subarray.call(bytes, start, end)) });
    return { bytes, views: () => views };
  };
  /** 4,096 octets: 2,000 empty attributes of an unknown type, then a Message-Authenticator, signed with `secret`. */
  const fullOfAttributes = (secret: string) => {
    const attributes: Attribute[] = Array.from({ length: 2_000 }, () => ({ type: 240, value: Buffer.alloc(0) }));
    attributes.push({ type: 240, value: Buffer.alloc(4096 - 20 - 2 * 2_000 - 18 - 2) });
    return encodeRequest({ code: Code.AccessRequest, identifier: 3, authenticator: randomBytes(16), attributes, secret: Buffer.from(secret) });
  };
  const dropped = async (reason: string) => (await drops.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

  it('drops a forged packet (a wrong Message-Authenticator, or none) from a client’s range without decoding it; a signed one is decoded', async () => {
    const cache = new DuplicateCache();
    const service = new RadiusService(clients, pushApi({ startMs: 0, pollReplyMs: 0 }).api, {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, log, alwaysNew);
    try {
      const forged = counting(fullOfAttributes('not-the-secret-of-the-vpn'));
      assert.equal(forged.bytes.length, 4096);
      const bad = await dropped('bad_message_authenticator');
      assert.equal(service.receive({ bytes: forged.bytes, address: '192.0.2.10', port: 40_100 }), undefined);
      assert.equal(await dropped('bad_message_authenticator'), bad + 1);
      assert.ok(forged.views() <= 2, `${forged.views()} views of a forged packet: it was decoded`);

      const unsigned = fullOfAttributes(SECRET);
      unsigned[unsigned.length - 18] = 240; // the Message-Authenticator becomes an unknown attribute
      const missing = counting(unsigned);
      assert.equal(service.receive({ bytes: missing.bytes, address: '192.0.2.10', port: 40_101 }), undefined);
      assert.equal(missing.views(), 0);

      const signed = counting(fullOfAttributes(SECRET));
      const answer = await service.receive({ bytes: signed.bytes, address: '192.0.2.10', port: 40_102 });
      assert.equal(decodePacket(answer!).code, Code.AccessReject, 'answered (it has no User-Name)');
      assert.ok(signed.views() > 2_000, 'the counting sees a decoding');
    } finally {
      cache.close();
    }
  });
});

describe('RadiusService: a client flooding the front', () => {
  it('gets its own new requests dropped as overloaded once it has filled its part and the shared half; other clients are still answered', async () => {
    const two = new ClientDirectory(
      RadiusClients.parse(
        JSON.stringify([
          { cidr: '192.0.2.0/24', secret: SECRET, tenantId: 'tenant-a', name: 'flooder' },
          { cidr: '198.51.100.0/24', secret: SECRET, tenantId: 'tenant-b', name: 'neighbour' },
        ]),
      ),
      'challenge',
    );
    // 100 entries: 25 kept for each client, 50 shared. Answers never settle: the entries stay.
    const cache = new DuplicateCache({ clients: two.size, maxEntries: 100 });
    const api = { longestCallMs: 6_000, replyGraceMs: 1_000, start: () => new Promise(() => undefined) } as unknown as ChallengeApi;
    const service = new RadiusService(two, api, {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, log, alwaysNew);
    try {
      const from = (address: string, n: number) => service.receive({ bytes: accessRequest(`user-${n}@example.com`).bytes, address, port: 30_000 + n });
      const flood = Array.from({ length: 200 }, (_, n) => from('192.0.2.66', n));
      assert.equal(flood.filter(Boolean).length, 75, 'the flooder: its 25 and the 50 shared');
      assert.equal(flood.slice(75).every((a) => a === undefined), true, 'then dropped');
      const neighbour = Array.from({ length: 25 }, (_, n) => from('198.51.100.7', n));
      assert.equal(neighbour.every((a) => a !== undefined), true, 'the other client: its 25 are taken');
      assert.equal(from('198.51.100.7', 25), undefined, 'the cache is full');
      assert.equal(cache.size, 100);
    } finally {
      cache.close();
    }
  });
});

describe('RadiusService: attributes RFC 2865 allows once in an Access-Request', () => {
  it('rejects a request with two User-Name, User-Password, State, Calling-Station-Id or NAS-Identifier attributes without starting anything; one of each is taken', async () => {
    const started: string[] = [];
    const api = {
      longestCallMs: 6_000,
      replyGraceMs: 1_000,
      start: async (_client: unknown, body: { userId: string }) => (started.push(body.userId), { ok: { challengeId: 'ch-1', status: 'approved' } }),
    } as unknown as ChallengeApi;
    const cache = new DuplicateCache();
    const service = new RadiusService(clients, api, {} as StateStore, cache, { waitMs: 700, pollMs: 100 }, log, alwaysNew);
    const secret = Buffer.from(SECRET);
    const ask = async (attributes: (authenticator: Buffer) => Attribute[]) => {
      const authenticator = randomBytes(16);
      const bytes = encodeRequest({ code: Code.AccessRequest, identifier: 5, authenticator, attributes: attributes(authenticator), secret });
      const reply = decodePacket((await service.receive({ bytes, address: '192.0.2.10', port: 40_500 }))!);
      return { code: reply.code, message: attributesOf(reply, Attr.ReplyMessage).map((v) => v.toString('utf8')).join('') };
    };
    const text = (type: number, value: string): Attribute => ({ type, value: Buffer.from(value) });
    try {
      for (const [type, name, value] of [
        [Attr.UserName, 'User-Name', 'mallory@example.com'],
        [Attr.State, 'State', 'a-state-of-16-oc'],
        [Attr.CallingStationId, 'Calling-Station-Id', '192.0.2.200'],
        [Attr.NasIdentifier, 'NAS-Identifier', 'vpn-2'],
      ] as const) {
        const answer = await ask(() => [text(Attr.UserName, 'alice@example.com'), text(type, value), text(type, value)]);
        assert.deepEqual(answer, { code: Code.AccessReject, message: `The request is malformed: it has more than one ${name}.` }, name);
      }
      const passwords = await ask((authenticator) => [text(Attr.UserName, 'alice@example.com'), ...['123456', '654321'].map((p) => ({ type: Attr.UserPassword, value: hidePassword(Buffer.from(p), secret, authenticator) }))]);
      assert.deepEqual(passwords, { code: Code.AccessReject, message: 'The request is malformed: it has more than one User-Password.' });
      assert.deepEqual(started, [], 'no challenge started');

      const single = await ask(() => [text(Attr.UserName, 'alice@example.com'), text(Attr.CallingStationId, '192.0.2.200'), text(Attr.NasIdentifier, 'vpn-2')]);
      assert.equal(single.code, Code.AccessAccept);
      assert.deepEqual(started, ['alice@example.com']);
    } finally {
      cache.close();
    }
  });
});
