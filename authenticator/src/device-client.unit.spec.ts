import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import {
  bodySha256,
  DeviceApiError,
  DeviceClient,
  generateDeviceKey,
  isLoopbackHost,
  parseActivationUrl,
  parseRetryAfter,
  PendingLocation,
  signDeviceData,
  signRequest,
  type DeviceIdentity,
} from './index.js';
import { DEVICE_KEY_ALGORITHMS, type DeviceKeyAlgorithm } from '@mfa/contracts';

// The strings to sign are written out here from docs/device-api.md, not taken from the code under
// test, so a change of either shows up as a failure.
const activationString = (code: string, publicKey: string) => ['mfa-activate', code, publicKey].join('\n');
const answerString = (challengeId: string, decision: string, number: string) => ['mfa-answer', challengeId, decision, number].join('\n');
const requestString = (method: string, path: string, timestamp: string, nonce: string, bodyHash: string) => [method, path, timestamp, nonce, bodyHash].join('\n');
/** SHA-256 of zero bytes, base64url (the body hash of a GET). */
const EMPTY_SHA256 = '47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU';

const publicKeyOf = (spkiBase64Url: string): KeyObject => createPublicKey({ key: Buffer.from(spkiBase64Url, 'base64url'), format: 'der', type: 'spki' });

/** Verifies as a server following the spec does: P1363 for ES256, plain Ed25519. */
function verifies(algorithm: DeviceKeyAlgorithm, publicKey: string, data: string, signature: string): boolean {
  const key = publicKeyOf(publicKey);
  const bytes = Buffer.from(data, 'utf8');
  const raw = Buffer.from(signature, 'base64url');
  return algorithm === 'ES256' ? verify('sha256', bytes, { key, dsaEncoding: 'ieee-p1363' }, raw) : verify(null, bytes, key, raw);
}

interface Captured {
  url: URL;
  method: string;
  headers: Headers;
  body: string | undefined;
}

/** A fetch that records each request and answers with the next of `replies` (and its headers). */
function fakeFetch(replies: Array<{ status: number; body: unknown; headers?: Record<string, string> }>) {
  const requests: Captured[] = [];
  const fetcher: typeof fetch = async (input, init) => {
    requests.push({ url: new URL(String(input)), method: init?.method ?? 'GET', headers: new Headers(init?.headers), body: init?.body === undefined ? undefined : String(init.body) });
    const reply = replies.shift();
    if (!reply) throw new Error('no reply left');
    return new Response(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body), { status: reply.status, ...(reply.headers ? { headers: reply.headers } : {}) });
  };
  return { fetcher, requests };
}

function identityFor(algorithm: DeviceKeyAlgorithm, baseUrl = 'https://mfa.example.com/device'): DeviceIdentity {
  const key = generateDeviceKey(algorithm);
  return {
    deviceId: 'dev-1',
    tenantId: 'contoso',
    userId: 'helga',
    baseUrl,
    algorithm,
    privateKeyPem: key.privateKeyPem,
    publicKey: key.publicKey,
    pollSeconds: 5,
    platform: 'none',
    activatedAt: '2026-11-30T12:00:00.000Z',
  };
}

const activated = { status: 201, body: { deviceId: 'dev-1', tenantId: 'contoso', userId: 'helga', pollSeconds: 5 } };
const challenge = {
  challengeId: 'a1b2.c3d4',
  application: 'VPN',
  clientIp: '198.51.100.23',
  location: { country: 'SE', countryName: 'Sweden' },
  startedAt: '2026-11-30T12:00:00.000Z',
  expiresAt: '2026-11-30T12:03:00.000Z',
};

