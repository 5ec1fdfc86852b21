import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { NatsConnection } from '@nats-io/transport-node';
import { DeviceClient, DeviceApiError } from '@mfa/authenticator';
import { Subjects } from '@mfa/contracts';
import { keyringFromMasterKey, parseMasterKey, userTag } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import {
  eventually,
  FakeFcm,
  freePort,
  itWith,
  repoRoot,
  startNatsServer,
  startRedisServer,
  startStack,
  uniqueTenant,
  uniqueUser,
  type NatsServerProcess,
  type RedisServerProcess,
  type Stack,
} from '@mfa/testing';

type Reply = Record<string, unknown> & { status?: string; error?: { code: string; message: string } };

/**
 * A master key rotation as docs/operations.md's procedure runs it, with an authenticator app
 * activated before it: the services stopped, Redis emptied, started again under the new key with
 * the old one as previous, the re-wrap tool run, and the old key removed. The app keeps the id it
 * was given, which carries the user's tag under the old key; through every step it is woken
 * through FCM with its token (sealed bound to that id), sees the sign-in and approves it.
 */
describe('master key rotation: an authenticator app activated before it keeps working', () => {
  const oldKey = randomBytes(32).toString('hex');
  const newKey = randomBytes(32).toString('base64');
  const fcm = new FakeFcm();
  const services = ['user-settings', 'auth-challenge', 'dispatch', 'fraud'] as const;
  let nats: NatsServerProcess;
  let redisServer: RedisServerProcess;
  let redis: Redis;
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  let devicePort = 0;

  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc!, subject, body, { timeoutMs: 10_000 });

  async function up(keys: { MFA_ENCRYPTION_KEY: string; MFA_PREVIOUS_ENCRYPTION_KEYS?: string }): Promise<void> {
    stack = await startStack({
      services,
      env: { NODE_ENV: 'test', LOG_LEVEL: 'warn', NATS_URL: nats.url, REDIS_URL: redisServer.url, ...keys },
      // The device API at the same address across restarts: the app keeps the URL it activated with.
      serviceEnv: {
        'auth-challenge': { HTTP_PORT: String(devicePort) },
        'user-settings': { DEVICE_API_PUBLIC_URL: `http://127.0.0.1:${devicePort}/device` },
        dispatch: { ...fcm.env(), PUSH_RETRY_BASE_MS: '20' },
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: nats.url, name: 'e2e-key-rotation' });
  }

  async function down(): Promise<void> {
    await nc?.drain();
    nc = undefined;
    await stack?.stop();
    stack = undefined;
  }

  /** The re-wrap tool, as the operator runs it: a process with user-settings' environment. */
  const rewrap = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['services/user-settings/dist/rewrap.js', ...args],
        { cwd: repoRoot, env: { PATH: process.env.PATH, NODE_ENV: 'test', NATS_URL: nats.url, MFA_ENCRYPTION_KEY: newKey, MFA_PREVIOUS_ENCRYPTION_KEYS: oldKey } },
        (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
      );
    });

  /** A push sign-in: FCM wakes the app, which sees it and approves with the number; the IdP sees it approved. */
  async function signInWithApp(tenantId: string, userId: string, app: DeviceClient, token: string): Promise<void> {
    const woken = fcm.messagesTo(token).length;
    const start = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp: '8.8.8.8', application: 'VPN' });
      return reply.status === 'pending' ? reply : undefined;
    }, 60_000, 'a pending push (the user projected)');
    const challengeId = String(start.challengeId);
    const message = await fcm.waitFor((m) => m.token === token && m.data?.challengeId === challengeId, 20_000);
    assert.equal(message.data?.type, 'mfa.challenge');
    assert.equal(fcm.messagesTo(token).length, woken + 1);
    const pending = await eventually(async () => (await app.pending()) ?? undefined, 10_000, 'the push in the app');
    assert.equal(pending.challengeId, challengeId);
    assert.deepEqual(await app.answer(challengeId, 'approve', String(start.numberMatch)), { status: 'approved' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId })).status, 'approved');
  }

  before(async () => {
    await fcm.start();
    nats = await startNatsServer();
    redisServer = await startRedisServer();
    redis = new Redis(redisServer.url);
    devicePort = await freePort();
  });

  after(async () => {
    await down();
    redis?.disconnect();
    await redisServer?.kill();
    await nats?.kill();
    await fcm.stop();
  });

  itWith({ real: ['nats', 'redis'], fake: ['fcm'] }, 'the app approves before the rotation, after it with the old key as previous, after the re-wrap tool without it, and reports fraud; deleted, it is refused', async () => {
    await up({ MFA_ENCRYPTION_KEY: oldKey });
    const tenantId = uniqueTenant('rotation');
    const userId = uniqueUser('app');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} })).error, undefined);
    assert.equal((await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Rotated User' })).error, undefined);
    const { activationCode } = await ask(Subjects.usersPushEnroll, { tenantId, userId });
    const token = `fcm-${randomBytes(32).toString('base64url')}`;
    const app = await DeviceClient.activate(`http://127.0.0.1:${devicePort}/device/v1/activate?code=${encodeURIComponent(String(activationCode))}`, { platform: 'android', pushToken: token, name: 'android phone' });
    const { deviceId } = app.identity;
    const oldTag = userTag(keyringFromMasterKey(parseMasterKey(oldKey)), tenantId, userId);
    const newTag = userTag(keyringFromMasterKey(parseMasterKey(newKey)), tenantId, userId);
    assert.ok(deviceId.startsWith(`${oldTag}.`), 'the id carries the user’s tag under the key current at activation');
    await signInWithApp(tenantId, userId, app, token);

    // The rotation procedure: every service stopped, Redis emptied, started under the new key with
    // the old one as previous; user-settings rebuilds the projection under the new tags.
    await down();
    await redis.flushall();
    await up({ MFA_ENCRYPTION_KEY: newKey, MFA_PREVIOUS_ENCRYPTION_KEYS: oldKey });
    await signInWithApp(tenantId, userId, app, token);
    assert.equal(await redis.hget(RedisKeys.devicesMoved(oldTag), deviceId.split('.')[1]!), newTag, 'found by the tag its id carries');
    const listed = (await ask(Subjects.usersGet, { tenantId, userId })).devices as Array<{ deviceId: string; state: string }>;
    assert.deepEqual(listed.map((d) => [d.deviceId, d.state]), [[deviceId, 'active']], 'users.get names the app by the id it was given');

    // Step 9: the re-wrap tool seals the push token again under the new key (still bound to the
    // app's id); once it reports the old key removable, the services run without it.
    const run = await rewrap(['--json']);
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    await down();
    await up({ MFA_ENCRYPTION_KEY: newKey });
    await signInWithApp(tenantId, userId, app, token);

    // A fraud report from the app: the fraud service takes the app for the user's own.
    const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp: '8.8.8.8', application: 'VPN' });
    assert.equal(start.status, 'pending', JSON.stringify(start));
    await eventually(async () => (await app.pending()) ?? undefined, 10_000, 'the push in the app');
    assert.deepEqual(await app.answer(String(start.challengeId), 'fraud'), { status: 'denied', reason: 'fraud_reported' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId })).reason, 'fraud_reported');

    // Deleted by the operator: the app is refused, as any deleted app is.
    assert.equal((await ask(Subjects.usersDevicesDelete, { tenantId, userId, deviceId })).error, undefined);
    const refused = await eventually(
      async () =>
        app.pending().then(
          () => undefined,
          (error: unknown) => (error instanceof DeviceApiError ? error : undefined),
        ),
      10_000,
      'the deleted app refused',
    );
    assert.deepEqual([refused.status, refused.code], [403, 'not_activated']);
  }, { timeout: 600_000 });
});
