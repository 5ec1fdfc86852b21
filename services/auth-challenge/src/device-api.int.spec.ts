import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { Redis } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { defaultTenantSettings, DeviceSigned, EventSubjects, InternalSubjects, ipLockKey, Subjects } from '@mfa/contracts';
import { loadKeyring, userTag } from '@mfa/crypto';
import { EventPublisher, requestJson } from '@mfa/messaging';
import { deviceId as formatDeviceId, parseChallengeId, RedisKeys, UserFields, UserProjectionWriter } from '@mfa/projection';
import { eventually, itWith, tenantCreated, testEnv, testTenant, uniqueTenant, uniqueUser } from '@mfa/testing';
import { InternalRequests } from '@mfa/service-kit';
import { boot } from './boot.js';
import { DeviceApiError, DeviceApiService } from './application/device-api.service.js';
import { ChallengeService } from './application/challenge.service.js';
import { loadAuthChallengeConfig } from './config.js';
import { SourceFailureKeys } from './adapters/source-failures.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

interface TestDevice {
  deviceId: string;
  algorithm: 'ES256' | 'Ed25519';
  privateKey: KeyObject;
}

/**
 * The device API (docs/device-api.md) over HTTP against real NATS and Redis: the devices are
 * projected straight into Redis as user-settings would after an activation, and sign as the
 * reference app does (authenticator/src/device-client.ts), written out anew here.
 */
