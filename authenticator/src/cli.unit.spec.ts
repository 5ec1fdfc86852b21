import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli.js';
import { generateDeviceKey, loadState, saveState, type DeviceIdentity } from './index.js';

const directory = mkdtempSync(join(tmpdir(), 'mfa-authenticator-cli-'));
after(() => rmSync(directory, { recursive: true, force: true }));
let files = 0;
const freshFile = () => join(directory, `device-${++files}.json`);

interface Sent {
  method: string;
  path: string;
  body: Record<string, unknown> | undefined;
}

/** Runs a command line against canned replies; returns its exit code, output and the requests made. */
async function run(args: string[], replies: Array<{ status: number; body: unknown }> = []) {
  let stdout = '';
  let stderr = '';
  const sent: Sent[] = [];
  const fetcher: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    sent.push({ method: init?.method ?? 'GET', path: url.pathname, body: init?.body ? (JSON.parse(String(init.body)) as Record<string, unknown>) : undefined });
    const reply = replies.shift();
    if (!reply) throw new Error('unexpected request');
    return new Response(JSON.stringify(reply.body), { status: reply.status });
  };
  const code = await runCli(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), env: {}, client: { fetch: fetcher } });
  return { code, stdout, stderr, sent };
}

async function deviceFile(): Promise<string> {
  const file = freshFile();
  const key = generateDeviceKey('ES256');
  const identity: DeviceIdentity = {
    deviceId: 'dev-1',
    tenantId: 'contoso',
    userId: 'helga',
    baseUrl: 'https://mfa.example.com/device',
    algorithm: 'ES256',
    privateKeyPem: key.privateKeyPem,
    publicKey: key.publicKey,
    pollSeconds: 5,
    platform: 'none',
    activatedAt: '2026-11-30T12:00:00.000Z',
  };
  await saveState(file, identity);
  return file;
}

const url = 'https://mfa.example.com/device/v1/activate?code=K7QX-M2PA-9VZD-4HTE';
const activated = { status: 201, body: { deviceId: 'dev-9', tenantId: 'contoso', userId: 'helga', pollSeconds: 5 } };
const challenge = {
  challengeId: 'a1b2.c3d4',
  application: 'VPN\u001b[2J',
  clientIp: '198.51.100.23',
  location: { country: 'SE', region: null, city: 'Stockholm' },
  startedAt: '2026-11-30T12:00:00.000Z',
  expiresAt: '2026-11-30T12:03:00.000Z',
};

describe('mfa-authenticator activate', () => {
  it('sends the options given, keeps the device in the state file and prints its id', async () => {
    const file = freshFile();
    const result = await run(['--state', file, 'activate', url, '--name', "Helga's Pixel", '--platform', 'android', '--push-token', 'fcm-token', '--algorithm', 'Ed25519'], [activated]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'dev-9\n');
    assert.match(result.stderr, /activated for user helga of tenant contoso; key kept in /);
    assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['POST /device/v1/activate']);
    const body = result.sent[0]!.body!;
    assert.deepEqual([body.code, body.name, body.platform, body.pushToken, body.algorithm], ['K7QX-M2PA-9VZD-4HTE', "Helga's Pixel", 'android', 'fcm-token', 'Ed25519']);
    const state = await loadState(file);
    assert.deepEqual([state.deviceId, state.algorithm, state.platform, state.name, state.baseUrl], ['dev-9', 'Ed25519', 'android', "Helga's Pixel", 'https://mfa.example.com/device']);
  });

  it('defaults to ES256 and poll-only; takes --state after the command and --json', async () => {
    const file = freshFile();
    const result = await run(['activate', url, '--state', file, '--json'], [activated]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { deviceId: 'dev-9', tenantId: 'contoso', userId: 'helga', pollSeconds: 5, stateFile: file });
    const body = result.sent[0]!.body!;
    assert.deepEqual([body.algorithm, body.platform, 'pushToken' in body, 'name' in body], ['ES256', 'none', false, false]);
  });

  it('refuses before spending the code: a push token without a platform, a platform without one, an occupied state file', async () => {
    const occupied = freshFile();
    writeFileSync(occupied, '{}');
    for (const [args, message] of [
      [['activate', url, '--state', freshFile(), '--push-token', 't'], /--push-token goes with --platform ios or android/],
      [['activate', url, '--state', freshFile(), '--platform', 'ios'], /--platform ios needs --push-token/],
      [['activate', url, '--state', occupied], /a device is already kept in .*--force/],
      [['activate', url, '--state', freshFile(), '--platform', 'windows'], /argument 'windows' is invalid. Allowed choices are ios, android, none/],
      [['activate', url, '--state', freshFile(), '--algorithm', 'RS256'], /Allowed choices are ES256, Ed25519/],
      [['activate', 'https://mfa.example.com/elsewhere?code=A', '--state', freshFile()], /not an activation URL/],
    ] as const) {
      const result = await run([...args]);
      assert.equal(result.code, 1, args.join(' '));
      assert.match(result.stderr, message);
      assert.deepEqual(result.sent, [], 'nothing sent');
    }
  });

  it('replaces a device with --force', async () => {
    const file = await deviceFile();
    const result = await run(['activate', url, '--state', file, '--force'], [activated]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal((await loadState(file)).deviceId, 'dev-9');
  });
});