for (const algorithm of DEVICE_KEY_ALGORITHMS) {
  describe(`${algorithm} keys and signatures`, () => {
    it('generates a PKCS#8 private key and a DER SPKI public key of the documented curve', () => {
      const key = generateDeviceKey(algorithm);
      assert.match(key.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);
      assert.match(key.publicKey, /^[A-Za-z0-9_-]+$/);
      const publicKey = publicKeyOf(key.publicKey);
      if (algorithm === 'ES256') {
        assert.equal(publicKey.asymmetricKeyType, 'ec');
        assert.equal(publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
      } else {
        assert.equal(publicKey.asymmetricKeyType, 'ed25519');
      }
    });

    it('signs with 64 bytes (r ‖ s for ES256) that verify against the public key, and nothing else', () => {
      const key = generateDeviceKey(algorithm);
      const signature = signDeviceData(algorithm, key.privateKeyPem, 'mfa-answer\nx\ndeny\n');
      assert.match(signature, /^[A-Za-z0-9_-]+$/, 'base64url, no padding');
      assert.equal(Buffer.from(signature, 'base64url').length, 64);
      assert.equal(verifies(algorithm, key.publicKey, 'mfa-answer\nx\ndeny\n', signature), true);
      assert.equal(verifies(algorithm, key.publicKey, 'mfa-answer\nx\napprove\n', signature), false);
      assert.equal(verifies(algorithm, generateDeviceKey(algorithm).publicKey, 'mfa-answer\nx\ndeny\n', signature), false);
    });

    it('activation: the proof signs exactly "mfa-activate\\n<code as sent>\\n<publicKey>"', async () => {
      const { fetcher, requests } = fakeFetch([activated]);
      const device = await DeviceClient.activate('https://mfa.example.com/device/v1/activate?code=k7qx-M2PA-9VZD-4HTE', { fetch: fetcher, algorithm });
      const [request] = requests;
      assert.equal(request!.method, 'POST');
      assert.equal(request!.url.href, 'https://mfa.example.com/device/v1/activate');
      assert.equal(request!.headers.get('content-type'), 'application/json');
      assert.equal(request!.headers.get('mfa-signature'), null, 'activation is not a signed request');
      const body = JSON.parse(request!.body!) as Record<string, string>;
      assert.deepEqual(Object.keys(body).sort(), ['algorithm', 'code', 'platform', 'proof', 'publicKey']);
      assert.equal(body.code, 'k7qx-M2PA-9VZD-4HTE', 'the code as written');
      assert.equal(body.algorithm, algorithm);
      assert.equal(body.platform, 'none');
      assert.equal(body.publicKey, device.identity.publicKey);
      assert.equal(verifies(algorithm, body.publicKey!, activationString('k7qx-M2PA-9VZD-4HTE', body.publicKey!), body.proof!), true);
      assert.deepEqual(
        { deviceId: device.identity.deviceId, baseUrl: device.identity.baseUrl, pollSeconds: device.identity.pollSeconds },
        { deviceId: 'dev-1', baseUrl: 'https://mfa.example.com/device', pollSeconds: 5 },
      );
    });

    it('a signed GET: the four headers, the signature over method, path, timestamp, nonce and the hash of no body', async () => {
      const { fetcher, requests } = fakeFetch([{ status: 200, body: { challenge } }]);
      const identity = identityFor(algorithm);
      const device = new DeviceClient(identity, { fetch: fetcher, now: () => 1_790_000_000_123 });
      assert.deepEqual(await device.pending(), challenge);
      const { url, method, headers, body } = requests[0]!;
      assert.equal(method, 'GET');
      assert.equal(url.href, 'https://mfa.example.com/device/v1/challenges/pending');
      assert.equal(body, undefined);
      assert.equal(headers.get('mfa-device'), 'dev-1');
      assert.equal(headers.get('mfa-timestamp'), '1790000000123');
      const nonce = headers.get('mfa-nonce')!;
      assert.match(nonce, /^[A-Za-z0-9_-]{22,64}$/);
      const toSign = requestString('GET', '/device/v1/challenges/pending', '1790000000123', nonce, EMPTY_SHA256);
      assert.equal(verifies(algorithm, identity.publicKey, toSign, headers.get('mfa-signature')!), true);
    });

    it('an answer: the body signs "mfa-answer\\n<challengeId>\\n<decision>\\n<number or empty>", the request signs the body\'s hash', async () => {
      const identity = identityFor(algorithm);
      for (const [decision, number] of [['approve', '42'], ['deny', undefined], ['fraud', undefined]] as const) {
        const { fetcher, requests } = fakeFetch([{ status: 200, body: decision === 'approve' ? { status: 'approved' } : { status: 'denied', reason: 'denied_by_user' } }]);
        const device = new DeviceClient(identity, { fetch: fetcher });
        await device.answer('a1b2.c3d4', decision, number);
        const { url, method, headers, body } = requests[0]!;
        assert.equal(method, 'POST');
        assert.equal(url.pathname, '/device/v1/challenges/a1b2.c3d4/answer');
        assert.equal(headers.get('content-type'), 'application/json');
        const parsed = JSON.parse(body!) as Record<string, string>;
        assert.deepEqual(Object.keys(parsed).sort(), number ? ['decision', 'number', 'signature'] : ['decision', 'signature'], `${decision}: number only with approve`);
        assert.equal(verifies(algorithm, identity.publicKey, answerString('a1b2.c3d4', decision, number ?? ''), parsed.signature!), true, decision);
        const bodyHash = createHash('sha256').update(body!, 'utf8').digest('base64url');
        const toSign = requestString('POST', '/device/v1/challenges/a1b2.c3d4/answer', headers.get('mfa-timestamp')!, headers.get('mfa-nonce')!, bodyHash);
        assert.equal(verifies(algorithm, identity.publicKey, toSign, headers.get('mfa-signature')!), true, decision);
      }
    });
  });
}

describe('signed requests', () => {
  it('sign the path as sent: the base URL\'s path, percent-encoding and query included', async () => {
    const identity = identityFor('ES256', 'https://mfa.example.com/prefix/device');
    const { fetcher, requests } = fakeFetch([{ status: 200, body: { status: 'approved' } }, { status: 200, body: { challenge: null } }]);
    const device = new DeviceClient(identity, { fetch: fetcher });
    await device.answer('a b/c?', 'approve', '07');
    const { url, headers, body } = requests[0]!;
    assert.equal(url.pathname, '/prefix/device/v1/challenges/a%20b%2Fc%3F/answer');
    const toSign = requestString('POST', url.pathname, headers.get('mfa-timestamp')!, headers.get('mfa-nonce')!, bodySha256(body));
    assert.equal(verifies('ES256', identity.publicKey, toSign, headers.get('mfa-signature')!), true);
    assert.equal(verifies('ES256', identity.publicKey, answerString('a b/c?', 'approve', '07'), (JSON.parse(body!) as { signature: string }).signature), true, 'the answer signs the id itself, not its encoding');

    await device.signed('GET', '/v1/challenges/pending?x=1');
    const second = requests[1]!;
    assert.equal(second.url.search, '?x=1');
    const signedWithQuery = requestString('GET', '/prefix/device/v1/challenges/pending?x=1', second.headers.get('mfa-timestamp')!, second.headers.get('mfa-nonce')!, EMPTY_SHA256);
    assert.equal(verifies('ES256', identity.publicKey, signedWithQuery, second.headers.get('mfa-signature')!), true);
  });

  it('use a fresh nonce each time', async () => {
    const { fetcher, requests } = fakeFetch(Array.from({ length: 20 }, () => ({ status: 200, body: { challenge: null } })));
    const device = new DeviceClient(identityFor('Ed25519'), { fetch: fetcher });
    for (let i = 0; i < 20; i++) await device.pending();
    assert.equal(new Set(requests.map((r) => r.headers.get('mfa-nonce'))).size, 20);
  });

  it('signRequest upper-cases the method and hashes the body as given', () => {
    const key = generateDeviceKey('ES256');
    const headers = signRequest({ algorithm: 'ES256', privateKey: key.privateKeyPem, deviceId: 'd', method: 'post', pathWithQuery: '/device/v1/x', body: '{"a":1}', now: 1000.9, nonce: 'n'.repeat(22) });
    assert.equal(headers['Mfa-Timestamp'], '1000');
    const bodyHash = createHash('sha256').update('{"a":1}').digest('base64url');
    assert.equal(verifies('ES256', key.publicKey, requestString('POST', '/device/v1/x', '1000', 'n'.repeat(22), bodyHash), headers['Mfa-Signature']), true);
    assert.equal(bodySha256(undefined), EMPTY_SHA256);
    assert.equal(bodySha256(''), EMPTY_SHA256);
  });

  it('refuse challenge ids a URL would resolve as a path segment', async () => {
    const device = new DeviceClient(identityFor('ES256'), { fetch: fakeFetch([]).fetcher });
    for (const id of ['', '.', '..']) await assert.rejects(device.answer(id, 'deny'), (e: unknown) => e instanceof DeviceApiError && e.code === 'invalid_request');
  });
});

describe('activation URLs', () => {
  it('give the code as written and the device API\'s base URL', () => {
    assert.deepEqual(parseActivationUrl('https://mfa.example.com/device/v1/activate?code=K7QX-M2PA-9VZD-4HTE'), { baseUrl: 'https://mfa.example.com/device', code: 'K7QX-M2PA-9VZD-4HTE' });
    assert.deepEqual(parseActivationUrl('http://127.0.0.1:3001/device/v1/activate/?code=k7qx%20m2pa'), { baseUrl: 'http://127.0.0.1:3001/device', code: 'k7qx m2pa' });
    assert.deepEqual(parseActivationUrl('https://device.example.com/v1/activate?code=AB'), { baseUrl: 'https://device.example.com', code: 'AB' });
  });

  it('take plain http:// only to this machine (localhost, 127.0.0.0/8, ::1), or anywhere when insecure', () => {
    for (const host of ['localhost:3001', '127.0.0.1', '127.8.9.10:80', '127.1', '[::1]:3001', 'LOCALHOST']) {
      assert.equal(parseActivationUrl(`http://${host}/device/v1/activate?code=A`).code, 'A', host);
    }
    for (const host of ['mfa.example.com', '10.0.0.1', '128.0.0.1', '[::2]', '[::ffff:7f00:1]', 'localhost.example.com', '127.0.0.1.nip.io']) {
      const url = `http://${host}/device/v1/activate?code=A`;
      assert.throws(() => parseActivationUrl(url), (e: unknown) => e instanceof DeviceApiError && e.code === 'invalid_request' && /plain http:\/\/ .*--insecure/.test(e.message), host);
      assert.deepEqual(parseActivationUrl(url, { insecure: true }), { baseUrl: `${new URL(url).origin}/device`, code: 'A' }, host);
    }
    assert.equal(parseActivationUrl('https://mfa.example.com/device/v1/activate?code=A').code, 'A', 'https anywhere');
    assert.deepEqual([isLoopbackHost('127.0.0.1'), isLoopbackHost('[::1]'), isLoopbackHost('localhost'), isLoopbackHost('example.com')], [true, true, true, false]);
  });

  it('activate refuses plain http:// to another host before sending anything, unless insecure', async () => {
    const { fetcher, requests } = fakeFetch([activated]);
    const url = 'http://mfa.example.com/device/v1/activate?code=A';
    await assert.rejects(DeviceClient.activate(url, { fetch: fetcher }), { code: 'invalid_request' });
    assert.equal(requests.length, 0);
    assert.equal((await DeviceClient.activate(url, { fetch: fetcher, insecure: true })).identity.baseUrl, 'http://mfa.example.com/device');
  });

  it('refuse what is not one', () => {
    for (const url of ['not a url', 'ftp://x/device/v1/activate?code=A', 'https://x/device/v1/activate', 'https://x/device/v1/activate?code=', 'https://x/device/v1/pending?code=A']) {
      assert.throws(() => parseActivationUrl(url), (e: unknown) => e instanceof DeviceApiError && e.code === 'invalid_request', url);
    }
  });
});

describe('the activation reply', () => {
  it('is refused (bad_response) when the app could not keep it, as a state file would be refused', async () => {
    for (const reply of [{ pollSeconds: 0 }, { pollSeconds: -1 }, { deviceId: '' }]) {
      const { fetcher } = fakeFetch([{ status: 201, body: { ...activated.body, ...reply } }]);
      await assert.rejects(DeviceClient.activate('https://mfa.example.com/device/v1/activate?code=A', { fetch: fetcher }), (e: unknown) => {
        assert.ok(e instanceof DeviceApiError, String(e));
        assert.deepEqual([e.code, e.status], ['bad_response', 201]);
        assert.match(e.message, /an activation the app cannot keep \((pollSeconds|deviceId)\)/);
        return true;
      }, JSON.stringify(reply));
    }
  });
});

describe('timeouts', () => {
  it('one a timer cannot keep is the caller\'s RangeError, not a network error', async () => {
    for (const timeoutMs of [1.5, 0, 2 ** 31]) {
      const { fetcher, requests } = fakeFetch([{ status: 200, body: { challenge: null } }]);
      await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: fetcher, timeoutMs }).pending(), (e: unknown) => e instanceof RangeError && !(e instanceof DeviceApiError), String(timeoutMs));
      assert.equal(requests.length, 0);
    }
    const { fetcher } = fakeFetch([{ status: 200, body: { challenge: null } }]);
    assert.equal(await new DeviceClient(identityFor('ES256'), { fetch: fetcher, timeoutMs: 2 ** 31 - 1 }).pending(), null);
  });
});