describe('auth-challenge: the device API against real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  const [tenant, other] = [uniqueTenant('device-api'), uniqueTenant('device-api-other')];
  let service: Awaited<ReturnType<typeof boot>>;
  let nc: NatsConnection;
  let redis: Redis;
  let writer: UserProjectionWriter;
  let seq = 1;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 5000 });

  before(async () => {
    service = await boot(loadAuthChallengeConfig({ ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' }));
    nc = await connect({ servers: testEnv.natsUrl });
    redis = new Redis(testEnv.redisUrl);
    writer = new UserProjectionWriter(redis, keyring);
    await writer.markComplete();
    const publisher = new EventPublisher(jetstream(nc));
    for (const tenantId of [tenant, other]) {
      await publisher.publish(EventSubjects.tenant(tenantId), tenantCreated(testTenant({ tenantId, settings: { ...defaultTenantSettings(), enabledMethods: ['push', 'totp'] } })));
    }
  });

  after(async () => {
    await service.stop();
    await nc.drain();
    await redis.quit();
  });

  /** A user with one activated app (and a TOTP token), as user-settings projects them. */
  async function userWithDevice(tenantId: string, userId: string, algorithm: 'ES256' | 'Ed25519' = 'ES256', validFrom?: number): Promise<TestDevice> {
    const pair = algorithm === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('ed25519');
    const nonce = randomBytes(16).toString('base64url');
    await writer.apply({
      tenantId,
      userId,
      seq: seq++,
      methods: ['push', 'totp'],
      defaultMethod: 'push',
      validFrom,
      totpTokens: [{ tokenId: 'app', secret: randomBytes(20), digits: 6, period: 30, activatedStep: 0 }],
      devices: [
        {
          nonce,
          device: {
            state: 'active',
            algorithm,
            publicKey: pair.publicKey.export({ format: 'der', type: 'spki' }).toString('base64url'),
            platform: 'none',
            name: 'test phone',
            activatedAt: new Date().toISOString(),
          },
        },
      ],
    });
    return { deviceId: formatDeviceId(userTag(keyring, tenantId, userId), nonce), algorithm, privateKey: pair.privateKey };
  }

  const signWith = (device: TestDevice, data: string) =>
    (device.algorithm === 'ES256' ? sign('sha256', Buffer.from(data), { key: device.privateKey, dsaEncoding: 'ieee-p1363' }) : sign(null, Buffer.from(data), device.privateKey)).toString('base64url');

  /** The four signed headers of a request, as the app sends them. */
  function signedHeaders(device: TestDevice, method: string, path: string, body: string, opts: { timestamp?: number; nonce?: string } = {}) {
    const timestamp = String(opts.timestamp ?? Date.now());
    const nonce = opts.nonce ?? randomBytes(16).toString('base64url');
    const bodyHash = createHash('sha256').update(body).digest('base64url');
    return {
      'Mfa-Device': device.deviceId,
      'Mfa-Timestamp': timestamp,
      'Mfa-Nonce': nonce,
      'Mfa-Signature': signWith(device, DeviceSigned.request(method, path, timestamp, nonce, bodyHash)),
    };
  }

  async function send(device: TestDevice, method: 'GET' | 'POST', path: string, body = '', opts: { timestamp?: number; nonce?: string; headers?: Record<string, string> } = {}) {
    const headers = { ...signedHeaders(device, method, path, body, opts), ...(body ? { 'Content-Type': 'application/json' } : {}), ...opts.headers };
    const res = await fetch(`${service.url}${path}`, { method, headers, ...(body ? { body } : {}) });
    return { status: res.status, body: (await res.json()) as Reply };
  }

  const pending = (device: TestDevice) => send(device, 'GET', '/device/v1/challenges/pending');
  const answerBody = (device: TestDevice, challengeId: string, decision: 'approve' | 'deny' | 'fraud', number?: string) =>
    JSON.stringify({ decision, ...(number !== undefined ? { number } : {}), signature: signWith(device, DeviceSigned.answer(challengeId, decision, number)) });
  const answer = (device: TestDevice, challengeId: string, decision: 'approve' | 'deny' | 'fraud', number?: string) =>
    send(device, 'POST', `/device/v1/challenges/${challengeId}/answer`, answerBody(device, challengeId, decision, number));

  async function startPush(tenantId: string, userId: string) {
    const reply = await eventually(async () => {
      const r = await ask(Subjects.challengeStart, { tenantId, userId, method: 'push', clientIp: '81.2.69.142', application: 'VPN' });
      return r.status === undefined ? undefined : r;
    }, 5000, 'the tenant known');
    assert.equal(reply.status, 'pending');
    return { challengeId: String(reply.challengeId), number: String(reply.numberMatch) };
  }

  itWith({ real: ['nats', 'redis'] }, 'a device sees and answers only its own user’s push: the same user id in another tenant sees nothing and gets not_found', async () => {
    const userId = uniqueUser('alice');
    const mine = await userWithDevice(tenant, userId);
    const theirs = await userWithDevice(other, userId, 'Ed25519');
    const push = await startPush(tenant, userId);
    const seen = await pending(mine);
    assert.equal(seen.status, 200);
    const view = seen.body.challenge as Record<string, unknown>;
    assert.equal(view.challengeId, push.challengeId);
    assert.equal(view.numberMatch, true);
    assert.equal(view.application, 'VPN');
    assert.deepEqual(view.location, { country: 'GB', countryName: 'United Kingdom' });
    assert.ok(!JSON.stringify(seen.body).includes(`"${push.number}"`), 'the number the sign-in page shows is not in the app’s view');
    assert.deepEqual((await pending(theirs)).body, { challenge: null });
    for (const decision of ['approve', 'deny', 'fraud'] as const) {
      const refused = await answer(theirs, push.challengeId, decision, decision === 'approve' ? push.number : undefined);
      assert.deepEqual([refused.status, refused.body.error?.code], [404, 'not_found'], decision);
    }
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId })).status, 'pending', 'still waiting');
    assert.deepEqual((await answer(mine, push.challengeId, 'approve', push.number)).body, { status: 'approved' });
  });

  itWith({ real: ['nats', 'redis'] }, 'replays: a request sent twice, an answer signed for another challenge, one outside the clock window; answers after the decision are conflicts', async () => {
    const userId = uniqueUser('bob');
    const device = await userWithDevice(tenant, userId);
    const first = await startPush(tenant, userId);
    const path = `/device/v1/challenges/${first.challengeId}/answer`;
    const body = answerBody(device, first.challengeId, 'deny');
    const nonce = randomBytes(16).toString('base64url');
    // Out of the clock window either way: refused before anything is decided.
    for (const skew of [-61_000, 61_000]) {
      const stale = await send(device, 'POST', path, body, { timestamp: Date.now() + skew });
      assert.deepEqual([stale.status, stale.body.error?.code], [401, 'unauthenticated'], `skew ${skew}`);
    }
    // Within it (a phone's clock 50 s behind): accepted once; the very same request again is a replay.
    const timestamp = Date.now() - 50_000;
    const denied = await send(device, 'POST', path, body, { timestamp, nonce });
    assert.deepEqual([denied.status, denied.body], [200, { status: 'denied', reason: 'denied_by_user' }]);
    const replayed = await send(device, 'POST', path, body, { timestamp, nonce });
    assert.deepEqual([replayed.status, replayed.body.error?.code], [401, 'unauthenticated']);
    assert.match(String(replayed.body.error?.message), /replayed/);
    // The same signed answer, re-sent with a fresh request signature: the push is decided already.
    const again = await send(device, 'POST', path, body);
    assert.deepEqual([again.status, again.body.error?.code], [409, 'conflict']);
    const approveLate = await answer(device, first.challengeId, 'approve', first.number);
    assert.deepEqual([approveLate.status, approveLate.body.error?.code], [409, 'conflict'], 'a denial stays a denial');
    // An answer signed for the first push, posted for the next one: not the device's answer to it.
    const second = await startPush(tenant, userId);
    const moved = await send(device, 'POST', `/device/v1/challenges/${second.challengeId}/answer`, answerBody(device, first.challengeId, 'approve', second.number));
    assert.deepEqual([moved.status, moved.body.error?.code], [401, 'unauthenticated']);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: second.challengeId })).status, 'pending');
  });

  itWith({ real: ['nats', 'redis'] }, 'number matching allows one try: a wrong number denies the push, the right one afterwards is a conflict', async () => {
    const userId = uniqueUser('carol');
    const device = await userWithDevice(tenant, userId, 'Ed25519');
    const push = await startPush(tenant, userId);
    const wrong = String(((Number(push.number) - 10 + 1) % 90) + 10);
    assert.deepEqual((await answer(device, push.challengeId, 'approve', wrong)).body, { status: 'denied', reason: 'wrong_number' });
    const right = await answer(device, push.challengeId, 'approve', push.number);
    assert.deepEqual([right.status, right.body.error?.code], [409, 'conflict']);
    const status = await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId });
    assert.deepEqual([status.status, status.reason], ['denied', 'too_many_attempts']);
    // No number for a push that shows one is a wrong number too.
    await redis.del(RedisKeys.pushRefusals(userTag(keyring, tenant, userId)));
    const next = await startPush(tenant, userId);
    assert.deepEqual((await answer(device, next.challengeId, 'approve')).body, { status: 'denied', reason: 'wrong_number' });
  });

  itWith({ real: ['nats', 'redis'] }, 'an answer after the push expired is a conflict and approves nothing', async () => {
    const userId = uniqueUser('dave');
    const device = await userWithDevice(tenant, userId);
    const push = await startPush(tenant, userId);
    const id = parseChallengeId(push.challengeId)!;
    await redis.hset(RedisKeys.challenge(id.tag, id.nonce), 'expiresAt', String(Date.now() - 1));
    assert.deepEqual((await pending(device)).body, { challenge: null }, 'the app shows no expired push');
    const late = await answer(device, push.challengeId, 'approve', push.number);
    assert.deepEqual([late.status, late.body.error?.code], [409, 'conflict']);
    const status = await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId });
    assert.deepEqual([status.status, status.reason], ['denied', 'expired']);
  });

  itWith({ real: ['nats', 'redis'] }, 'the app shows no push its user can no longer approve: the user blocked since its start (shown again once unblocked), or reset since', async () => {
    const userId = uniqueUser('erin');
    const device = await userWithDevice(tenant, userId, 'ES256', Date.now() - 86_400_000);
    const tag = userTag(keyring, tenant, userId);
    const push = await startPush(tenant, userId);
    const shown = async () => ((await pending(device)).body.challenge as { challengeId?: string } | null)?.challengeId ?? null;
    assert.equal(await shown(), push.challengeId);
    // As fraud projects a block: until its end.
    await redis.set(RedisKeys.blocked(tag), String(Date.now() + 60_000), 'PX', 60_000);
    assert.equal(await shown(), null, 'a blocked user’s push is not shown');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId })).status, 'pending', 'decided only by an answer or its expiry');
    await redis.del(RedisKeys.blocked(tag));
    assert.equal(await shown(), push.challengeId, 'unblocked before it expired: it can be approved again, so it is shown');
    // As user-settings projects a reset: the user's methods begin anew.
    await redis.hset(RedisKeys.user(tag), 'validFrom', String(Date.now()));
    assert.equal(await shown(), null, 'a push started before its user was reset is not shown');
    assert.deepEqual((await answer(device, push.challengeId, 'approve', push.number)).body, { status: 'denied', reason: 'method_not_registered' }, 'it could not be approved');
  });

  itWith({ real: ['nats', 'redis'] }, 'the app shows a push exactly when its answer could approve it: the pending read and the answer judge a reset or erasure alike', async () => {
    // Each state of the user's projection a push can meet between its start and its answer: the
    // pending read (PENDING_PUSH_SCRIPT) and the answer (pushAnswerScript's checks()) must agree on
    // every one, so that the app neither shows a push whose approval is refused nor hides one that
    // could still be approved.
    const validFrom = Date.now() - 86_400_000;
    const states: Array<[string, (user: string, challenge: string) => Promise<unknown>, boolean]> = [
      ['projected again, no reset', async () => undefined, true],
      ['reset since the start', (user) => redis.hset(user, UserFields.validFrom, String(validFrom + 1)), false],
      ['a hash without validFrom (an older user-settings)', (user) => redis.hdel(user, UserFields.validFrom), true],
      ['erased since the start (a tombstone)', async (user) => redis.multi().del(user).hset(user, UserFields.seq, '999').exec(), false],
      ['a push of an older start (no vf), its user reset since', async (user, challenge) => {
        await redis.hset(challenge, 'vf', '');
        await redis.hset(user, UserFields.validFrom, String(validFrom + 1));
      }, true],
    ];
    for (const [what, change, approvable] of states) {
      const userId = uniqueUser('voided');
      const device = await userWithDevice(tenant, userId, 'ES256', validFrom);
      const tag = userTag(keyring, tenant, userId);
      const push = await startPush(tenant, userId);
      const id = parseChallengeId(push.challengeId)!;
      await change(RedisKeys.user(tag), RedisKeys.challenge(id.tag, id.nonce));
      const shown = ((await pending(device)).body.challenge as { challengeId?: string } | null)?.challengeId === push.challengeId;
      const answered = await answer(device, push.challengeId, 'approve', push.number);
      assert.equal(shown, approvable, `${what}: shown`);
      assert.deepEqual(answered.body, approvable ? { status: 'approved' } : { status: 'denied', reason: 'method_not_registered' }, `${what}: answered`);
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'an activation or a fraud report whose internal request fails answers 503 and logs why: the error’s name, not the request', async () => {
    const warned: Array<{ msg: string; fields?: Record<string, unknown> }> = [];
    const closed = await connect({ servers: testEnv.natsUrl });
    await closed.close();
    const unused = { pushAnswer: () => Promise.reject(new Error('not used here')) };
    const cut = new DeviceApiService(redis, new InternalRequests(closed, keyring), unused, { warn: (msg, fields) => void warned.push({ msg, fields }) });
    const is503 = (error: unknown) => error instanceof DeviceApiError && error.status === 503 && error.code === 'unavailable';
    const code = randomBytes(12).toString('base64url');
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const activation = { code, algorithm: 'ES256', publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64url'), proof: randomBytes(64).toString('base64url'), platform: 'none' };
    await assert.rejects(cut.activate(activation), is503);
    assert.equal(warned.length, 1);
    assert.equal(warned[0]!.fields?.subject, InternalSubjects.deviceActivate);
    const error = warned[0]!.fields?.error as { name?: unknown };
    assert.ok(typeof error.name === 'string' && error.name.length > 0, `the error named: ${JSON.stringify(warned[0])}`);
    assert.ok(!JSON.stringify(warned).includes(code), 'the activation code is not logged');

    const userId = uniqueUser('frank');
    const device = await userWithDevice(tenant, userId);
    const push = await startPush(tenant, userId);
    const path = `/device/v1/challenges/${push.challengeId}/answer`;
    const body = answerBody(device, push.challengeId, 'fraud');
    const headers = Object.fromEntries(Object.entries(signedHeaders(device, 'POST', path, body)).map(([k, v]) => [k.toLowerCase(), v]));
    await assert.rejects(cut.answer({ method: 'POST', path, body: Buffer.from(body), headers }, push.challengeId), is503);
    assert.equal(warned.length, 2);
    assert.equal(warned[1]!.fields?.subject, InternalSubjects.fraudFromApp);
    assert.ok(typeof (warned[1]!.fields?.error as { name?: unknown }).name === 'string');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId })).status, 'pending', 'nothing reported, nothing decided');
  });

  itWith({ real: ['nats', 'redis'] }, 'a fraud report from the app names the device that signed it to the fraud service, for the alert and the sign-in report', async () => {
    const userId = uniqueUser('grace');
    const device = await userWithDevice(tenant, userId);
    const push = await startPush(tenant, userId);
    // Standing in for the fraud service: what the device API asks of it.
    const asked: Array<Record<string, unknown>> = [];
    const fraud = nc.subscribe(InternalSubjects.fraudFromApp, {
      callback: (_error, msg) => {
        const body = msg.json<Record<string, unknown>>();
        if (body.challengeId !== push.challengeId) return;
        asked.push(body);
        msg.respond(JSON.stringify({ alertId: 'alert-1', challengeDenied: true, blocked: false }));
      },
    });
    try {
      await nc.flush();
      assert.deepEqual((await answer(device, push.challengeId, 'fraud')).body, { status: 'denied', reason: 'fraud_reported' });
      assert.deepEqual(asked, [{ tenantId: tenant, userId, challengeId: push.challengeId, deviceId: device.deviceId }]);
    } finally {
      fraud.unsubscribe();
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'an app deleted while fraud handled its report: the report stands (denied fraud_reported), its use is not written back to devices:used; another app’s report of the same push records its use', async () => {
    const userId = uniqueUser('fraud-in-flight');
    const tag = userTag(keyring, tenant, userId);
    const app = (name: string) => {
      const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const nonce = randomBytes(16).toString('base64url').slice(0, 22);
      const publicKey = pair.publicKey.export({ format: 'der', type: 'spki' }).toString('base64url');
      return {
        nonce,
        test: { deviceId: formatDeviceId(tag, nonce), algorithm: 'ES256', privateKey: pair.privateKey } as TestDevice,
        projected: { state: 'active' as const, algorithm: 'ES256' as const, publicKey, platform: 'none' as const, name, activatedAt: new Date().toISOString() },
      };
    };
    const [phone, tablet] = [app('phone'), app('tablet')];
    // As user-settings projects the user's apps (the real writer: a deleted app's devices:used field goes with it).
    const project = (apps: Array<ReturnType<typeof app>>) =>
      writer.apply({ tenantId: tenant, userId, seq: seq++, methods: ['push'], defaultMethod: 'push', totpTokens: [], devices: apps.map((a) => ({ nonce: a.nonce, device: a.projected })) });
    assert.equal(await project([phone, tablet]), true);
    const push = await startPush(tenant, userId);

    // Standing in for the fraud service: the phone is deleted (projected without it) while its
    // report is being handled, after the device API admitted it; the tablet's is answered as is.
    const asked: string[] = [];
    const failures: unknown[] = [];
    const fraud = nc.subscribe(InternalSubjects.fraudFromApp, {
      callback: (_error, msg) => {
        const body = msg.json<{ challengeId?: string; deviceId?: string }>();
        if (body.challengeId !== push.challengeId) return;
        asked.push(String(body.deviceId));
        void (async () => {
          if (body.deviceId === phone.test.deviceId) assert.equal(await project([tablet]), true, 'the projection written in flight');
          msg.respond(JSON.stringify({ alertId: 'alert-1', challengeDenied: true, blocked: false }));
        })().catch((error: unknown) => failures.push(error));
      },
    });
    try {
      await nc.flush();
      const reported = await answer(phone.test, push.challengeId, 'fraud');
      assert.deepEqual([reported.status, reported.body], [200, { status: 'denied', reason: 'fraud_reported' }], 'fraud acted on the report: it stands');
      assert.deepEqual(failures, []);
      assert.equal(await redis.hexists(RedisKeys.devices(tag), phone.nonce), 0, 'the phone was deleted while its report was in flight');
      assert.equal(await redis.hexists(RedisKeys.devicesUsed(tag), phone.nonce), 0, 'no use written back for a device the user no longer has');
      // The app the user still has: its report records its use under its nonce.
      assert.deepEqual((await answer(tablet.test, push.challengeId, 'fraud')).body, { status: 'denied', reason: 'fraud_reported' });
      assert.deepEqual(asked, [phone.test.deviceId, tablet.test.deviceId]);
      assert.ok(Number(await redis.hget(RedisKeys.devicesUsed(tag), tablet.nonce)) > 0, 'the tablet’s use recorded');
      assert.deepEqual(await redis.hkeys(RedisKeys.devicesUsed(tag)), [tablet.nonce], 'only the app the user still has');
      // The deleted phone's next request is refused, as for any deleted app.
      const refused = await pending(phone.test);
      assert.deepEqual([refused.status, refused.body.error?.code], [403, 'not_activated']);
    } finally {
      fraud.unsubscribe();
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'an app activated under an earlier master key keeps its id: found through the pointer at its old tag, it sees and answers its user’s push; the id in the current tag’s form is not it; once it is deleted or its user erased, its pointer goes', async () => {
    const userId = uniqueUser('moved');
    const tag = userTag(keyring, tenant, userId);
    const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    // The user's tag under the earlier key: a pointer there leads to the device under the current one.
    const oldTag = randomBytes(16).toString('base64url').slice(0, 22);
    const nonce = randomBytes(16).toString('base64url').slice(0, 22);
    const moved: TestDevice = { deviceId: formatDeviceId(oldTag, nonce), algorithm: 'ES256', privateKey: pair.privateKey };
    const snapshot = (devices: boolean) => ({
      tenantId: tenant,
      userId,
      seq: seq++,
      methods: devices ? ['push'] : [],
      defaultMethod: devices ? 'push' : undefined,
      totpTokens: [],
      devices: devices
        ? [{ nonce, device: { state: 'active' as const, algorithm: 'ES256' as const, publicKey: pair.publicKey.export({ format: 'der', type: 'spki' }).toString('base64url'), platform: 'none' as const, name: 'old phone', activatedAt: new Date().toISOString(), id: moved.deviceId } }]
        : [],
    });
    assert.equal(await writer.apply(snapshot(true)), true);
    assert.equal(await redis.hget(RedisKeys.devicesMoved(oldTag), nonce), tag, 'the pointer names the user’s current tag');

    const push = await startPush(tenant, userId);
    const seen = await pending(moved);
    assert.equal(seen.status, 200, JSON.stringify(seen.body));
    assert.equal((seen.body.challenge as Record<string, unknown> | null)?.challengeId, push.challengeId);
    assert.deepEqual((await answer(moved, push.challengeId, 'approve', push.number)).body, { status: 'approved' });
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId })).status, 'approved');

    // One id per app: the same key under the current tag's form of the id is refused.
    const renamed = { ...moved, deviceId: formatDeviceId(tag, nonce) };
    assert.deepEqual([(await pending(renamed)).status, (await pending(renamed)).body.error?.code], [403, 'not_activated']);

    // Deleted (the user's next snapshot has it no more): refused, and the pointer goes at its next use.
    await writer.apply(snapshot(false));
    assert.deepEqual([(await pending(moved)).status, (await pending(moved)).body.error?.code], [403, 'not_activated']);
    assert.equal(await redis.exists(RedisKeys.devicesMoved(oldTag)), 0, 'the dangling pointer was removed');

    // Activated again under the earlier key's id, then erased: the erasure takes the pointer, and an
    // older snapshot arriving afterwards does not write it back.
    const before = snapshot(true);
    await writer.apply(before);
    assert.equal(await redis.hget(RedisKeys.devicesMoved(oldTag), nonce), tag);
    assert.equal(await writer.erase(tenant, userId, seq++), true);
    assert.equal(await redis.exists(RedisKeys.devicesMoved(oldTag)), 0, 'erased with the user');
    assert.equal(await writer.apply(before), false);
    assert.equal(await redis.exists(RedisKeys.devicesMoved(oldTag)), 0, 'an older snapshot writes no pointer');
    assert.deepEqual([(await pending(moved)).status, (await pending(moved)).body.error?.code], [403, 'not_activated']);
  });

  itWith({ real: ['nats', 'redis'] }, 'an app deleted between the admission of its answer and the answer’s script decides nothing and records nothing: 403 not_activated, the push still pending, no use of it in devices:used; another app of the user, and one activated under an earlier master key, are recorded under their nonce', async () => {
    const userId = uniqueUser('deleted-in-flight');
    const tag = userTag(keyring, tenant, userId);
    const oldTag = randomBytes(16).toString('base64url').slice(0, 22);
    type Held = { nonce: string; test: TestDevice; projected: { state: 'active'; algorithm: 'ES256'; publicKey: string; platform: 'none'; name: string; activatedAt: string; id?: string } };
    const app = (name: string, movedFrom?: string): Held => {
      const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const nonce = randomBytes(16).toString('base64url').slice(0, 22);
      const id = formatDeviceId(movedFrom ?? tag, nonce);
      const publicKey = pair.publicKey.export({ format: 'der', type: 'spki' }).toString('base64url');
      const projected = { state: 'active' as const, algorithm: 'ES256' as const, publicKey, platform: 'none' as const, name, activatedAt: new Date().toISOString(), ...(movedFrom ? { id } : {}) };
      return { nonce, test: { deviceId: id, algorithm: 'ES256', privateKey: pair.privateKey }, projected };
    };
    const [phone, tablet, old] = [app('phone'), app('tablet'), app('old phone', oldTag)];
    // As user-settings projects the user's apps (the real writer: a deleted app's devices:used field goes with it).
    const project = (apps: Held[]) =>
      writer.apply({ tenantId: tenant, userId, seq: seq++, methods: ['push'], defaultMethod: 'push', totpTokens: [], devices: apps.map((a) => ({ nonce: a.nonce, device: a.projected })) });
    assert.equal(await project([phone, tablet, old]), true);

    // The device API with the service's own ChallengeService, the app deleted (projected without it)
    // after its request was admitted (its device read, its signatures checked), before the answer's script.
    const challenges = service.app.get(ChallengeService);
    let inFlight: (() => Promise<boolean>) | undefined;
    const racing = new DeviceApiService(redis, new InternalRequests(nc, keyring), {
      pushAnswer: async (req, now) => {
        if (inFlight) assert.equal(await inFlight(), true, 'the projection written in flight');
        return challenges.pushAnswer(req, now);
      },
    }, { warn: () => undefined });
    const answerOf = async (device: TestDevice, challengeId: string, decision: 'approve' | 'deny', number?: string) => {
      const path = `/device/v1/challenges/${challengeId}/answer`;
      const body = answerBody(device, challengeId, decision, number);
      const headers = Object.fromEntries(Object.entries(signedHeaders(device, 'POST', path, body)).map(([k, v]) => [k.toLowerCase(), v]));
      try {
        return await racing.answer({ method: 'POST', path, body: Buffer.from(body), headers }, challengeId);
      } catch (error) {
        assert.ok(error instanceof DeviceApiError, String(error));
        return `${error.status} ${error.code}`;
      }
    };
    const statusOf = async (challengeId: string) => (await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId })).status;

    // An approval from the phone, deleted in flight: refused as a deleted app's request is, nothing decided or recorded.
    const first = await startPush(tenant, userId);
    inFlight = () => project([tablet, old]);
    assert.equal(await answerOf(phone.test, first.challengeId, 'approve', first.number), '403 not_activated', 'a deleted app approves nothing');
    assert.equal(await statusOf(first.challengeId), 'pending', 'the push still waits for the user’s other apps');
    assert.equal(String(await redis.get(RedisKeys.pendingPush(tag))).split('|')[0], first.challengeId, 'still the user’s pending push');
    assert.equal(await redis.hexists(RedisKeys.devicesUsed(tag), phone.nonce), 0, 'no use recorded for a device the user no longer has');
    // The user's other app answers it: its use recorded under its nonce, the deleted app's still absent.
    inFlight = undefined;
    assert.deepEqual(await answerOf(tablet.test, first.challengeId, 'approve', first.number), { status: 'approved' });
    assert.equal(await statusOf(first.challengeId), 'approved');
    assert.ok(Number(await redis.hget(RedisKeys.devicesUsed(tag), tablet.nonce)) > 0, 'the tablet’s use recorded');
    assert.equal(await redis.hexists(RedisKeys.devicesUsed(tag), phone.nonce), 0);

    // An app activated under an earlier master key (its id carries another tag): its use is recorded
    // under its nonce in the user's current slot, where the writer keeps and drops it.
    const second = await startPush(tenant, userId);
    assert.deepEqual(await answerOf(old.test, second.challengeId, 'approve', second.number), { status: 'approved' });
    assert.ok(Number(await redis.hget(RedisKeys.devicesUsed(tag), old.nonce)) > 0, 'the moved app’s use recorded at the current tag');
    assert.equal(await redis.exists(RedisKeys.devicesUsed(oldTag)), 0, 'nothing under the tag its id carries');
    // Deleted in flight too, with a denial: refused, the push not denied, no refusal counted, and its
    // field (dropped by the projection write) not written back.
    const third = await startPush(tenant, userId);
    inFlight = () => project([tablet]);
    assert.equal(await answerOf(old.test, third.challengeId, 'deny'), '403 not_activated', 'a deleted app denies nothing');
    assert.equal(await statusOf(third.challengeId), 'pending');
    assert.equal(await redis.zscore(RedisKeys.pushRefusals(tag), third.challengeId), null, 'no denial counted towards push fatigue');
    assert.deepEqual((await redis.hkeys(RedisKeys.devicesUsed(tag))).sort(), [tablet.nonce], 'only the app the user still has');

    // Erased in flight (the devices go with the user): denied method_not_registered as before, as
    // any verify of a push whose user was erased since its start is; no use recorded either.
    const erasedId = uniqueUser('erased-in-flight');
    const erasedTag = userTag(keyring, tenant, erasedId);
    const gone = await userWithDevice(tenant, erasedId, 'ES256', Date.now() - 86_400_000);
    const fourth = await startPush(tenant, erasedId);
    inFlight = () => writer.erase(tenant, erasedId, seq++);
    assert.deepEqual(await answerOf(gone, fourth.challengeId, 'approve', fourth.number), { status: 'denied', reason: 'method_not_registered' });
    assert.equal(await statusOf(fourth.challengeId), 'denied');
    assert.equal(await redis.exists(RedisKeys.devicesUsed(erasedTag)), 0);
  });

  itWith({ real: ['nats', 'redis'] }, 'a device not found in a slot Redis is rebuilding (no projection marker) is asked to come back: 503 unavailable with Retry-After, and the projection’s marker dropped (a rebuild); once the slot is complete, 403 not_activated', async () => {
    const pair = generateKeyPairSync('ed25519');
    const unknown: TestDevice = { deviceId: formatDeviceId(randomBytes(16).toString('base64url').slice(0, 22), randomBytes(16).toString('base64url').slice(0, 22)), algorithm: 'Ed25519', privateKey: pair.privateKey };
    const marker = RedisKeys.slotMarker(unknown.deviceId.split('.')[0]!);
    await redis.del(marker);
    try {
      const path = '/device/v1/challenges/pending';
      const res = await fetch(`${service.url}${path}`, { headers: signedHeaders(unknown, 'GET', path, '') });
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '5');
      assert.equal(((await res.json()) as Reply).error?.code, 'unavailable');
      // The projection's own marker stood (as when one node of a cluster came back empty): dropped,
      // so that user-settings rebuilds the slot's marker.
      assert.equal(await redis.exists(RedisKeys.userProjectionMarker), 0, 'the rebuild asked for');
    } finally {
      await redis.set(marker, '1');
      await writer.markComplete();
    }
    assert.deepEqual([(await pending(unknown)).status, (await pending(unknown)).body.error?.code], [403, 'not_activated']);
  });

  /** An IPv6 /64 no other run has used (documentation space), and an address in it. */
  const freshPrefix = () => `2001:db8:${randomBytes(2).toString('hex')}:${randomBytes(2).toString('hex')}`;

  itWith({ real: ['nats', 'redis'] }, 'a source that failed DEVICE_API_MAX_FAILURES_PER_WINDOW times gets 429 for what fails and for activations until its window ends, while what a device signed is served; other sources, and successes, are not counted', async () => {
    const unused = { pushAnswer: () => Promise.reject(new Error('not used here')) };
    const devices = new DeviceApiService(redis, new InternalRequests(nc, keyring), unused, { warn: () => undefined }, undefined, { maxPerWindow: 3, windowSeconds: 3 });
    const device = await userWithDevice(tenant, uniqueUser('throttled'));
    const path = '/device/v1/challenges/pending';
    const request = (source: string, opts: { path?: string; device?: TestDevice } = {}) => ({
      method: 'GET',
      path: opts.path ?? path,
      body: Buffer.alloc(0),
      headers: Object.fromEntries(Object.entries(signedHeaders(opts.device ?? device, 'GET', path, '')).map(([k, v]) => [k.toLowerCase(), v])),
      source,
    });
    const refusal = async (work: Promise<unknown>) => {
      try {
        await work;
        return 'served';
      } catch (error) {
        assert.ok(error instanceof DeviceApiError, String(error));
        return `${error.status} ${error.code}`;
      }
    };
    const [a, b, c, d] = [freshPrefix(), freshPrefix(), freshPrefix(), freshPrefix()];
    // Three failures of three kinds from one /64: a signature over another path, an unknown device, an activation that is not JSON.
    assert.equal(await refusal(devices.pending(request(`${a}::1`, { path: `${path}?changed` }))), '401 unauthenticated');
    const stranger = { ...device, deviceId: `${device.deviceId.split('.')[0]}.${randomBytes(16).toString('base64url')}` };
    assert.equal(await refusal(devices.pending(request(`${a}::2`, { device: stranger }))), '403 not_activated');
    assert.equal(await refusal(devices.activate(Buffer.from('code=K7QX'), `${a}::3`)), '400 invalid_request');
    // Over the limit: what fails from that /64 answers 429 with the wait, an unknown device and a bad signature alike.
    const refused = await devices.pending(request(`${a}::4`, { path: `${path}?changed` })).then(
      () => assert.fail('served'),
      (error: unknown) => error as DeviceApiError,
    );
    assert.deepEqual([refused.status, refused.code], [429, 'rate_limited']);
    assert.ok(refused.retryAfterSeconds! >= 1 && refused.retryAfterSeconds! <= 3, `Retry-After ${refused.retryAfterSeconds}`);
    assert.equal(await refusal(devices.pending(request(`${a}::4`, { device: stranger }))), '429 rate_limited');
    // Over the limit, a failure is not counted again: the window is fixed, and a flood costs no write.
    assert.equal(await redis.get(SourceFailureKeys.failures(ipLockKey(`${a}::1`)!)), '3');
    assert.equal(await refusal(devices.activate({ code: 'K7QX-M2PA-9VZD-4HTE' }, `${a}::5`)), '429 rate_limited', 'an activation, before it is asked');
    // A phone behind the same address (a carrier's NAT, an office's Wi-Fi) keeps approving: what its device signed is served.
    assert.equal(await refusal(devices.pending(request(`${a}::6`))), 'served');
    // Another source is served, and its failures are its own.
    assert.equal(await refusal(devices.pending(request(`${b}::1`))), 'served');
    assert.equal(await refusal(devices.pending(request(`${b}::1`, { path: `${path}?changed` }))), '401 unauthenticated');
    // Successes count nothing: far more than the limit, all served, nothing kept.
    for (let n = 0; n < 6; n++) assert.equal(await refusal(devices.pending(request(`${c}::1`))), 'served', `success ${n + 1}`);
    assert.equal(await redis.exists(SourceFailureKeys.failures(ipLockKey(`${c}::1`)!)), 0);
    // Nor does an activation the service could not ask (no user-settings here: 503): not the caller's failure.
    assert.equal(await refusal(devices.activate({ code: 'K7QX-M2PA-9VZD-4HTE', algorithm: 'ES256', publicKey: 'AAAA', proof: 'AAAA', platform: 'none' }, `${d}::1`)), '503 unavailable');
    assert.equal(await redis.exists(SourceFailureKeys.failures(ipLockKey(`${d}::1`)!)), 0);
    // Once the window ends, a failure from the source gets its own answer again.
    await eventually(async () => ((await refusal(devices.pending(request(`${a}::4`, { device: stranger })))) === '403 not_activated' ? true : undefined), 8000, 'the window ended');
  });

  itWith({ real: ['nats', 'redis'] }, 'over HTTP behind a trusted proxy: the address its X-Forwarded-For adds is the source; a failure from a source over its limit is 429 rate_limited with Retry-After, counted in mfa_device_api_requests_total', async () => {
    const device = await userWithDevice(tenant, uniqueUser('proxied'));
    const [flooding, other] = [`${freshPrefix()}::1`, `${freshPrefix()}::1`];
    // The source at the service's limit (DEVICE_API_MAX_FAILURES_PER_WINDOW, 1,000 by default), as its failures leave it.
    await redis.set(SourceFailureKeys.failures(ipLockKey(flooding)!), '1000', 'EX', 60);
    const from = (forwardedFor: string) => send(device, 'GET', '/device/v1/challenges/pending', '', { headers: { 'X-Forwarded-For': forwardedFor } });
    const res = await fetch(`${service.url}/device/v1/challenges/pending?changed`, { headers: { ...signedHeaders(device, 'GET', '/device/v1/challenges/pending', ''), 'X-Forwarded-For': flooding } });
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers.get('retry-after'));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${res.headers.get('retry-after')}`);
    const body = (await res.json()) as Reply;
    assert.equal(body.error?.code, 'rate_limited');
    assert.match(String(body.error?.message), /try again in \d+ s/);
    // The device's own request from that address is served all the same.
    assert.deepEqual((await from(flooding)).body, { challenge: null });
    // The address a client writes before the proxy's entry is not believed: the proxy added `other`.
    const forged = await fetch(`${service.url}/device/v1/challenges/pending?changed`, { headers: { ...signedHeaders(device, 'GET', '/device/v1/challenges/pending', ''), 'X-Forwarded-For': `${flooding}, ${other}` } });
    assert.equal(forged.status, 401, 'counted against the address the proxy added, which is under its limit');
    // A failure from a forwarded address counts against it (its /64), not against the proxy.
    const before = Number((await redis.get(SourceFailureKeys.failures(ipLockKey(other)!))) ?? '0');
    const bad = await fetch(`${service.url}/device/v1/challenges/pending?changed`, { headers: { ...signedHeaders(device, 'GET', '/device/v1/challenges/pending', ''), 'X-Forwarded-For': other } });
    assert.equal(bad.status, 401);
    assert.equal(Number(await redis.get(SourceFailureKeys.failures(ipLockKey(other)!))), before + 1);
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    assert.match(metrics, /mfa_device_api_requests_total\{[^}]*route="auth"[^}]*outcome="rate_limited"[^}]*\} [1-9]/);
  });

  itWith({ real: ['nats', 'redis'] }, 'DEVICE_API_FORWARDED_HEADER=forwarded: the address the proxy’s RFC 7239 Forwarded element names is the source, and X-Forwarded-For is not read', async () => {
    const proxied = await boot(loadAuthChallengeConfig({ ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test', DEVICE_API_FORWARDED_HEADER: 'forwarded' }));
    try {
      const device = await userWithDevice(tenant, uniqueUser('forwarded'));
      const [flooding, other] = [`${freshPrefix()}::1`, `${freshPrefix()}::1`];
      await redis.set(SourceFailureKeys.failures(ipLockKey(flooding)!), '1000', 'EX', 60);
      // A request whose signature does not cover its URL: a failure, answered 429 once its source is over its limit.
      const failing = async (headers: Record<string, string>) =>
        (await fetch(`${proxied.url}/device/v1/challenges/pending?changed`, { headers: { ...signedHeaders(device, 'GET', '/device/v1/challenges/pending', ''), ...headers } })).status;
      assert.equal(await failing({ Forwarded: `for="[${flooding}]:4711";proto=https` }), 429, 'the Forwarded element names the source');
      assert.equal(await failing({ 'X-Forwarded-For': flooding }), 401, 'X-Forwarded-For is not read: no source, nothing refused');
      // What a client writes before the proxy's element, even malformed, is not believed and does not hide it.
      assert.equal(await failing({ Forwarded: `for="[${flooding}]", for="[${other}]"` }), 401);
      assert.equal(await failing({ Forwarded: `for="oops\\, for="[${flooding}]"` }), 429, 'an unterminated quote before it does not hide the proxy’s element');
      const before = Number((await redis.get(SourceFailureKeys.failures(ipLockKey(other)!))) ?? '0');
      assert.equal(await failing({ Forwarded: `for=unknown;by=_x, for="[${other}]"` }), 401);
      assert.equal(Number(await redis.get(SourceFailureKeys.failures(ipLockKey(other)!))), before + 1, 'counted against the address the proxy named');
      // The proxy hides the client (for=unknown, an obfuscated name): the source is unknown, never the proxy's.
      assert.equal(await failing({ Forwarded: `for="[${flooding}]", for=_hidden` }), 401);
    } finally {
      await proxied.stop();
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'hostile input: unknown devices, missing headers, wrong types, non-ASCII digits, oversized bodies', async () => {
    const userId = uniqueUser('erin');
    const device = await userWithDevice(tenant, userId);
    const push = await startPush(tenant, userId);
    const path = `/device/v1/challenges/${push.challengeId}/answer`;
    const stranger = { ...device, deviceId: `${device.deviceId.split('.')[0]}.${randomBytes(16).toString('base64url')}` };
    const unknown = await pending(stranger);
    assert.deepEqual([unknown.status, unknown.body.error?.code, unknown.body.error?.message], [403, 'not_activated', 'Authentication request is not for an activated account']);
    const garbled = await pending({ ...device, deviceId: 'x'.repeat(600) });
    assert.deepEqual([garbled.status, garbled.body.error?.code], [403, 'not_activated']);
    const bare = await fetch(`${service.url}/device/v1/challenges/pending`);
    assert.equal(bare.status, 401);
    const cases: Array<[string, string, number]> = [
      ['fullwidth digits', JSON.stringify({ decision: 'approve', number: '４２', signature: signWith(device, DeviceSigned.answer(push.challengeId, 'approve', '４２')) }), 400],
      ['a number as a JSON number', JSON.stringify({ decision: 'approve', number: 42, signature: signWith(device, DeviceSigned.answer(push.challengeId, 'approve', '42')) }), 400],
      ['an unknown decision', JSON.stringify({ decision: 'maybe', signature: signWith(device, DeviceSigned.answer(push.challengeId, 'maybe', undefined)) }), 400],
      ['a number with a denial', JSON.stringify({ decision: 'deny', number: push.number, signature: signWith(device, DeviceSigned.answer(push.challengeId, 'deny', push.number)) }), 400],
      ['an extra field', JSON.stringify({ decision: 'deny', signature: signWith(device, DeviceSigned.answer(push.challengeId, 'deny', undefined)), tenantId: other }), 400],
      ['not JSON', 'decision=deny', 400],
      ['over 8 KiB', JSON.stringify({ decision: 'deny', signature: 'A'.repeat(9000) }), 413],
    ];
    for (const [what, body, status] of cases) {
      const refused = await send(device, 'POST', path, body);
      assert.equal(refused.status, status, what);
      assert.equal(refused.body.error?.code, 'invalid_request', what);
    }
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: push.challengeId })).status, 'pending', 'nothing decided by any of them');
  });
});