describe('mfa-authenticator pending', () => {
  it('prints the sign-in with control characters escaped, or that none waits', async () => {
    const file = await deviceFile();
    const shown = await run(['pending', '--state', file], [{ status: 200, body: { challenge } }]);
    assert.equal(shown.code, 0);
    assert.match(shown.stdout, /^sign-in waiting: a1b2\.c3d4\n/);
    assert.match(shown.stdout, /application +VPN\\u001b\[2J\n/);
    assert.match(shown.stdout, /client IP +198\.51\.100\.23\n/);
    assert.match(shown.stdout, /location +Stockholm, SE\n/);
    assert.match(shown.stdout, /started +2026-11-30T12:00:00\.000Z\n/);
    assert.doesNotMatch(shown.stdout, /\u001b/);
    const none = await run(['pending', '--state', file], [{ status: 200, body: { challenge: null } }]);
    assert.equal(none.stdout, 'no sign-in is waiting\n');
    assert.deepEqual(none.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending']);
  });

  it('--json prints the reply', async () => {
    const file = await deviceFile();
    const result = await run(['pending', '--json', '--state', file], [{ status: 200, body: { challenge } }]);
    assert.deepEqual(JSON.parse(result.stdout), { challenge });
  });

  it('--wait takes seconds, a positive number', async () => {
    const file = await deviceFile();
    for (const wait of ['0', '-1', 'soon']) {
      const result = await run(['pending', '--wait', wait, '--state', file]);
      assert.equal(result.code, 1, wait);
      assert.match(result.stderr, /option '--wait <seconds>' argument .* is invalid\. must be a positive number/);
    }
  });

  it('without a device says to activate first', async () => {
    const result = await run(['pending', '--state', join(directory, 'none.json')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^mfa-authenticator: no device at .*none\.json: activate one first/);
  });
});

describe('mfa-authenticator approve, deny, fraud', () => {
  it('approve <number> answers the pending sign-in', async () => {
    const file = await deviceFile();
    const result = await run(['approve', '42', '--state', file], [{ status: 200, body: { challenge } }, { status: 200, body: { status: 'approved' } }]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'approved\n');
    assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending', 'POST /device/v1/challenges/a1b2.c3d4/answer']);
    assert.deepEqual([result.sent[1]!.body!.decision, result.sent[1]!.body!.number], ['approve', '42']);
  });

  it('approve needs the two digits', async () => {
    const file = await deviceFile();
    for (const number of ['4', '420', 'ab', '４２']) {
      const result = await run(['approve', number, '--state', file]);
      assert.equal(result.code, 1, number);
      assert.match(result.stderr, /the number is the two digits the sign-in page shows/);
      assert.deepEqual(result.sent, []);
    }
  });

  it('approve without a number answers a sign-in that has none (a VPN over RADIUS)', async () => {
    const file = await deviceFile();
    const result = await run(['approve', '--state', file], [{ status: 200, body: { challenge: { ...challenge, numberMatch: false } } }, { status: 200, body: { status: 'approved' } }]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual([result.sent[1]!.body!.decision, result.sent[1]!.body!.number], ['approve', undefined]);
  });

  it('deny and fraud with --challenge answer that one without asking for the pending one; a denial exits 0', async () => {
    const file = await deviceFile();
    for (const [decision, reason] of [['deny', 'denied_by_user'], ['fraud', 'fraud_reported']] as const) {
      const result = await run([decision, '--challenge', 'x.y', '--state', file], [{ status: 200, body: { status: 'denied', reason } }]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `denied: ${reason}\n`);
      assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['POST /device/v1/challenges/x.y/answer']);
      assert.equal(result.sent[0]!.body!.decision, decision);
      assert.equal('number' in result.sent[0]!.body!, false);
    }
    const json = await run(['deny', '--challenge', 'x.y', '--json', '--state', file], [{ status: 200, body: { status: 'denied', reason: 'denied_by_user' } }]);
    assert.deepEqual(JSON.parse(json.stdout), { challengeId: 'x.y', status: 'denied', reason: 'denied_by_user' });
  });

  it('with nothing pending, or refused by the server: exit 1 with the server\'s code and message', async () => {
    const file = await deviceFile();
    const nothing = await run(['deny', '--state', file], [{ status: 200, body: { challenge: null } }]);
    assert.equal(nothing.code, 1);
    assert.equal(nothing.stderr, 'mfa-authenticator: no sign-in is waiting for this device (not_found)\n');
    const decided = await run(['approve', '42', '--challenge', 'x.y', '--state', file], [{ status: 409, body: { error: { code: 'conflict', message: 'the challenge is already decided' } } }]);
    assert.equal(decided.code, 1);
    assert.equal(decided.stderr, 'mfa-authenticator: the challenge is already decided (conflict, HTTP 409)\n');
    assert.equal(decided.stdout, '');
  });
});

describe('mfa-authenticator --help', () => {
  it('lists the commands and exits 0', async () => {
    const result = await run(['--help']);
    assert.equal(result.code, 0);
    for (const command of ['activate [options] <url>', 'pending', 'approve [options] [number]', 'deny', 'fraud']) assert.ok(result.stdout.includes(command), command);
  });

  it('an unknown command is a usage error', async () => {
    const result = await run(['accept']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /unknown command 'accept'/);
  });
});