describe('replies', () => {
  const device = (replies: Array<{ status: number; body: unknown }>) => new DeviceClient(identityFor('ES256'), { fetch: fakeFetch(replies).fetcher });

  it('the server\'s error becomes a DeviceApiError with its code, message and status', async () => {
    const refused = { error: { code: 'not_activated', message: 'Authentication request is not for an activated account' } };
    await assert.rejects(device([{ status: 403, body: refused }]).pending(), (e: unknown) => {
      assert.ok(e instanceof DeviceApiError);
      assert.deepEqual([e.code, e.message, e.status], ['not_activated', 'Authentication request is not for an activated account', 403]);
      return true;
    });
  });

  it('a body the protocol does not describe is bad_response, an unreachable server network', async () => {
    await assert.rejects(device([{ status: 502, body: '<html>Bad gateway</html>' }]).pending(), { code: 'bad_response', status: 502 });
    await assert.rejects(device([{ status: 200, body: { challenge: { challengeId: 1 } } }]).pending(), { code: 'bad_response' });
    await assert.rejects(device([{ status: 200, body: { status: 'maybe' } }]).answer('c', 'deny'), { code: 'bad_response' });
    const unreachable = new DeviceClient(identityFor('ES256'), { fetch: async () => Promise.reject(new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }) })) });
    await assert.rejects(unreachable.pending(), (e: unknown) => e instanceof DeviceApiError && e.code === 'network' && /ECONNREFUSED/.test(e.message));
  });

  it('pending is null when nothing waits; fields may be null', async () => {
    assert.equal(await device([{ status: 200, body: { challenge: null } }]).pending(), null);
    const unknown = { ...challenge, application: null, clientIp: null, location: null };
    assert.deepEqual(await device([{ status: 200, body: { challenge: unknown } }]).pending(), unknown);
  });

  it('fields the app does not know are kept', async () => {
    const more = { ...challenge, location: { country: 'SE', countryName: 'Sweden', continent: 'EU' }, riskScore: 3 };
    assert.deepEqual(await device([{ status: 200, body: { challenge: more } }]).pending(), more);
  });

  it('a location is the country the server sends: its code and its name', () => {
    assert.deepEqual(Object.keys(PendingLocation.shape).sort(), ['country', 'countryName']);
    assert.equal(PendingLocation.safeParse({ country: 'SE', countryName: 'Sweden' }).success, true);
    assert.equal(PendingLocation.safeParse({ country: 'SE' }).success, false, 'the server always names the country');
  });
});

