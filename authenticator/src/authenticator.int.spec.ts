import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DeviceActivateBody, DeviceAnswerBody, type DeviceKeyAlgorithm } from '@mfa/contracts';
import { runCli } from './cli.js';
import { DeviceApiError, DeviceClient, loadState, saveState, signRequest } from './index.js';

/**
 * The reference authenticator against a device API on a local HTTP server. The server here is a
 * test double written from docs/device-api.md alone (its strings to sign are spelt out, not taken
 * from libs/contracts' DeviceSigned): it checks what the spec says a server checks. The real
 * server is auth-challenge; the end-to-end test runs the authenticator against it.
 */

const NOT_ACTIVATED = 'Authentication request is not for an activated account';

interface Device {
  algorithm: DeviceKeyAlgorithm;
  key: KeyObject;
  publicKey: string;
  tenantId: string;
  userId: string;
  name?: string;
  platform: string;
}

interface Challenge {
  challengeId: string;
  userId: string;
  /** null: a sign-in without a page to show a number (RADIUS). */
  number: string | null;
  application: string | null;
  clientIp: string | null;
  location: { country: string; countryName: string } | null;
  startedAt: string;
  expiresAt: string;
  decided?: { status: 'approved' } | { status: 'denied'; reason: string };
  signature?: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function verifies(device: { algorithm: DeviceKeyAlgorithm; key: KeyObject }, data: string, signature: string): boolean {
  const raw = Buffer.from(signature, 'base64url');
  if (raw.length !== 64) return false;
  const bytes = Buffer.from(data, 'utf8');
  return device.algorithm === 'ES256' ? verify('sha256', bytes, { key: device.key, dsaEncoding: 'ieee-p1363' }, raw) : verify(null, bytes, device.key, raw);
}

/** The device API as docs/device-api.md describes it, in memory. */
class DeviceApiDouble {
  readonly codes = new Map<string, { tenantId: string; userId: string }>();
  readonly devices = new Map<string, Device>();
  readonly challenges = new Map<string, Challenge>();
  readonly nonces = new Map<string, number>();
  readonly seen: string[] = [];
  pollSeconds = 5;
  private server?: Server;
  baseUrl = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.baseUrl = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}/device`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  /** What users.push.enroll would hand out. */
  enroll(userId: string): string {
    const alphabet = 'ABCDEFGHJKMNPQRSTVWXYZ23456789';
    const code = Array.from(randomBytes(16), (b) => alphabet[b % alphabet.length]).join('').replace(/(.{4})(?=.)/g, '$1-');
    this.codes.set(code.replace(/-/g, ''), { tenantId: 'contoso', userId });
    return `${this.baseUrl}/v1/activate?code=${code}`;
  }

  /** What challenge.start with method push would do: a sign-in waiting for the user's device. */
  startChallenge(userId: string, number: string | null = '42'): Challenge {
    const now = Date.now();
    const challenge: Challenge = {
      challengeId: `${randomBytes(4).toString('hex')}.${randomBytes(8).toString('base64url')}`,
      userId,
      number,
      application: 'VPN',
      clientIp: '198.51.100.23',
      location: { country: 'SE', countryName: 'Sweden' },
      startedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + 180_000).toISOString(),
    };
    this.challenges.set(challenge.challengeId, challenge);
    return challenge;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    try {
      const body = await readBody(req);
      const path = req.url ?? '';
      this.seen.push(`${req.method} ${path}`);
      if (req.method === 'POST' && path === '/device/v1/activate') return send(201, this.activate(body));
      const device = this.authenticate(req, body);
      if (req.method === 'GET' && path === '/device/v1/challenges/pending') return send(200, { challenge: this.pending(device) });
      const answer = /^\/device\/v1\/challenges\/([^/?]+)\/answer$/.exec(path);
      if (req.method === 'POST' && answer) return send(200, this.answer(device, decodeURIComponent(answer[1]!), body));
      throw new HttpError(404, 'not_found', 'no such endpoint');
    } catch (error) {
      if (error instanceof HttpError) return send(error.status, { error: { code: error.code, message: error.message } });
      send(503, { error: { code: 'unavailable', message: 'try again' } });
    }
  }

  private activate(raw: Buffer) {
    const body = DeviceActivateBody.safeParse(parseJson(raw));
    if (!body.success) throw new HttpError(400, 'invalid_request', 'not an activation');
    const account = this.codes.get(body.data.code.replace(/[-\s]/g, '').toUpperCase());
    if (!account) throw new HttpError(404, 'not_found', 'unknown or expired activation code');
    let key: KeyObject;
    try {
      key = createPublicKey({ key: Buffer.from(body.data.publicKey, 'base64url'), format: 'der', type: 'spki' });
    } catch {
      throw new HttpError(400, 'invalid_request', 'invalid public key');
    }
    const fits = body.data.algorithm === 'ES256' ? key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1' : key.asymmetricKeyType === 'ed25519';
    if (!fits) throw new HttpError(400, 'invalid_request', 'the public key is not of the algorithm');
    const device = { algorithm: body.data.algorithm, key };
    if (!verifies(device, `mfa-activate\n${body.data.code}\n${body.data.publicKey}`, body.data.proof)) throw new HttpError(400, 'invalid_request', 'invalid proof');
    this.codes.delete(body.data.code.replace(/[-\s]/g, '').toUpperCase());
    const deviceId = randomBytes(12).toString('base64url');
    this.devices.set(deviceId, { ...device, publicKey: body.data.publicKey, ...account, platform: body.data.platform, ...(body.data.name ? { name: body.data.name } : {}) });
    return { deviceId, ...account, pollSeconds: this.pollSeconds };
  }

  /** "Signed requests": the four headers, the clock, the nonce, the signature over the five lines. */
  private authenticate(req: IncomingMessage, body: Buffer): Device {
    const header = (name: string) => {
      const value = req.headers[name];
      if (typeof value !== 'string' || value === '') throw new HttpError(401, 'unauthenticated', `missing ${name}`);
      return value;
    };
    const deviceId = header('mfa-device');
    const timestamp = header('mfa-timestamp');
    const nonce = header('mfa-nonce');
    const signature = header('mfa-signature');
    const device = this.devices.get(deviceId);
    if (!device) throw new HttpError(403, 'not_activated', NOT_ACTIVATED);
    if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() - Number(timestamp)) > 60_000) throw new HttpError(401, 'unauthenticated', 'timestamp too far off');
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(nonce)) throw new HttpError(401, 'unauthenticated', 'invalid nonce');
    const bodyHash = createHash('sha256').update(body).digest('base64url');
    const toSign = `${req.method!.toUpperCase()}\n${req.url}\n${timestamp}\n${nonce}\n${bodyHash}`;
    if (!verifies(device, toSign, signature)) throw new HttpError(401, 'unauthenticated', 'wrong signature');
    const now = Date.now();
    for (const [old, at] of this.nonces) if (now - at > 120_000) this.nonces.delete(old);
    if (this.nonces.has(`${deviceId} ${nonce}`)) throw new HttpError(401, 'unauthenticated', 'replayed nonce');
    this.nonces.set(`${deviceId} ${nonce}`, now);
    return device;
  }

  private pending(device: Device) {
    const waiting = [...this.challenges.values()].find((c) => c.userId === device.userId && !c.decided && Date.parse(c.expiresAt) > Date.now());
    if (!waiting) return null;
    const { challengeId, application, clientIp, location, startedAt, expiresAt } = waiting;
    return { challengeId, application, clientIp, location, startedAt, expiresAt, numberMatch: waiting.number !== null };
  }

  private answer(device: Device, challengeId: string, raw: Buffer) {
    const body = DeviceAnswerBody.safeParse(parseJson(raw));
    if (!body.success) throw new HttpError(400, 'invalid_request', 'not an answer');
    const challenge = this.challenges.get(challengeId);
    if (!challenge || challenge.userId !== device.userId) throw new HttpError(404, 'not_found', 'no such challenge for this device');
    if (challenge.decided || Date.parse(challenge.expiresAt) <= Date.now()) throw new HttpError(409, 'conflict', 'the challenge is already decided or expired');
    const { decision, number, signature } = body.data;
    if (!verifies(device, `mfa-answer\n${challengeId}\n${decision}\n${number ?? ''}`, signature)) throw new HttpError(401, 'unauthenticated', 'the answer is not signed by this device');
    challenge.signature = signature;
    challenge.decided =
      decision === 'fraud' ? { status: 'denied', reason: 'fraud_reported' }
      : decision === 'deny' ? { status: 'denied', reason: 'denied_by_user' }
      : (number ?? null) === challenge.number ? { status: 'approved' }
      : { status: 'denied', reason: 'wrong_number' };
    return challenge.decided;
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= 8192) chunks.push(chunk as Buffer); // read to the end: the answer must reach the client
  }
  if (size > 8192) throw new HttpError(413, 'invalid_request', 'the body is over 8 KiB');
  return Buffer.concat(chunks);
}

function parseJson(raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid_request', 'malformed JSON');
  }
}

// ---- the tests ---------------------------------------------------------------------------------

const server = new DeviceApiDouble();
const directory = mkdtempSync(join(tmpdir(), 'mfa-authenticator-int-'));
let files = 0;
const freshFile = () => join(directory, `device-${++files}.json`);
const bin = fileURLToPath(new URL('../bin/mfa-authenticator.js', import.meta.url));

before(() => server.start());
after(async () => {
  await server.stop();
  rmSync(directory, { recursive: true, force: true });
});

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), env: {} });
  return { code, stdout, stderr };
}

/** A device activated on a fresh user through the command line. */
async function activated(algorithm: DeviceKeyAlgorithm = 'ES256') {
  const userId = `user-${randomBytes(4).toString('hex')}`;
  const state = freshFile();
  const result = await cli('activate', server.enroll(userId), '--state', state, '--algorithm', algorithm);
  assert.equal(result.code, 0, result.stderr);
  return { userId, state, deviceId: result.stdout.trim() };
}

describe('mfa-authenticator against the device API', () => {
  for (const algorithm of ['ES256', 'Ed25519'] as const) {
    it(`activates with an ${algorithm} key whose proof the server verifies, and keeps it 0600`, async () => {
      const state = freshFile();
      const url = server.enroll('helga');
      const result = await cli('activate', url, '--state', state, '--algorithm', algorithm, '--name', "Helga's Pixel", '--platform', 'android', '--push-token', 'fcm-token');
      assert.equal(result.code, 0, result.stderr);
      const deviceId = result.stdout.trim();
      const device = server.devices.get(deviceId);
      assert.ok(device, 'the server knows the device');
      assert.deepEqual([device.algorithm, device.userId, device.name, device.platform], [algorithm, 'helga', "Helga's Pixel", 'android']);
      assert.equal(statSync(state).mode & 0o777, 0o600);
      const kept = await loadState(state);
      assert.deepEqual([kept.deviceId, kept.publicKey, kept.baseUrl, kept.userId, kept.tenantId], [deviceId, device.publicKey, server.baseUrl, 'helga', 'contoso']);
    });
  }

  it('an activation code is good once: the second use ends with the server\'s not_found and exit code 1', async () => {
    const url = server.enroll('helga');
    assert.equal((await cli('activate', url, '--state', freshFile())).code, 0);
    const again = await cli('activate', url, '--state', freshFile());
    assert.equal(again.code, 1);
    assert.equal(again.stderr, 'mfa-authenticator: unknown or expired activation code (not_found, HTTP 404)\n');
  });

  it('signed pending: nothing, then the sign-in with its application, client IP, location and time', async () => {
    const { userId, state } = await activated();
    const none = await cli('pending', '--state', state);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, 'no sign-in is waiting\n');
    const challenge = server.startChallenge(userId);
    const shown = await cli('pending', '--state', state);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`^sign-in waiting: ${challenge.challengeId.replace('.', '\\.')}\n`));
    assert.match(shown.stdout, /application +VPN\n {2}client IP +198\.51\.100\.23\n {2}location +Sweden \(SE\)\n/);
    const json = await cli('pending', '--json', '--state', state);
    assert.deepEqual(JSON.parse(json.stdout), { challenge: { challengeId: challenge.challengeId, application: 'VPN', clientIp: '198.51.100.23', location: challenge.location, startedAt: challenge.startedAt, expiresAt: challenge.expiresAt, numberMatch: true } });
  });

  for (const algorithm of ['ES256', 'Ed25519'] as const) {
    it(`approve with the number: a signed answer the server verifies (${algorithm})`, async () => {
      const { userId, state } = await activated(algorithm);
      const challenge = server.startChallenge(userId, '37');
      const result = await cli('approve', '37', '--challenge', challenge.challengeId, '--state', state);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, 'approved\n');
      assert.deepEqual(challenge.decided, { status: 'approved' });
      assert.ok(challenge.signature, 'the answer\'s signature is kept');
    });
  }

  it('the commands pending prints answer exactly the sign-in shown, with the number or without one', async () => {
    for (const number of ['58', null]) {
      const { userId, state } = await activated();
      const challenge = server.startChallenge(userId, number);
      const shown = await cli('pending', '--state', state);
      const line = /^ {2}mfa-authenticator (.* approve .*)$/m.exec(shown.stdout);
      assert.ok(line, shown.stdout);
      const args = line[1]!.split(' ').map((word) => (word === '<number>' ? number! : word));
      assert.equal(args.includes('--number'), number !== null, line[1]);
      server.startChallenge(userId, '13'); // another sign-in arrives meanwhile
      const result = await cli(...args);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, 'approved\n');
      assert.deepEqual(challenge.decided, { status: 'approved' });
    }
  });

  it('approve without the number its sign-in shows, or with one for a sign-in without: refused before any answer', async () => {
    for (const [number, args] of [['42', []], [null, ['42']]] as const) {
      const { userId, state } = await activated();
      const challenge = server.startChallenge(userId, number);
      const result = await cli('approve', ...args, '--challenge', challenge.challengeId, '--state', state);
      assert.equal(result.code, 1);
      assert.match(result.stderr, number ? /needs the two digits its sign-in page shows/ : /has no number to type/);
      assert.equal(challenge.decided, undefined, 'still waiting');
    }
  });

  it('a wrong number is a denial; deny and fraud give their reasons; all exit 0', async () => {
    const { userId, state } = await activated();
    for (const [args, expected] of [
      [['approve', '11', '--challenge'], 'denied: wrong_number\n'],
      [['deny'], 'denied: denied_by_user\n'],
      [['fraud', '--challenge'], 'denied: fraud_reported\n'],
    ] as const) {
      const { challengeId } = server.startChallenge(userId, '42');
      const result = await cli(...args, ...(args.at(-1) === '--challenge' ? [challengeId] : []), '--state', state);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, expected);
    }
  });

  it('a challenge already decided, or another user\'s: the server\'s error and exit code 1', async () => {
    const { userId, state } = await activated();
    const challenge = server.startChallenge(userId);
    assert.equal((await cli('deny', '--challenge', challenge.challengeId, '--state', state)).code, 0);
    const twice = await cli('approve', '42', '--challenge', challenge.challengeId, '--state', state);
    assert.equal(twice.code, 1);
    assert.equal(twice.stderr, 'mfa-authenticator: the challenge is already decided or expired (conflict, HTTP 409)\n');
    const others = server.startChallenge('someone-else');
    const foreign = await cli('approve', '42', '--challenge', others.challengeId, '--state', state);
    assert.equal(foreign.code, 1);
    assert.match(foreign.stderr, /\(not_found, HTTP 404\)\n$/);
    assert.equal(others.decided, undefined);
  });

  it('a replayed nonce is refused, whether the app reuses it or someone resends the request as it was', async () => {
    const { state } = await activated();
    const identity = await loadState(state);
    const sameNonce = new DeviceClient(identity, { nonce: () => 'the-same-nonce-every-time' });
    assert.equal(await sameNonce.pending(), null);
    await assert.rejects(sameNonce.pending(), (e: unknown) => e instanceof DeviceApiError && e.code === 'unauthenticated' && e.status === 401 && /replayed/.test(e.message));

    let recorded: { url: string; init: RequestInit } | undefined;
    const recording = new DeviceClient(identity, {
      fetch: (input, init) => {
        recorded = { url: String(input), init: { ...init!, signal: null } };
        return fetch(input, init);
      },
    });
    assert.equal(await recording.pending(), null);
    const replay = await fetch(recorded!.url, recorded!.init);
    assert.equal(replay.status, 401);
    assert.deepEqual(await replay.json(), { error: { code: 'unauthenticated', message: 'replayed nonce' } });
  });

  it('a clock more than 60 s off, or a signature over another request, is refused', async () => {
    const { state } = await activated();
    const identity = await loadState(state);
    const late = new DeviceClient(identity, { now: () => Date.now() - 90_000 });
    // The server's message, and what the app adds from the reply's Date header: by how much the clock is off.
    await assert.rejects(late.pending(), (e: unknown) => {
      assert.ok(e instanceof DeviceApiError);
      assert.deepEqual([e.code, e.status], ['unauthenticated', 401]);
      assert.match(e.message, /^timestamp too far off; this device's clock is (89|90|91) s behind the server's \(.+\), and the server refuses more than 60 s: set the clock right \(automatic time\)$/);
      return true;
    });
    const headers = signRequest({ algorithm: identity.algorithm, privateKey: identity.privateKeyPem, deviceId: identity.deviceId, method: 'GET', pathWithQuery: '/device/v1/challenges/pending?other=1', now: Date.now(), nonce: 'a-nonce-of-our-own-0001' });
    const forged = await fetch(`${server.baseUrl}/v1/challenges/pending`, { headers });
    assert.equal(forged.status, 401);
    assert.deepEqual(await forged.json(), { error: { code: 'unauthenticated', message: 'wrong signature' } });
  });

  it('a body over 8 KiB is refused with 413 and surfaced', async () => {
    const { state } = await activated();
    const device = new DeviceClient(await loadState(state));
    const reply = await device.signed('POST', '/v1/challenges/x.y/answer', JSON.stringify({ decision: 'deny', signature: 'A'.repeat(9000) }));
    assert.equal(reply.status, 413);
    assert.deepEqual(reply.json, { error: { code: 'invalid_request', message: 'the body is over 8 KiB' } });
  });

  it('pending --wait polls every pollSeconds until the sign-in arrives', async () => {
    // One second: the shortest wait between polls the app takes, whatever the server says (MIN_POLL_MS).
    server.pollSeconds = 1;
    try {
      const { userId, state } = await activated();
      const before = server.seen.length;
      const timer = setTimeout(() => server.startChallenge(userId), 1_500);
      const result = await cli('pending', '--wait', '5', '--state', state);
      clearTimeout(timer);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^sign-in waiting: /);
      const polls = server.seen.slice(before).filter((line) => line === 'GET /device/v1/challenges/pending').length;
      assert.ok(polls >= 2 && polls <= 4, `${polls} polls`);
      const none = await cli('pending', '--wait', '0.3', '--state', (await activated()).state);
      assert.equal(none.stdout, 'no sign-in is waiting\n');
    } finally {
      server.pollSeconds = 5;
    }
  });
});

describe('the mfa-authenticator command', () => {
  const run = promisify(execFile);
  const exec = async (args: string[], env: NodeJS.ProcessEnv) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [bin, ...args], { env: { ...process.env, ...env } });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const failed = error as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  };

  it('activates, reads and answers with its state in MFA_AUTHENTICATOR_STATE', async () => {
    const env = { MFA_AUTHENTICATOR_STATE: freshFile() };
    const userId = 'process-user';
    const activation = await exec(['activate', server.enroll(userId)], env);
    assert.equal(activation.code, 0, activation.stderr);
    const { challengeId } = server.startChallenge(userId, '64');
    const approve = await exec(['approve', '64', '--challenge', challengeId], env);
    assert.deepEqual(approve, { code: 0, stdout: 'approved\n', stderr: '' });
  });

  it('a device the server does not know: exit code 1, the server\'s code and message, no stack trace', async () => {
    const state = freshFile();
    const identity = await loadState((await activated()).state);
    await saveState(state, { ...identity, deviceId: 'revoked-device' });
    const result = await exec(['pending'], { MFA_AUTHENTICATOR_STATE: state });
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.equal(result.stderr, `mfa-authenticator: ${NOT_ACTIVATED} (not_activated, HTTP 403)\n`);
  });

  it('a server that is not there: exit code 1 and why, no stack trace', async () => {
    const state = freshFile();
    const identity = await loadState((await activated()).state);
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await saveState(state, { ...identity, baseUrl: `http://127.0.0.1:${port}/device` });
    const result = await exec(['deny'], { MFA_AUTHENTICATOR_STATE: state });
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`^mfa-authenticator: cannot reach http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED.* \\(network\\)\n$`));
  });
});
