import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeChallenge, runCli } from './cli.js';
import { generateDeviceKey, loadState, saveState, stateExists, type DeviceIdentity } from './index.js';

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
  location: { country: 'SE', countryName: 'Sweden' },
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

  it('refuses plain http:// to another host than this machine unless --insecure; takes it for loopback', async () => {
    const remote = 'http://mfa.example.com/device/v1/activate?code=K7QX-M2PA-9VZD-4HTE';
    const refused = await run(['activate', remote, '--state', freshFile()]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /plain http:\/\/ to mfa\.example\.com .*--insecure/);
    assert.deepEqual(refused.sent, [], 'nothing sent');
    const file = freshFile();
    const insecure = await run(['activate', remote, '--state', file, '--insecure'], [activated]);
    assert.equal(insecure.code, 0, insecure.stderr);
    assert.equal((await loadState(file)).baseUrl, 'http://mfa.example.com/device');
    for (const local of ['http://127.0.0.1:3001', 'http://localhost:3001', 'http://[::1]:3001']) {
      const result = await run(['activate', `${local}/device/v1/activate?code=A`, '--state', freshFile()], [activated]);
      assert.equal(result.code, 0, `${local}: ${result.stderr}`);
    }
    const help = await run(['activate', '--help']);
    assert.match(help.stdout, /--insecure +accept a plain http:\/\/ URL to another host/);
  });

  it('refuses an activation it could not keep (pollSeconds not positive, no deviceId): bad_response, no state file', async () => {
    for (const reply of [{ pollSeconds: 0 }, { pollSeconds: -5 }, { deviceId: '' }]) {
      const file = freshFile();
      const result = await run(['activate', url, '--state', file], [{ status: 201, body: { ...activated.body, ...reply } }]);
      assert.equal(result.code, 1, JSON.stringify(reply));
      assert.match(result.stderr, /^mfa-authenticator: HTTP 201 with an activation the app cannot keep \((pollSeconds|deviceId)\) \(bad_response, HTTP 201\)\n$/);
      assert.equal(result.stdout, '');
      assert.equal(await stateExists(file), false, 'nothing kept');
    }
  });

  it('prints the deviceId the server gave with control characters escaped', async () => {
    const result = await run(['activate', url, '--state', freshFile()], [{ status: 201, body: { ...activated.body, deviceId: 'dev\u001b]0;owned\u0007' } }]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'dev\\u001b]0;owned\\u0007\n');
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
    assert.match(shown.stdout, /location +Sweden \(SE\)\n/);
    assert.match(shown.stdout, /started +2026-11-30T12:00:00\.000Z\n/);
    assert.doesNotMatch(shown.stdout, /\u001b/);
    const escaped = await run(['pending', '--state', file], [{ status: 200, body: { challenge: { ...challenge, location: { country: 'SE', countryName: 'Swe\u009bden' } } } }]);
    assert.match(escaped.stdout, /location +Swe\\u009bden \(SE\)\n/);
    const unknown = await run(['pending', '--state', file], [{ status: 200, body: { challenge: { ...challenge, location: null } } }]);
    assert.match(unknown.stdout, /location +unknown\n/);
    const none = await run(['pending', '--state', file], [{ status: 200, body: { challenge: null } }]);
    assert.equal(none.stdout, 'no sign-in is waiting\n');
    assert.deepEqual(none.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending']);
  });

  it('prints the exact commands that answer this sign-in: its id, and --number only when it shows one', async () => {
    const file = await deviceFile();
    const numbered = await run(['pending', '--state', file], [{ status: 200, body: { challenge } }]);
    assert.ok(
      numbered.stdout.endsWith(
        [
          'to approve it, with the two digits its sign-in page shows:',
          `  mfa-authenticator --state ${file} approve --challenge a1b2.c3d4 --number <number>`,
          'or to deny it, or report it as fraud (you did not start it):',
          `  mfa-authenticator --state ${file} deny --challenge a1b2.c3d4`,
          `  mfa-authenticator --state ${file} fraud --challenge a1b2.c3d4`,
          '',
        ].join('\n'),
      ),
      numbered.stdout,
    );
    const numberless = await run(['pending', '--state', file], [{ status: 200, body: { challenge: { ...challenge, numberMatch: false } } }]);
    assert.match(numberless.stdout, /no number to type .*\n {2}mfa-authenticator --state \S+ approve --challenge a1b2\.c3d4\n/);
    assert.doesNotMatch(numberless.stdout, /--number/);
    // Without --state the default file is meant; an id a shell would split or expand is quoted, its control characters escaped.
    const odd = describeChallenge({ ...challenge, challengeId: "it's $(x)\u001b" });
    assert.match(odd, /^ {2}mfa-authenticator approve --challenge 'it'\\''s \$\(x\)\\u001b' --number <number>$/m);
  });

  it('--json prints the reply, DEL and C1 controls escaped as JSON (U+009B is a CSI to some terminals)', async () => {
    const file = await deviceFile();
    const result = await run(['pending', '--json', '--state', file], [{ status: 200, body: { challenge } }]);
    assert.deepEqual(JSON.parse(result.stdout), { challenge });
    const c1 = { ...challenge, application: 'VPN\u009b2J\u007f' };
    const escaped = await run(['pending', '--json', '--state', file], [{ status: 200, body: { challenge: c1 } }]);
    assert.doesNotMatch(escaped.stdout, /[\u007f-\u009f]/);
    assert.match(escaped.stdout, /"VPN\\u009b2J\\u007f"/);
    assert.deepEqual(JSON.parse(escaped.stdout), { challenge: c1 });
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
  const approved = { status: 200, body: { status: 'approved' } };

  it('approve --challenge <id> <number> answers that sign-in, once the view says it shows a number', async () => {
    const file = await deviceFile();
    for (const number of [['42'], ['--number', '42']]) {
      const result = await run(['approve', ...number, '--challenge', 'a1b2.c3d4', '--state', file], [{ status: 200, body: { challenge } }, approved]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, 'approved\n');
      assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending', 'POST /device/v1/challenges/a1b2.c3d4/answer']);
      assert.deepEqual([result.sent[1]!.body!.decision, result.sent[1]!.body!.number], ['approve', '42']);
    }
  });

  it('approve and fraud need --challenge: whichever sign-in waits by then may not be the one shown', async () => {
    const file = await deviceFile();
    for (const args of [['approve', '42'], ['approve', '--number', '42'], ['approve'], ['fraud']]) {
      const result = await run([...args, '--state', file], [{ status: 200, body: { challenge: { ...challenge, numberMatch: false } } }, approved]);
      assert.equal(result.code, 1, args.join(' '));
      assert.match(result.stderr, new RegExp(`^mfa-authenticator: ${args[0]} needs --challenge <id>, the sign-in you were shown: mfa-authenticator pending prints it`));
      assert.deepEqual(result.sent, [], 'nothing sent');
    }
  });

  it('approve needs the two digits, given once', async () => {
    const file = await deviceFile();
    for (const number of [['4'], ['420'], ['ab'], ['４２'], ['--number', '4'], ['--number', '']]) {
      const result = await run(['approve', ...number, '--challenge', 'a1b2.c3d4', '--state', file]);
      assert.equal(result.code, 1, number.join(' '));
      assert.match(result.stderr, /the number is the two digits the sign-in page shows/);
      assert.deepEqual(result.sent, []);
    }
    const twice = await run(['approve', '42', '--number', '42', '--challenge', 'a1b2.c3d4', '--state', file]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /give the number once/);
  });

  it('approve refuses, before answering, a number the sign-in does not show or none for one that does', async () => {
    const file = await deviceFile();
    const missing = await run(['approve', '--challenge', 'a1b2.c3d4', '--state', file], [{ status: 200, body: { challenge } }, approved]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /sign-in a1b2\.c3d4 needs the two digits its sign-in page shows: mfa-authenticator --state \S+ approve --challenge a1b2\.c3d4 --number <number>\n/);
    const extra = await run(['approve', '42', '--challenge', 'a1b2.c3d4', '--state', file], [{ status: 200, body: { challenge: { ...challenge, numberMatch: false } } }, approved]);
    assert.equal(extra.code, 1);
    assert.match(extra.stderr, /sign-in a1b2\.c3d4 has no number to type .*approve --challenge a1b2\.c3d4\n/);
    for (const result of [missing, extra]) assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending'], 'no answer sent');
  });

  it('approve without a number answers a sign-in that has none (a VPN over RADIUS)', async () => {
    const file = await deviceFile();
    const result = await run(['approve', '--challenge', 'a1b2.c3d4', '--state', file], [{ status: 200, body: { challenge: { ...challenge, numberMatch: false } } }, approved]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual([result.sent[1]!.body!.decision, result.sent[1]!.body!.number], ['approve', undefined]);
  });

  it('approve of a sign-in no longer the one waiting leaves the number to the server', async () => {
    const file = await deviceFile();
    for (const pending of [null, { ...challenge, challengeId: 'other.one', numberMatch: false }]) {
      const result = await run(['approve', '42', '--challenge', 'a1b2.c3d4', '--state', file], [{ status: 200, body: { challenge: pending } }, approved]);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending', 'POST /device/v1/challenges/a1b2.c3d4/answer']);
    }
  });

  it('deny without --challenge denies the one pending', async () => {
    const file = await deviceFile();
    const result = await run(['deny', '--state', file], [{ status: 200, body: { challenge } }, { status: 200, body: { status: 'denied', reason: 'denied_by_user' } }]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.sent.map((s) => `${s.method} ${s.path}`), ['GET /device/v1/challenges/pending', 'POST /device/v1/challenges/a1b2.c3d4/answer']);
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
    const decided = await run(['approve', '42', '--challenge', 'x.y', '--state', file], [{ status: 200, body: { challenge: null } }, { status: 409, body: { error: { code: 'conflict', message: 'the challenge is already decided' } } }]);
    assert.equal(decided.code, 1);
    assert.equal(decided.stderr, 'mfa-authenticator: the challenge is already decided (conflict, HTTP 409)\n');
    assert.equal(decided.stdout, '');
  });

  it('the server\'s error code and message are printed with control characters escaped', async () => {
    const file = await deviceFile();
    const hostile = { error: { code: 'conflict\u001b[31m', message: 'decided\u001b]0;title\u0007\u009b2J' } };
    const result = await run(['deny', '--challenge', 'x.y', '--state', file], [{ status: 409, body: hostile }]);
    assert.equal(result.code, 1);
    assert.equal(result.stderr, 'mfa-authenticator: decided\\u001b]0;title\\u0007\\u009b2J (conflict\\u001b[31m, HTTP 409)\n');
  });
});

describe('mfa-authenticator --timeout', () => {
  it('takes whole milliseconds from 1 to 2147483647 (what a timer can keep), else a usage error before any request', async () => {
    const file = await deviceFile();
    for (const timeout of ['1.5', '0', '-1', '2147483648', '1e12', 'soon']) {
      const result = await run(['--timeout', timeout, 'pending', '--state', file], [{ status: 200, body: { challenge: null } }]);
      assert.equal(result.code, 1, timeout);
      assert.match(result.stderr, /option '--timeout <ms>' argument .* is invalid\. must be a whole number of milliseconds from 1 to 2147483647/);
      assert.deepEqual(result.sent, [], timeout);
    }
    for (const timeout of ['1', '2147483647']) {
      const result = await run(['--timeout', timeout, 'pending', '--state', file], [{ status: 200, body: { challenge: null } }]);
      assert.equal(result.code, 0, `${timeout}: ${result.stderr}`);
    }
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