describe('waiting for a sign-in (poll-only)', () => {
  it('polls every pollSeconds until one arrives', async () => {
    const replies = [{ status: 200, body: { challenge: null } }, { status: 200, body: { challenge: null } }, { status: 200, body: { challenge } }];
    const { fetcher, requests } = fakeFetch(replies);
    const clock = fakeClock();
    const device = new DeviceClient({ ...identityFor('ES256'), pollSeconds: 5 }, { fetch: fetcher, ...clock });
    assert.deepEqual(await device.waitForPending(60_000), challenge);
    assert.equal(requests.length, 3);
    assert.deepEqual(clock.waits, [5_000, 5_000], 'waited pollSeconds between polls');
  });

  it('gives up with null when the time is up', async () => {
    const { fetcher, requests } = fakeFetch(Array.from({ length: 50 }, () => ({ status: 200, body: { challenge: null } })));
    const clock = fakeClock();
    const device = new DeviceClient({ ...identityFor('ES256'), pollSeconds: 2 }, { fetch: fetcher, ...clock });
    assert.equal(await device.waitForPending(5_000), null);
    assert.deepEqual(clock.waits, [2_000, 2_000, 1_000], 'every pollSeconds, the last wait cut to the time left');
    assert.equal(requests.length, 4);
  });

  it('never polls more often than once a second, whatever pollSeconds the server sent', async () => {
    const { fetcher, requests } = fakeFetch(Array.from({ length: 50 }, () => ({ status: 200, body: { challenge: null } })));
    const clock = fakeClock();
    const device = new DeviceClient({ ...identityFor('ES256'), pollSeconds: 0.001 }, { fetch: fetcher, ...clock });
    assert.equal(await device.waitForPending(3_000), null);
    assert.deepEqual(clock.waits, [1_000, 1_000, 1_000]);
    assert.equal(requests.length, 4);
  });

  it('waits out a 503 (as long as its Retry-After says) and polls on; a 429 ends the wait', async () => {
    const busy = { status: 503, body: { error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } }, headers: { 'retry-after': '30' } };
    const down = { status: 503, body: { error: { code: 'unavailable', message: 'the service could not answer right now; try again' } } };
    const { fetcher, requests } = fakeFetch([busy, down, { status: 200, body: { challenge: null } }, { status: 200, body: { challenge } }]);
    const clock = fakeClock();
    const device = new DeviceClient({ ...identityFor('ES256'), pollSeconds: 5 }, { fetch: fetcher, ...clock });
    assert.deepEqual(await device.waitForPending(120_000), challenge);
    assert.deepEqual(clock.waits, [30_000, 5_000, 5_000], 'Retry-After when longer than pollSeconds, else pollSeconds');
    assert.equal(requests.length, 4);

    const limited = { status: 429, body: { error: { code: 'rate_limited', message: 'too many failed requests from this address; try again in 600 s' } }, headers: { 'retry-after': '600' } };
    const refused = fakeFetch([limited]);
    const again = fakeClock();
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: refused.fetcher, ...again }).waitForPending(120_000), { code: 'rate_limited', status: 429, retryAfterSeconds: 600 });
    assert.deepEqual(again.waits, []);
  });

  it('a server unable to answer until the end is its error, not "nothing waits"', async () => {
    const down = { status: 503, body: { error: { code: 'unavailable', message: 'the service could not answer right now; try again' } } };
    const { fetcher } = fakeFetch(Array.from({ length: 10 }, () => down));
    const clock = fakeClock();
    await assert.rejects(new DeviceClient({ ...identityFor('ES256'), pollSeconds: 5 }, { fetch: fetcher, ...clock }).waitForPending(12_000), { code: 'unavailable', status: 503 });
    assert.deepEqual(clock.waits, [5_000, 5_000]);
  });
});

