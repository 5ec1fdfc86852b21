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

/** A fetch that records each request and answers with the next of `replies`. */
function fakeFetch(replies: Array<{ status: number; body: unknown }>) {
  const requests: Captured[] = [];
  const fetcher: typeof fetch = async (input, init) => {
    requests.push({ url: new URL(String(input)), method: init?.method ?? 'GET', headers: new Headers(init?.headers), body: init?.body === undefined ? undefined : String(init.body) });
    const reply = replies.shift();
    if (!reply) throw new Error('no reply left');
    return new Response(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body), { status: reply.status });
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
    const device = new DeviceClient({ ...identityFor('ES256'), pollSeconds: 0.02 }, { fetch: fetcher });
    const started = Date.now();
    assert.deepEqual(await device.waitForPending(5_000), challenge);
    assert.equal(requests.length, 3);
    assert.ok(Date.now() - started >= 35, 'waited between polls');
  });

  it('gives up with null when the time is up', async () => {
    const { fetcher, requests } = fakeFetch(Array.from({ length: 50 }, () => ({ status: 200, body: { challenge: null } })));
    const device = new DeviceClient({ ...identityFor('ES256'), pollSeconds: 0.02 }, { fetch: fetcher });
    assert.equal(await device.waitForPending(100), null);
    assert.ok(requests.length >= 3 && requests.length <= 8, `${requests.length} polls`);
  });
});
