import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { NatsConnection } from '@nats-io/transport-node';
import { DeviceSigned, Subjects, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { execFile } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { eventually, freePort, itWith, repoRoot, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

const run = promisify(execFile);
const AUTHENTICATOR = join(repoRoot, 'authenticator', 'bin', 'mfa-authenticator.js');

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/** An authenticator app as docs/device-api.md describes it: its key, and its signed requests. */
class TestDevice {
  deviceId = '';
  readonly privateKey: KeyObject;
  readonly publicKey: string;
  constructor(
    readonly base: string,
    readonly algorithm: 'ES256' | 'Ed25519' = 'ES256',
  ) {
    const pair = algorithm === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
    this.privateKey = pair.privateKey;
    this.publicKey = pair.publicKey.export({ format: 'der', type: 'spki' }).toString('base64url');
  }
  sign(data: string): string {
    return (this.algorithm === 'ES256' ? sign('sha256', Buffer.from(data), { key: this.privateKey, dsaEncoding: 'ieee-p1363' }) : sign(null, Buffer.from(data), this.privateKey)).toString('base64url');
  }
  async activate(code: string, extra: Record<string, unknown> = {}): Promise<{ status: number; body: Reply }> {
    const body = { code, algorithm: this.algorithm, publicKey: this.publicKey, proof: this.sign(DeviceSigned.activation(code, this.publicKey)), platform: 'none', name: 'test phone', ...extra };
    const res = await fetch(`${this.base}/device/v1/activate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const reply = (await res.json()) as Reply;
    if (res.status === 201) this.deviceId = String(reply.deviceId);
    return { status: res.status, body: reply };
  }
  /** A signed request; `tamper` changes it after signing. */
  async request(method: string, path: string, body?: unknown, tamper: { nonce?: string; timestamp?: number; signatureOf?: string } = {}): Promise<{ status: number; body: Reply }> {
    const raw = body === undefined ? '' : JSON.stringify(body);
    const timestamp = String(tamper.timestamp ?? Date.now());
    const nonce = tamper.nonce ?? randomBytes(16).toString('base64url');
    const digest = createHash('sha256').update(raw).digest('base64url');
    const signature = this.sign(tamper.signatureOf ?? DeviceSigned.request(method, path, timestamp, nonce, digest));
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'content-type': 'application/json', 'mfa-device': this.deviceId, 'mfa-timestamp': timestamp, 'mfa-nonce': nonce, 'mfa-signature': signature },
      ...(body === undefined ? {} : { body: raw }),
    });
    return { status: res.status, body: (await res.json()) as Reply };
  }
  pending() {
    return this.request('GET', '/device/v1/challenges/pending');
  }
  answer(challengeId: string, decision: 'approve' | 'deny' | 'fraud', number?: string) {
    const signature = this.sign(DeviceSigned.answer(challengeId, decision, number));
    return this.request('POST', `/device/v1/challenges/${encodeURIComponent(challengeId)}/answer`, { decision, ...(number ? { number } : {}), signature });
  }
}

/**
 * Push sign-ins through the whole stack and the device API, with a device that signs as
 * docs/device-api.md says: activation with a one-time code, number matching, signed and
 * replay-proof answers, and the MFA-fatigue limits.
 */
describe('end to end: push to the authenticator app', () => {
  let stack: Stack;
  let nc: NatsConnection;
  let base: string;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    const devicePort = await freePort();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'fraud', 'reporting'],
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        PUSH_REFUSALS_TO_SUSPEND: '3',
      },
      // The device API where user-settings says it is: activation URLs lead to it.
      serviceEnv: {
        'auth-challenge': { HTTP_PORT: String(devicePort) },
        'user-settings': { DEVICE_API_PUBLIC_URL: `http://127.0.0.1:${devicePort}/device` },
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    base = stack.url('auth-challenge');
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-push' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
  });

  async function enrolledUser(algorithm: 'ES256' | 'Ed25519' = 'ES256') {
    const tenantId = uniqueTenant('push');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('app');
    await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Push User' });
    const enrolled = await ask(Subjects.usersPushEnroll, { tenantId, userId });
    const device = new TestDevice(base, algorithm);
    const activated = await device.activate(String(enrolled.activationCode));
    assert.equal(activated.status, 201, JSON.stringify(activated.body));
    return { tenantId, userId, device, enrolled };
  }
  const startPush = (tenantId: string, userId: string, clientIp = '8.8.8.8') =>
    eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp, application: 'VPN' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'a pending push');

  itWith({ real: wholeStack, fake: ['authenticator'] }, 'the reference authenticator (npx mfa-authenticator) activates from the URL, shows the pending sign-in, approves with the number', async () => {
    const tenantId = uniqueTenant('push-cli');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('cli');
    await ask(Subjects.usersRegister, { tenantId, userId });
    const enrolled = await ask(Subjects.usersPushEnroll, { tenantId, userId });
    const state = join(mkdtempSync(join(tmpdir(), 'mfa-authenticator-')), 'device.json');
    const app = (...args: string[]) => run(process.execPath, [AUTHENTICATOR, '--state', state, ...args], { timeout: 30_000 });
    const activated = await app('activate', String(enrolled.activationUrl), '--name', 'terminal');
    assert.match(activated.stdout.trim(), /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}$/);
    assert.equal(statSync(state).mode & 0o777, 0o600, 'the key file is private');
    assert.match((await app('pending')).stdout, /no sign-in is waiting/);
    const start = await startPush(tenantId, userId, '81.2.69.142');
    const pending = (JSON.parse((await app('pending', '--json')).stdout) as { challenge: { challengeId: string; clientIp: string; location: { country: string } } }).challenge;
    assert.deepEqual([pending.challengeId, pending.clientIp, pending.location.country], [start.challengeId, '81.2.69.142', 'GB']);
    // pending prints the command that answers this sign-in, by its id (the number is on the sign-in page, not in the app).
    assert.ok((await app('pending')).stdout.includes(`approve --challenge ${String(start.challengeId)} --number <number>`));
    await assert.rejects(app('approve', String(start.numberMatch)), (error: { code?: number; stderr?: string }) => error.code === 1 && /needs --challenge/.test(error.stderr ?? ''));
    const approved = await app('approve', '--challenge', String(start.challengeId), '--number', String(start.numberMatch));
    assert.match(approved.stdout, /approved/);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId }), { challengeId: start.challengeId, status: 'approved' });
    // Denied by the user from the terminal, and a revoked device's answer refused with the seeds' words.
    const next = await startPush(tenantId, userId);
    assert.match((await app('deny')).stdout, /denied/);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: next.challengeId })).reason, 'denied_by_user');
    await ask(Subjects.usersDevicesDelete, { tenantId, userId, deviceId: activated.stdout.trim() });
    await assert.rejects(app('pending'), (error: { code?: number; stderr?: string }) => error.code === 1 && /Authentication request is not for an activated account/.test(error.stderr ?? ''));
  });

  itWith({ real: wholeStack }, 'enrol, activate once, then a push approved with the number the sign-in page shows; the report has it', async () => {
    const { tenantId, userId, device, enrolled } = await enrolledUser();
    assert.match(String(enrolled.activationCode), /^[0-9A-Z]{4}(-[0-9A-Z]{4}){3}$/);
    assert.match(String(enrolled.activationUrl), /\/device\/v1\/activate\?code=/);
    assert.match(String(enrolled.qrCode), /^data:image\/png;base64,/);
    // The code is good once.
    assert.equal((await new TestDevice(base).activate(String(enrolled.activationCode))).status, 404);
    const user = await ask(Subjects.usersGet, { tenantId, userId });
    assert.deepEqual(user.methods, ['push']);
    assert.deepEqual((user.devices as Array<{ deviceId: string; platform: string; state: string; name: string }>).map((d) => [d.deviceId, d.platform, d.state, d.name]), [[device.deviceId, 'none', 'active', 'test phone']]);

    const start = await startPush(tenantId, userId);
    assert.equal(start.method, 'push');
    assert.match(String(start.numberMatch), /^[1-9]\d$/);
    const pending = await device.pending();
    assert.equal(pending.status, 200);
    const challenge = pending.body.challenge as Record<string, unknown>;
    assert.equal(challenge.challengeId, start.challengeId);
    assert.equal(challenge.application, 'VPN');
    assert.equal(challenge.clientIp, '8.8.8.8');
    assert.deepEqual(challenge.location, { country: 'US', countryName: 'United States' });
    assert.ok(!JSON.stringify(pending.body).includes(`"${String(start.numberMatch)}"`), 'the number is not given to the device');
    const approved = await device.answer(String(start.challengeId), 'approve', String(start.numberMatch));
    assert.deepEqual(approved, { status: 200, body: { status: 'approved' } });
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId }), { challengeId: start.challengeId, status: 'approved' });
    assert.deepEqual((await device.pending()).body, { challenge: null });
    // Answered once: a second answer is refused.
    assert.equal((await device.answer(String(start.challengeId), 'approve', String(start.numberMatch))).status, 409);
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 5 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === start.challengeId && i.result === 'success');
    }, 20_000, 'the push in the report');
    assert.equal(row.authMethod, 'push');
    assert.equal(row.deviceId, device.deviceId, 'the report names the app that approved');
    assert.equal(row.deviceToken, device.deviceId, "MISSION.md's device token (app): the app that approved, never its push token");
  });

  itWith({ real: wholeStack }, 'number matching cannot be skipped: no number for a push that has one is a wrong number; a RADIUS push has none, says so, and takes no number', async () => {
    const { tenantId, userId, device } = await enrolledUser();
    const first = await startPush(tenantId, userId);
    assert.equal(((await device.pending()).body.challenge as { numberMatch: boolean }).numberMatch, true);
    assert.deepEqual((await device.answer(String(first.challengeId), 'approve')).body, { status: 'denied', reason: 'wrong_number' });
    const radius = { serverName: 'vpn-1', serverIp: '192.0.2.10' };
    const numberless = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp: '8.8.8.8', application: 'VPN', context: { radius } });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'a pending RADIUS push');
    assert.equal(numberless.numberMatch, undefined, 'no number for a sign-in without a page');
    assert.equal(((await device.pending()).body.challenge as { numberMatch: boolean }).numberMatch, false);
    assert.deepEqual((await device.answer(String(numberless.challengeId), 'approve', '42')).body, { status: 'denied', reason: 'wrong_number' });
    const second = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', context: { radius } });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'another RADIUS push');
    assert.deepEqual((await device.answer(String(second.challengeId), 'approve')).body, { status: 'approved' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: second.challengeId })).status, 'approved');
  });

  itWith({ real: wholeStack }, 'a wrong number denies, a denial is denied_by_user, a fraud report denies and blocks; Ed25519 devices too', async () => {
    const { tenantId, userId, device } = await enrolledUser('Ed25519');
    const first = await startPush(tenantId, userId);
    const wrong = String((Number(first.numberMatch) % 89) + 10);
    assert.deepEqual((await device.answer(String(first.challengeId), 'approve', wrong)).body, { status: 'denied', reason: 'wrong_number' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: first.challengeId })).status, 'denied');
    const second = await startPush(tenantId, userId);
    assert.deepEqual((await device.answer(String(second.challengeId), 'deny')).body, { status: 'denied', reason: 'denied_by_user' });
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId, challengeId: second.challengeId }), { challengeId: second.challengeId, status: 'denied', reason: 'denied_by_user' });
    // A fraud report answers a push still waiting, like approve and deny: not one already decided
    // (its outcome stays, and nobody is blocked for it).
    const late = await device.answer(String(second.challengeId), 'fraud');
    assert.deepEqual([late.status, (late.body as { error?: { code: string } }).error?.code], [409, 'conflict']);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: second.challengeId })).reason, 'denied_by_user');
    assert.ok(!(await ask(Subjects.usersGet, { tenantId, userId })).blocked, 'blocked for a report on a decided sign-in');
    const third = await startPush(tenantId, userId);
    assert.deepEqual((await device.answer(String(third.challengeId), 'fraud')).body, { status: 'denied', reason: 'fraud_reported' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: third.challengeId })).reason, 'fraud_reported');
    await eventually(async () => ((await ask(Subjects.usersGet, { tenantId, userId })).blocked ? true : undefined), 10_000, 'the user blocked');
    const details = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 10 })) as Reply & { items?: SigninItem[] };
      const found = report.items?.find((i) => i.challengeId === second.challengeId);
      return found?.result === 'failure' ? found : undefined;
    }, 20_000, 'the denial in the report');
    assert.equal(details.resultDetail, 'MFA denied; user declined the authentication');
    assert.equal(details.deviceId, device.deviceId, 'and the app that denied');
    const reported = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 10 })) as Reply & { items?: SigninItem[] };
      const found = report.items?.find((i) => i.challengeId === third.challengeId);
      return found?.result === 'failure' ? found : undefined;
    }, 20_000, 'the fraud report in the report');
    assert.equal(reported.resultDetail, 'MFA denied; Fraud Code Entered');
    assert.equal(reported.deviceToken, device.deviceId, 'and the app that reported it');
    const alert = await eventually(async () => {
      const alerts = (await ask(Subjects.reportsFraudQuery, { tenantId, userId })) as Reply & { items?: Array<{ challengeId: string | null; source: string; deviceId: string | null }> };
      return alerts.items?.find((a) => a.challengeId === third.challengeId && a.deviceId !== null);
    }, 20_000, 'the fraud alert naming the app');
    assert.equal(alert.source, 'app');
    assert.equal(alert.deviceId, device.deviceId);
  });

  itWith({ real: wholeStack }, 'an activation refused after its code was taken (five apps already) does not burn the code: it activates once a device is deleted', async () => {
    const { tenantId, userId, device: first } = await enrolledUser();
    for (let n = 2; n <= 5; n++) {
      const { activationCode } = await ask(Subjects.usersPushEnroll, { tenantId, userId });
      assert.equal((await new TestDevice(base).activate(String(activationCode))).status, 201);
    }
    const { activationCode } = await ask(Subjects.usersPushEnroll, { tenantId, userId });
    const sixth = new TestDevice(base);
    const refused = await sixth.activate(String(activationCode));
    assert.deepEqual([refused.status, (refused.body as { error?: { code: string } }).error?.code], [409, 'conflict']);
    await ask(Subjects.usersDevicesDelete, { tenantId, userId, deviceId: first.deviceId });
    const activated = await sixth.activate(String(activationCode));
    assert.equal(activated.status, 201, JSON.stringify(activated.body));
    // Taken for good now.
    assert.equal((await new TestDevice(base).activate(String(activationCode))).status, 404);
  });

  itWith({ real: wholeStack }, 'a reset revokes the activation codes issued before it, and so does an erasure for a user registered again under the same id', async () => {
    const tenantId = uniqueTenant('push-codes');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('codes');
    await ask(Subjects.usersRegister, { tenantId, userId });
    const beforeReset = String((await ask(Subjects.usersPushEnroll, { tenantId, userId })).activationCode);
    assert.equal((await ask(Subjects.usersReset, { tenantId, userId })).error, undefined);
    const refused = await new TestDevice(base).activate(beforeReset);
    assert.deepEqual([refused.status, (refused.body as { error?: { code: string } }).error?.code], [404, 'not_found']);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId, userId })).devices, [], 'no device after the reset');
    // A code issued after the reset activates.
    const afterReset = String((await ask(Subjects.usersPushEnroll, { tenantId, userId })).activationCode);
    assert.equal((await new TestDevice(base).activate(afterReset)).status, 201);

    const beforeErasure = String((await ask(Subjects.usersPushEnroll, { tenantId, userId })).activationCode);
    assert.equal((await ask(Subjects.usersDelete, { tenantId, userId })).error, undefined);
    await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Someone else' });
    const erased = await new TestDevice(base).activate(beforeErasure);
    assert.deepEqual([erased.status, (erased.body as { error?: { code: string } }).error?.code], [404, 'not_found']);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId, userId })).devices, [], 'the new user got the old code’s device');
  });

  itWith({ real: wholeStack }, 'the device API refuses replays, forged and stale signatures, unknown devices, other users’ challenges and bad bodies', async () => {
    const { tenantId, userId, device } = await enrolledUser();
    const other = await enrolledUser();
    const start = await startPush(tenantId, userId);
    const nonce = randomBytes(16).toString('base64url');
    assert.equal((await device.request('GET', '/device/v1/challenges/pending', undefined, { nonce })).status, 200);
    const replay = await device.request('GET', '/device/v1/challenges/pending', undefined, { nonce });
    assert.deepEqual([replay.status, replay.body.error?.code], [401, 'unauthenticated']);
    assert.equal((await device.request('GET', '/device/v1/challenges/pending', undefined, { timestamp: Date.now() - 5 * 60_000 })).status, 401);
    assert.equal((await device.request('GET', '/device/v1/challenges/pending', undefined, { signatureOf: 'something else' })).status, 401);
    // Another device's key over this device's request.
    const impostor = new TestDevice(base);
    impostor.deviceId = device.deviceId;
    assert.equal((await impostor.pending()).status, 401);
    // An answer signed over another decision: refused, and the challenge still waits.
    const forged = await device.request('POST', `/device/v1/challenges/${encodeURIComponent(String(start.challengeId))}/answer`, {
      decision: 'approve',
      number: String(start.numberMatch),
      signature: device.sign(DeviceSigned.answer(String(start.challengeId), 'deny', undefined)),
    });
    assert.equal(forged.status, 401);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId })).status, 'pending');
    // Another user's device cannot see or answer it.
    assert.deepEqual((await other.device.pending()).body, { challenge: null });
    assert.equal((await other.device.answer(String(start.challengeId), 'approve', String(start.numberMatch))).status, 404);
    // Unknown and deleted devices.
    const stranger = new TestDevice(base);
    stranger.deviceId = `${device.deviceId.split('.')[0]}.${randomBytes(16).toString('base64url')}`;
    assert.deepEqual(await stranger.pending(), { status: 403, body: { error: { code: 'not_activated', message: 'Authentication request is not for an activated account' } } });
    // Bad bodies.
    for (const body of [{ decision: 'maybe', signature: 'x' }, { decision: 'approve', number: '4', signature: 'x' }, { decision: 'deny', number: '12', signature: 'x' }]) {
      assert.equal((await device.request('POST', `/device/v1/challenges/${encodeURIComponent(String(start.challengeId))}/answer`, body)).status, 400, JSON.stringify(body));
    }
    // What Express refuses before the handlers (the body parser, the router) answers in the
    // device API's own shape too.
    const refused = async (path: string, init: RequestInit, status: number, code: string) => {
      const res = await fetch(`${base}${path}`, init);
      assert.equal(res.status, status, path);
      assert.equal(((await res.json()) as { error?: { code?: string } }).error?.code, code, path);
    };
    const json = { 'content-type': 'application/json' };
    await refused('/device/v1/activate', { method: 'POST', headers: json, body: '{"code": 1' }, 400, 'invalid_request');
    await refused('/device/v1/activate', { method: 'POST', headers: json, body: JSON.stringify({ code: 'x'.repeat(200_000) }) }, 413, 'invalid_request');
    // A compressed body is not read at all (a few bytes of gzip could otherwise be 16 KB of JSON to parse).
    await refused('/device/v1/activate', { method: 'POST', headers: { ...json, 'content-encoding': 'gzip' }, body: gzipSync('{"code": "x"}') }, 415, 'invalid_request');
    await refused('/device/v1/activate', { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-16' }, body: '{}' }, 400, 'invalid_request');
    await refused('/device/v1/activate', { method: 'POST', headers: { ...json, 'content-encoding': 'compress' }, body: '{}' }, 415, 'invalid_request');
    await refused('/device/v1/activate', { method: 'POST', headers: { 'content-type': 'application/json; charset=latin1' }, body: '{}' }, 415, 'invalid_request');
    await refused('/Device/v1/activate', { method: 'POST', headers: json, body: '{"code": 1' }, 400, 'invalid_request');
    await refused('/device/v1/challenges/%E0%A4%A/answer', { method: 'POST', headers: json, body: '{}' }, 400, 'invalid_request');
    await refused('/device/v1/nothing-here', { method: 'GET' }, 404, 'not_found');
    const badKey = await new TestDevice(base).activate('ABCD-EFGH-JKMN-PQRS', { publicKey: Buffer.from('not a key').toString('base64url') });
    assert.equal(badKey.status, 400);
    const huge = await fetch(`${base}/device/v1/activate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'x'.repeat(20_000) }) });
    assert.equal(huge.status, 413);
    // Deleted: the device is no longer activated.
    assert.equal((await ask(Subjects.usersDevicesDelete, { tenantId, userId, deviceId: device.deviceId })).deleted, true);
    assert.equal((await device.pending()).status, 403);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId, userId })).methods, []);
  });

  itWith({ real: wholeStack }, 'a device cannot answer (deny, approve, report) its own user’s challenge of another method: not_found, and it still waits', async () => {
    const { tenantId, userId, device } = await enrolledUser();
    await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: '+14155550199' });
    const sms = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: '8.8.8.8' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'a pending SMS challenge');
    for (const decision of ['deny', 'approve', 'fraud'] as const) {
      const answered = await device.answer(String(sms.challengeId), decision, decision === 'approve' ? '42' : undefined);
      assert.deepEqual([answered.status, answered.body.error?.code], [404, 'not_found'], decision);
    }
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: sms.challengeId })).status, 'pending');
    assert.ok(!(await ask(Subjects.usersGet, { tenantId, userId })).blocked, 'blocked by a report on an SMS sign-in');
  });

  itWith({ real: wholeStack }, 'an answer after the push expired is refused and approves nothing; the next push may start', async () => {
    const tenantId = uniqueTenant('push-late');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: 30 } });
    const userId = uniqueUser('late');
    await ask(Subjects.usersRegister, { tenantId, userId });
    const device = new TestDevice(base);
    assert.equal((await device.activate(String((await ask(Subjects.usersPushEnroll, { tenantId, userId })).activationCode))).status, 201);
    const start = await startPush(tenantId, userId);
    await new Promise((r) => setTimeout(r, 31_000));
    assert.deepEqual((await device.pending()).body, { challenge: null }, 'an expired push is no longer shown');
    const late = await device.answer(String(start.challengeId), 'approve', String(start.numberMatch));
    assert.deepEqual([late.status, late.body.error?.code], [409, 'conflict']);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId }), { challengeId: start.challengeId, status: 'denied', reason: 'expired' });
    assert.equal((await startPush(tenantId, userId)).status, 'pending', 'the expired push no longer blocks a new one');
  }, { timeout: 90_000 });

  itWith({ real: wholeStack }, 'MFA fatigue: one pending push at a time, and repeated denials suspend push for the user', async () => {
    const { tenantId, userId, device } = await enrolledUser();
    const first = await startPush(tenantId, userId);
    const second = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push' });
    assert.equal(second.error?.code, 'rate_limited', JSON.stringify(second));
    await device.answer(String(first.challengeId), 'deny');
    for (let n = 0; n < 2; n++) {
      const next = await startPush(tenantId, userId);
      await device.answer(String(next.challengeId), 'deny');
    }
    const suspended = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push' });
    assert.deepEqual([suspended.status, suspended.reason], ['denied', 'push_suspended']);
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 10 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === suspended.challengeId);
    }, 20_000, 'the suspension in the report');
    assert.equal(row.resultDetail, 'MFA denied; push suspended after repeated denied or ignored notifications');
  });

  itWith({ real: wholeStack }, 'a push answered after its user was blocked is denied user_blocked, and no longer waits: after the unblock the next push starts at once', async () => {
    const { tenantId, userId, device } = await enrolledUser();
    const first = await startPush(tenantId, userId);
    assert.ok((await ask(Subjects.usersBlock, { tenantId, userId, reason: 'phone reported stolen' })).blockedUntil);
    const answered = await device.answer(String(first.challengeId), 'approve', String(first.numberMatch));
    assert.deepEqual(answered.body, { status: 'denied', reason: 'user_blocked' });
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId, challengeId: first.challengeId }), { challengeId: first.challengeId, status: 'denied', reason: 'user_blocked' });
    assert.deepEqual((await device.pending()).body, { challenge: null });
    assert.equal((await ask(Subjects.usersUnblock, { tenantId, userId, reason: 'phone found' })).unblocked, true);
    // Not rate_limited until the first push's expiry (minutes), and not counted as ignored later.
    const next = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp: '8.8.8.8' });
    assert.equal(next.status, 'pending', JSON.stringify(next));
    assert.deepEqual((await device.answer(String(next.challengeId), 'approve', String(next.numberMatch))).body, { status: 'approved' });
  });
});