/** A clock that moves only when the client waits, and the waits it asked for. */
function fakeClock(start = 1_790_000_000_000) {
  let now = start;
  const waits: number[] = [];
  return {
    waits,
    now: () => now,
    sleep: async (ms: number) => {
      waits.push(ms);
      now += ms;
    },
  };
}

const saturated = { status: 503, body: { error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } }, headers: { 'retry-after': '1' } };

describe('a saturated server (503 with Retry-After)', () => {
  it('gets the answer again after the wait it asks for, signed anew with a fresh nonce and timestamp', async () => {
    const identity = identityFor('Ed25519');
    const { fetcher, requests } = fakeFetch([saturated, { status: 200, body: { status: 'approved' } }]);
    const clock = fakeClock();
    assert.deepEqual(await new DeviceClient(identity, { fetch: fetcher, ...clock }).answer('a1b2.c3d4', 'approve', '42'), { status: 'approved' });
    assert.deepEqual(clock.waits, [1_000]);
    assert.equal(requests.length, 2);
    const [first, second] = requests.map((r) => r.headers);
    assert.notEqual(first!.get('mfa-nonce'), second!.get('mfa-nonce'));
    assert.equal(second!.get('mfa-timestamp'), String(1_790_000_001_000));
    const toSign = requestString('POST', '/device/v1/challenges/a1b2.c3d4/answer', second!.get('mfa-timestamp')!, second!.get('mfa-nonce')!, bodySha256(requests[1]!.body));
    assert.equal(verifies('Ed25519', identity.publicKey, toSign, second!.get('mfa-signature')!), true);
  });

  it('is asked twice more at most, and never again when its wait is long or it says none', async () => {
    const three = fakeFetch([saturated, saturated, saturated, { status: 200, body: { challenge: null } }]);
    const clock = fakeClock();
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: three.fetcher, ...clock }).pending(), (e: unknown) => {
      assert.ok(e instanceof DeviceApiError);
      assert.deepEqual([e.code, e.status, e.retryAfterSeconds], ['unavailable', 503, 1]);
      assert.match(e.message, /try again in 1 s$/);
      return true;
    });
    assert.deepEqual(clock.waits, [1_000, 1_000]);
    assert.equal(three.requests.length, 3);

    for (const headers of [{ 'retry-after': '60' }, undefined]) {
      const once = fakeFetch([{ ...saturated, ...(headers ? { headers } : { headers: {} }) }, { status: 200, body: { challenge: null } }]);
      const waited = fakeClock();
      await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: once.fetcher, ...waited }).pending(), { code: 'unavailable', status: 503 });
      assert.deepEqual(waited.waits, [], JSON.stringify(headers));
      assert.equal(once.requests.length, 1);
    }
  });

  it('activation is sent again as it was (the code was not spent); a 503 without Retry-After may have spent it', async () => {
    const { fetcher, requests } = fakeFetch([saturated, activated]);
    const clock = fakeClock();
    const device = await DeviceClient.activate('https://mfa.example.com/device/v1/activate?code=K7QX-M2PA-9VZD-4HTE', { fetch: fetcher, ...clock });
    assert.equal(device.identity.deviceId, 'dev-1');
    assert.deepEqual(clock.waits, [1_000]);
    assert.equal(requests[0]!.body, requests[1]!.body);

    const down = fakeFetch([{ status: 503, body: { error: { code: 'unavailable', message: 'activation is not available right now; try again' } } }]);
    await assert.rejects(DeviceClient.activate('https://mfa.example.com/device/v1/activate?code=K7QX-M2PA-9VZD-4HTE', { fetch: down.fetcher, ...fakeClock() }), (e: unknown) => {
      assert.ok(e instanceof DeviceApiError);
      assert.match(e.message, /the activation code may have been spent: try again, and ask for a new code if it is refused$/);
      return true;
    });
  });
});

describe('429 rate_limited', () => {
  const limited = (seconds?: number) => ({
    status: 429,
    body: { error: { code: 'rate_limited', message: seconds ? `too many failed requests from this address; try again in ${seconds} s` : 'the user is locked out' } },
    ...(seconds ? { headers: { 'retry-after': String(seconds) } } : {}),
  });

  it('from an address over its limit: an activation is refused with the seconds to wait and the code unspent, never sent again', async () => {
    const { fetcher, requests } = fakeFetch([limited(540), activated]);
    const clock = fakeClock();
    await assert.rejects(DeviceClient.activate('https://mfa.example.com/device/v1/activate?code=K7QX-M2PA-9VZD-4HTE', { fetch: fetcher, ...clock }), (e: unknown) => {
      assert.ok(e instanceof DeviceApiError);
      assert.deepEqual([e.code, e.status, e.retryAfterSeconds], ['rate_limited', 429, 540]);
      assert.equal(e.message, 'too many failed requests from this address; try again in 540 s (the activation code was not spent)');
      return true;
    });
    assert.equal(requests.length, 1);
    assert.deepEqual(clock.waits, []);
  });

  it('a locked-out user (no Retry-After): the answer says so, and is not sent again', async () => {
    const { fetcher, requests } = fakeFetch([limited(), { status: 200, body: { status: 'approved' } }]);
    const clock = fakeClock();
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: fetcher, ...clock }).answer('a1b2.c3d4', 'approve', '42'), (e: unknown) => {
      assert.ok(e instanceof DeviceApiError);
      assert.deepEqual([e.code, e.status, e.retryAfterSeconds], ['rate_limited', 429, undefined]);
      assert.match(e.message, /^the user is locked out; the user is locked out \(too many wrong codes\): no approval or denial counts until the lockout ends \(a fraud report still does\)$/);
      return true;
    });
    assert.equal(requests.length, 1);
    assert.deepEqual(clock.waits, []);
  });

  it('Retry-After is read in both its forms, and nothing else is one', () => {
    const now = Date.parse('2026-12-05T08:00:00Z');
    assert.equal(parseRetryAfter('120', now), 120);
    assert.equal(parseRetryAfter('Sat, 05 Dec 2026 08:01:30 GMT', now), 90);
    assert.equal(parseRetryAfter('Sat, 05 Dec 2026 07:00:00 GMT', now), 0);
    for (const value of [null, '', '-1', '1.5', 'soon', '12345678901']) assert.equal(parseRetryAfter(value, now), undefined, String(value));
  });
});

describe('other refusals', () => {
  const refused = (status: number, code: string, message: string) => ({ status, body: { error: { code, message } } });

  it('409, 413 and 415 are the server\'s code and message with their status, and are not sent again', async () => {
    for (const reply of [refused(409, 'conflict', 'the challenge is not waiting for an answer'), refused(413, 'invalid_request', 'the body is too large'), refused(415, 'invalid_request', 'a Content-Encoding or charset the service does not read')]) {
      const { fetcher, requests } = fakeFetch([reply, { status: 200, body: { status: 'approved' } }]);
      await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: fetcher, ...fakeClock() }).answer('c', 'deny'), { code: reply.body.error.code, message: reply.body.error.message, status: reply.status });
      assert.equal(requests.length, 1);
    }
  });

  it('a 401 from a device whose clock is off by more than 60 s says by how much (the server\'s Date header)', async () => {
    const clock = { now: () => Date.parse('2026-12-05T08:05:00Z') };
    const skewed = refused(401, 'unauthenticated', 'Mfa-Timestamp is more than 60 s from the server’s clock');
    const { fetcher } = fakeFetch([{ ...skewed, headers: { date: 'Sat, 05 Dec 2026 08:00:00 GMT' } }, { ...skewed, headers: { date: 'Sat, 05 Dec 2026 08:04:30 GMT' } }]);
    const device = new DeviceClient(identityFor('ES256'), { fetch: fetcher, ...clock });
    await assert.rejects(device.pending(), {
      code: 'unauthenticated',
      message: "Mfa-Timestamp is more than 60 s from the server’s clock; this device's clock is 300 s ahead of the server's (2026-12-05T08:00:00.000Z), and the server refuses more than 60 s: set the clock right (automatic time)",
    });
    await assert.rejects(device.pending(), { code: 'unauthenticated', message: 'Mfa-Timestamp is more than 60 s from the server’s clock' }, 'within the window: nothing to add');
  });
});

describe('hostile replies', () => {
  it('a body without end is not read past 64 KiB', async () => {
    let cancelled = false;
    // As fetch does: the request's signal (its timeout) errors the body it is reading.
    const endless: typeof fetch = async (_input, init) =>
      new Response(
        new ReadableStream({
          start: (c) => init!.signal!.addEventListener('abort', () => c.error(init!.signal!.reason)),
          // A chunk a turn of the event loop, as from a socket: the timeout can fire between them.
          pull: (c) => new Promise<void>((resolve) => setImmediate(() => resolve(c.enqueue(new Uint8Array(16 * 1024).fill(0x20))))),
          cancel: () => void (cancelled = true),
        }),
        { status: 200 },
      );
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: endless, timeoutMs: 2_000 }).pending(), { code: 'bad_response', status: 200 });
    assert.equal(cancelled, true);
  });

  it('a body that stops coming is a timeout (network), as a server that never answers', async () => {
    // As fetch does: the request's signal errors the body it is reading.
    const stalled: typeof fetch = async (_input, init) =>
      new Response(new ReadableStream({ start: (c) => { c.enqueue(new TextEncoder().encode('{"challenge":')); init!.signal!.addEventListener('abort', () => c.error(init!.signal!.reason)); } }), { status: 200 });
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: stalled, timeoutMs: 50 }).pending(), (e: unknown) => e instanceof DeviceApiError && e.code === 'network' && /no answer in 50 ms/.test(e.message));
  });

  it('JSON of the wrong shape, and a fetch that fails with nothing, are errors of the device API, never a crash', async () => {
    for (const body of ['null', '[]', '42', '"x"', '{"challenge":[]}', '{"error":"x"}']) {
      await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: fakeFetch([{ status: 200, body }]).fetcher }).pending(), { code: 'bad_response' }, body);
    }
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: fakeFetch([{ status: 500, body: '{"error":{"code":1}}' }]).fetcher }).pending(), { code: 'bad_response', status: 500 });
    await assert.rejects(new DeviceClient(identityFor('ES256'), { fetch: async () => Promise.reject(undefined) }).pending(), { code: 'network' });
  });
});

describe('the number', () => {
  it('is two ASCII digits, with approve only: anything else is refused before it is sent', async () => {
    const { fetcher, requests } = fakeFetch([]);
    const device = new DeviceClient(identityFor('ES256'), { fetch: fetcher });
    for (const [decision, number] of [['approve', '４２'], ['approve', '٤٢'], ['approve', '4'], ['approve', '042'], ['approve', ' 42'], ['deny', '42'], ['fraud', '42']] as const) {
      await assert.rejects(device.answer('c', decision, number), { code: 'invalid_request' }, `${decision} ${number}`);
    }
    assert.equal(requests.length, 0);
  });
});

describe('secrets', () => {
  it('an activation URL refused is never quoted with its code', () => {
    const code = 'K7QX-M2PA-9VZD-4HTE';
    for (const url of [code, `https://mfa.example.com/device/v1/wrong?code=${code}`, `ftp://mfa.example.com/device/v1/activate?code=${code}`]) {
      assert.throws(() => parseActivationUrl(url), (e: unknown) => e instanceof DeviceApiError && !e.message.includes(code) && !e.message.includes('K7QX'), url);
    }
  });
});
