import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import type { NatsConnection } from '@nats-io/nats-core';
import type { JetStreamManager, JsMsg } from '@nats-io/jetstream';
import {
  defaultTenantSettings,
  Consumers,
  EventSubjects,
  parseEvent,
  Streams,
  Subjects,
  type AnyEvent,
  type ErrorReply,
  type TotpEnrollReply,
} from '@mfa/contracts';
import {
  base32Decode,
  dataKeyGeneration,
  maskSecret,
  open,
  projectionUserKey,
  SealContext,
  totp,
  totpStep,
  userTag,
  type Keyring,
} from '@mfa/crypto';
import { connectNats, ensureConsumer, EventConsumer, EventPublisher, requestJson, type Delivery, type NatsClients } from '@mfa/messaging';
import { RedisKeys, UNREGISTERED_MARK_SECONDS, UserFields, UserProjectionWriter } from '@mfa/projection';
import { openPersonalData, runService, UserDataKeys, type RunningService } from '@mfa/service-kit';
import { createLogger, registry } from '@mfa/telemetry';
import { eventually, hasOathtool, itWith, oathtoolTotp, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';
import { EventStore } from './adapters/event-store.js';
import { RememberedBrowsers } from './adapters/remembered-browsers.js';
import { AppModule } from './app.module.js';
import { RESET_REACH_MS, UserProjector } from './application/user-projector.js';
import { UserSettingsService } from './application/user-settings.service.js';
import { AggregateLoader, SNAPSHOT_EVERY, USER_SNAPSHOT_VERSION } from './application/aggregate-loader.js';
import { UserEventCodec } from './application/user-events.codec.js';
import { SnapshotStore } from './adapters/snapshot-store.js';
import { loadUserSettingsConfig, type UserSettingsConfig } from './config.js';

// Quiet service logs unless asked for (loggers read it when they are created, in before()).
process.env.LOG_LEVEL ??= 'error';

let service: RunningService;
let config: UserSettingsConfig;
let keyring: Keyring;
let nats: NatsClients;
let nc: NatsConnection;
let jsm: JetStreamManager;
let redis: Redis;

const request = <T>(subject: string, body: unknown) => requestJson<T>(nc, subject, body, { timeoutMs: 10_000 });

async function expectError(subject: string, body: unknown, code: string): Promise<void> {
  const reply = await request<ErrorReply>(subject, body);
  assert.equal(reply.error?.code, code, `${subject} ${JSON.stringify(body).slice(0, 80)} -> ${JSON.stringify(reply)}`);
}

/** Raw bytes and parsed events of one aggregate subject, straight from the stream. */
async function storedMessages(subject: string): Promise<Array<{ raw: Uint8Array; event: AnyEvent }>> {
  const out: Array<{ raw: Uint8Array; event: AnyEvent }> = [];
  for (let seq = 1; ; ) {
    const msg = await jsm.direct.getMessage(Streams.userSettings.name, { seq, next_by_subj: subject });
    if (!msg) return out;
    out.push({ raw: msg.data, event: parseEvent(msg.json()) });
    seq = msg.seq + 1;
  }
}
const typesOf = async (subject: string) => (await storedMessages(subject)).map((m) => m.event.type);

/** An event's data with its `pii` opened under the user's data key, as the deciders see it. */
async function inClear(event: AnyEvent): Promise<Record<string, unknown>> {
  const { pii, ...plain } = event.data as { pii?: string };
  if (!pii) return plain;
  const key = await service.app.get(UserDataKeys).get(event.tenantId, event.aggregateId, dataKeyGeneration(pii)!);
  assert.ok(key && key !== 'erased', 'the data key of a stored event');
  return { ...plain, ...openPersonalData(key, { tenantId: event.tenantId, userId: event.aggregateId, purpose: 'profile' }, pii) };
}

function codeFor(secretBase32: string): string {
  // oathtool is an independent implementation; without it, @mfa/crypto's RFC 6238 code.
  return hasOathtool() ? oathtoolTotp(secretBase32) : totp(base32Decode(secretBase32), Date.now());
}

/** Waits until the service's durable projector has handled every event so far. */
async function projectorCaughtUp(): Promise<void> {
  await eventually(
    async () => {
      const info = await jsm.consumers.info(Consumers.userProjector.stream, Consumers.userProjector.durable);
      return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
    },
    30_000,
    'the durable projector to catch up',
  );
}

function keysOf(tenantId: string, userId: string) {
  const tag = userTag(keyring, tenantId, userId);
  return { tag, user: RedisKeys.user(tag), totp: RedisKeys.totp(tag), steps: RedisKeys.totpSteps(tag) };
}

before(async () => {
  config = loadUserSettingsConfig({ ...process.env, HTTP_PORT: '0', NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl });
  keyring = config.keyring;
  const log = createLogger('user-settings-test');
  service = await runService({ name: 'user-settings', module: AppModule.forRoot(config, log), config, log });
  nats = await connectNats({ url: testEnv.natsUrl, name: 'user-settings-int-test' });
  nc = nats.nc;
  jsm = nats.jsm;
  redis = new Redis(testEnv.redisUrl);
});

after(async () => {
  await service?.stop();
  await nc?.close();
  redis?.disconnect();
});

/** A user hash without its pre-sealed challenge data, whose random IV differs on every write (its presence is kept). */
function withoutIv(user: Record<string, string>): Record<string, string> {
  const { challengePii, ...rest } = user;
  return { ...rest, challengePii: challengePii ? 'sealed' : 'missing' };
}

describe('user-settings over NATS', () => {
  const tenantId = uniqueTenant('us');
  const userId = uniqueUser('helga');
  let enrollment: TotpEnrollReply;

  itWith({ real: ['nats', 'redis'] }, 'answers health with NATS and Redis up', async () => {
    const res = await fetch(`${service.url}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as { checks: unknown }).checks, { nats: 'ok', redis: 'ok' });
  });

  itWith({ real: ['nats', 'redis'] }, 'registers a user, creating the tenant, and projects the user into Redis before replying', async () => {
    const reply = await request(Subjects.usersRegister, {
      tenantId,
      userId,
      displayName: 'Helga Nordin',
      email: 'helga@contoso.com',
      phoneNumber: '+46701234567',
      language: 'sv-SE',
    });
    assert.deepEqual(reply, { userId, methods: ['sms', 'voice'] });
    const user = await redis.hgetall(keysOf(tenantId, userId).user);
    assert.equal(user.tenantId, tenantId);
    assert.equal(user.userId, userId);
    assert.equal(user.displayName, 'Helga Nordin');
    assert.equal(user.email, 'helga@contoso.com');
    assert.equal(user.phoneNumber, '+46701234567');
    assert.equal(user.language, 'sv-SE');
    assert.equal(user.methods, 'sms,voice');
    assert.equal(user.defaultMethod, 'sms');
    assert.ok(Number(user.seq) > 0);
    assert.deepEqual(await typesOf(EventSubjects.tenant(tenantId)), ['TenantCreated']);
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, userId)), ['UserRegistered']);
  });

  itWith({ real: ['nats', 'redis'] }, 'is idempotent on the same profile and records only changed fields', async () => {
    assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId, email: 'helga@contoso.com' }), { userId, methods: ['sms', 'voice'] });
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, userId)), ['UserRegistered']);
    await request(Subjects.usersRegister, { tenantId, userId, displayName: 'Helga N.' });
    const stored = await storedMessages(EventSubjects.user(tenantId, userId));
    assert.deepEqual(
      await Promise.all(stored.map(async (m) => [m.event.type, m.event.version, await inClear(m.event)])),
      [
        ['UserRegistered', 2, { userId, displayName: 'Helga Nordin', email: 'helga@contoso.com', phoneNumber: '+46701234567', language: 'sv-SE' }],
        ['UserProfileChanged', 2, { displayName: 'Helga N.' }],
      ],
    );
    assert.equal(await redis.hget(keysOf(tenantId, userId).user, 'displayName'), 'Helga N.');
  });

  itWith({ real: ['nats', 'redis'] }, 'enrolls a TOTP token with a Base32 secret and a complete otpauth URI', async () => {
    enrollment = await request<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId, label: 'Helga phone' });
    assert.match(enrollment.tokenId, /^[A-Za-z0-9_-]{16}$/);
    assert.match(enrollment.secret, /^[A-Z2-7]{32}$/, 'Base32 of 20 bytes, no padding');
    assert.equal(base32Decode(enrollment.secret).length, 20);
    assert.deepEqual([enrollment.digits, enrollment.period, enrollment.algorithm], [6, 30, 'SHA1']);
    const issuer = encodeURIComponent(config.MFA_TOTP_ISSUER);
    assert.equal(
      enrollment.otpauthUri,
      `otpauth://totp/${issuer}:Helga%20phone?secret=${enrollment.secret}&issuer=${issuer}&algorithm=SHA1&digits=6&period=30`,
    );
  });

  itWith({ real: ['nats', 'redis'] }, 'answers active=false for a wrong code, without recording anything', async () => {
    const before = await typesOf(EventSubjects.user(tenantId, userId));
    const right = codeFor(enrollment.secret);
    const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, '0');
    const reply = await request(Subjects.totpActivate, { tenantId, userId, tokenId: enrollment.tokenId, code: wrong });
    assert.deepEqual(reply, { tokenId: enrollment.tokenId, active: false });
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, userId)), before);
  });

  itWith({ real: ['nats', 'redis'] }, 'activates with the current code and projects the token and its step into Redis', async () => {
    const code = codeFor(enrollment.secret);
    const stepAtRequest = totpStep(Date.now());
    const reply = await request(Subjects.totpActivate, { tenantId, userId, tokenId: enrollment.tokenId, code });
    assert.deepEqual(reply, { tokenId: enrollment.tokenId, active: true });

    const stored = await storedMessages(EventSubjects.user(tenantId, userId));
    const activated = stored.at(-1)!.event;
    assert.equal(activated.type, 'TotpTokenActivated');
    const step = (activated.data as { step: number }).step;
    assert.ok(Math.abs(step - stepAtRequest) <= 1);

    const keys = keysOf(tenantId, userId);
    const user = await redis.hgetall(keys.user);
    assert.equal(user.methods, 'totp,sms,voice');
    assert.equal(user.defaultMethod, 'totp');
    const spec = await redis.hget(keys.totp, enrollment.tokenId);
    assert.ok(spec, 'token projected');
    const [digits, period, nonceHex, maskedHex] = spec.split(':') as [string, string, string, string];
    assert.deepEqual([digits, period], ['6', '30']);
    // The projection holds the secret masked with the per-user key: unmasking gives it back.
    const unmasked = maskSecret(projectionUserKey(keyring, keys.tag), Buffer.from(nonceHex, 'hex'), Buffer.from(maskedHex, 'hex'));
    assert.deepEqual(unmasked, base32Decode(enrollment.secret));
    assert.equal(await redis.hget(keys.steps, enrollment.tokenId), String(step));
  });

  itWith({ real: ['nats', 'redis'] }, 'refuses to activate the same token again', async () => {
    await expectError(Subjects.totpActivate, { tenantId, userId, tokenId: enrollment.tokenId, code: codeFor(enrollment.secret) }, 'conflict');
  });

  // Reads the stored events only.
  itWith({ real: ['nats'] }, 'never stores the plaintext secret: events carry it sealed', async () => {
    const secret = base32Decode(enrollment.secret);
    const forbidden = [enrollment.secret, secret.toString('hex'), secret.toString('base64'), secret.toString('base64url')];
    const stored = await storedMessages(EventSubjects.user(tenantId, userId));
    for (const { raw } of stored) {
      const text = Buffer.from(raw).toString('latin1');
      for (const needle of forbidden) assert.ok(!text.includes(needle), 'secret found in a stored event');
      assert.ok(!Buffer.from(raw).includes(secret), 'raw secret bytes found in a stored event');
    }
    const enrolled = stored.find((m) => m.event.type === 'TotpTokenEnrolled')!.event as Extract<AnyEvent, { type: 'TotpTokenEnrolled' }>;
    const opened = open(keyring, enrolled.data.sealedSecret, SealContext.totpSecret(tenantId, userId, enrollment.tokenId));
    assert.deepEqual(opened, secret);
    assert.throws(() => open(keyring, enrolled.data.sealedSecret, SealContext.totpSecret(tenantId, 'someone-else', enrollment.tokenId)));
  });

  itWith({ real: ['nats', 'redis'] }, 'allows 5 tokens (active or pending) and answers conflict for the 6th', async () => {
    for (let i = 0; i < 4; i++) {
      const reply = await request<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId });
      assert.ok(reply.tokenId);
      assert.match(reply.otpauthUri, new RegExp(`:${encodeURIComponent(userId)}\\?`), 'label defaults to the user id');
    }
    await expectError(Subjects.totpEnroll, { tenantId, userId }, 'conflict');
    const enrolled = (await typesOf(EventSubjects.user(tenantId, userId))).filter((t) => t === 'TotpTokenEnrolled');
    assert.equal(enrolled.length, 5);
  });

  itWith({ real: ['nats', 'redis'] }, 'rebuilds deleted Redis keys when the projector replays the stream', async () => {
    const keys = keysOf(tenantId, userId);
    const before = {
      user: await redis.hgetall(keys.user),
      totp: await redis.hkeys(keys.totp),
      steps: await redis.hgetall(keys.steps),
    };
    // Let the durable projector finish with these events first, so it cannot be what restores them.
    await projectorCaughtUp();
    await redis.del(keys.user, keys.totp, keys.steps);
    assert.equal(await redis.exists(keys.user, keys.totp, keys.steps), 0);

    // A fresh durable over this user's subject replays its events through the service's projector.
    const replay = { ...Consumers.userProjector, durable: `replay-${keys.tag}`, filterSubject: EventSubjects.user(tenantId, userId) };
    await ensureConsumer(jsm, replay);
    const projector = service.app.get(UserProjector);
    const consumer = new EventConsumer({
      js: nats.js,
      definition: replay,
      log: createLogger('replay-test'),
      batchSize: 100,
      handle: (d) => projector.handle(d),
    });
    try {
      await consumer.start();
      await eventually(async () => ((await redis.exists(keys.user, keys.totp, keys.steps)) === 3 ? true : undefined), 10_000, 'rebuilt keys');
    } finally {
      await consumer.stop();
      await jsm.consumers.delete(replay.stream, replay.durable).catch(() => undefined);
    }
    assert.deepEqual(withoutIv(await redis.hgetall(keys.user)), withoutIv(before.user));
    assert.deepEqual(await redis.hkeys(keys.totp), before.totp);
    assert.deepEqual(await redis.hgetall(keys.steps), before.steps);
  });

  itWith({ real: ['nats', 'redis'] }, 'the projector rebuilds only the users Redis does not hold whole at their event', async () => {
    await projectorCaughtUp();
    const keys = keysOf(tenantId, userId);
    const subject = EventSubjects.user(tenantId, userId);
    // The user's events with their stream sequences, as the durable consumer hands them over.
    const deliveries: Delivery[] = [];
    for (let seq = 1; ; ) {
      const msg = await jsm.direct.getMessage(Streams.userSettings.name, { seq, next_by_subj: subject });
      if (!msg) break;
      deliveries.push({ event: parseEvent(msg.json()), msg: { subject, info: { streamSequence: msg.seq } } as unknown as JsMsg });
      seq = msg.seq + 1;
    }
    const last = deliveries.at(-1)!.msg.info.streamSequence;
    assert.equal(await redis.hget(keys.user, 'seq'), String(last), 'the commands projected the user at their last event');
    const projector = service.app.get(UserProjector);
    // What the projector did with the users it was handed (the durable one is idle: caught up).
    const handled = async () => {
      const values = (await registry.getSingleMetric('mfa_user_projector_users_total')?.get())?.values ?? [];
      const of = (outcome: string) => values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
      return { current: of('current'), rebuilt: of('rebuilt') };
    };
    // A field no snapshot writes: a rebuild that writes the hash takes it away.
    const mark = 'test-mark';
    try {
      await redis.hset(keys.user, mark, '1');
      let before = await handled();
      await projector.handle(deliveries);
      assert.deepEqual(await handled(), { current: before.current + 1, rebuilt: before.rebuilt }, 'a user already whole at the event is not rebuilt');
      assert.equal(await redis.hget(keys.user, mark), '1');

      // A command that stopped between its event and its write left an older snapshot: rebuilt.
      await redis.hset(keys.user, 'seq', String(last - 1));
      before = await handled();
      await projector.handle(deliveries);
      assert.deepEqual(await handled(), { current: before.current, rebuilt: before.rebuilt + 1 });
      assert.equal(await redis.hget(keys.user, mark), null, 'rewritten');
      assert.equal(await redis.hget(keys.user, 'seq'), String(last));

      // Missing from users.list's index: rebuilt, back in it (the snapshot itself is the same one).
      await redis.hdel(RedisKeys.userIndexTerms(tenantId), userId);
      before = await handled();
      await projector.handle(deliveries);
      assert.deepEqual(await handled(), { current: before.current, rebuilt: before.rebuilt + 1 });
      assert.equal(await redis.hexists(RedisKeys.userIndexTerms(tenantId), userId), 1, 'back in the index');
    } finally {
      await redis.hdel(keys.user, mark);
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'rebuilds a projection Redis lost while it runs, then marks it complete again', async () => {
    const keys = keysOf(tenantId, userId);
    const before = await redis.hgetall(keys.user);
    await projectorCaughtUp();
    const slotMarker = RedisKeys.slotMarker(keys.tag);
    await redis.del(keys.user, keys.totp, keys.steps, RedisKeys.userProjectionMarker, slotMarker);
    // No restart: the running instance notices within a second and replays the log into Redis.
    await eventually(async () => ((await redis.exists(RedisKeys.userProjectionMarker, slotMarker)) === 2 ? true : undefined), 120_000, 'markers back');
    assert.equal(await redis.exists(keys.user, keys.totp, keys.steps), 3, 'the user is projected before the markers return');
    assert.deepEqual(withoutIv(await redis.hgetall(keys.user)), withoutIv(before));
  });

  itWith({ real: ['nats', 'redis'] }, 'stops taking activation codes for a token after 5 wrong ones', async () => {
    const other = `guess.${Date.now()}@contoso.example`;
    await request(Subjects.usersRegister, { tenantId, userId: other });
    const token = (await request(Subjects.totpEnroll, { tenantId, userId: other })) as { tokenId: string; secret: string };
    const right = codeFor(token.secret);
    const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, '0');
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(await request(Subjects.totpActivate, { tenantId, userId: other, tokenId: token.tokenId, code: wrong }), {
        tokenId: token.tokenId,
        active: false,
      });
    }
    const blocked = (await request(Subjects.totpActivate, { tenantId, userId: other, tokenId: token.tokenId, code: right })) as {
      error?: { code: string };
    };
    assert.equal(blocked.error?.code, 'rate_limited');
  });

  itWith({ real: ['nats', 'redis'] }, 'counts activation attempts atomically: 10 concurrent guesses get 5 checks', async () => {
    const other = `race.${Date.now()}@contoso.example`;
    await request(Subjects.usersRegister, { tenantId, userId: other });
    const token = (await request(Subjects.totpEnroll, { tenantId, userId: other })) as { tokenId: string; secret: string };
    const right = codeFor(token.secret);
    const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, '0');
    const replies = (await Promise.all(
      Array.from({ length: 10 }, () => request(Subjects.totpActivate, { tenantId, userId: other, tokenId: token.tokenId, code: wrong })),
    )) as Array<{ active?: boolean; error?: { code: string } }>;
    assert.equal(replies.filter((r) => r.active === false).length, 5);
    assert.equal(replies.filter((r) => r.error?.code === 'rate_limited').length, 5);
    const after = (await request(Subjects.totpActivate, { tenantId, userId: other, tokenId: token.tokenId, code: right })) as { error?: { code: string } };
    assert.equal(after.error?.code, 'rate_limited');
  });

  // Tenant commands are stored events only; nothing of a tenant is projected into Redis.
  itWith({ real: ['nats'] }, 'configures tenant settings as a partial update', async () => {
    const tenant = uniqueTenant('cfg');
    const first = await request(Subjects.tenantsConfigure, { tenantId: tenant, settings: { maxAttempts: 3 } });
    assert.deepEqual(first, { tenantId: tenant, settings: { ...defaultTenantSettings(), maxAttempts: 3 } });
    const second = await request(Subjects.tenantsConfigure, { tenantId: tenant, settings: { codeLifetimeSeconds: 300, lockout: { threshold: 4 } } });
    const expected = { ...defaultTenantSettings(), codeLifetimeSeconds: 300, maxAttempts: 3, lockout: { threshold: 4, counterResetMinutes: 15, autoUnblockMinutes: 15 } };
    assert.deepEqual(second, { tenantId: tenant, settings: expected });
    await request(Subjects.tenantsConfigure, { tenantId: tenant, settings: { codeLifetimeSeconds: 300 } });
    assert.deepEqual(await typesOf(EventSubjects.tenant(tenant)), ['TenantCreated', 'TenantSettingsChanged']);
    // tenants.get answers every setting, defaults included.
    assert.deepEqual(await request(Subjects.tenantsGet, { tenantId: tenant }), { tenantId: tenant, settings: expected });
    assert.equal((await request(Subjects.tenantsGet, { tenantId: uniqueTenant('none') }) as { error: { code: string } }).error.code, 'not_found');
    // An unknown or misspelled setting is refused by name and changes nothing.
    const refused = (await request(Subjects.tenantsConfigure, { tenantId: tenant, settings: { maxAtempts: 2, trustedIps: { range: [] } } })) as {
      error: { code: string; message: string };
    };
    assert.equal(refused.error.code, 'invalid_request');
    assert.match(refused.error.message, /maxAtempts/);
    assert.match(refused.error.message, /range/);
    assert.deepEqual(await typesOf(EventSubjects.tenant(tenant)), ['TenantCreated', 'TenantSettingsChanged']);
  });

  itWith({ real: ['nats', 'redis'] }, 'lets two concurrent registers of a new user both succeed, storing one UserRegistered', async () => {
    const tenant = uniqueTenant('race');
    const user = uniqueUser('race');
    const body = { tenantId: tenant, userId: user, phoneNumber: '+14155550123' };
    const replies = await Promise.all([1, 2, 3].map(() => request(Subjects.usersRegister, body)));
    for (const reply of replies) assert.deepEqual(reply, { userId: user, methods: ['sms', 'voice'] });
    assert.deepEqual(await typesOf(EventSubjects.user(tenant, user)), ['UserRegistered']);
    assert.deepEqual(await typesOf(EventSubjects.tenant(tenant)), ['TenantCreated']);
  });
});

describe('users.delete: crypto-shredding', () => {
  const tenantId = uniqueTenant('erase');
  const userId = uniqueUser('erase');
  const personal = { displayName: 'Ingrid Bergström', email: 'ingrid.bergstrom@fabrikam.example', phoneNumber: '+46709876543' };
  const keysStore = () => service.app.get(UserDataKeys);
  let firstKey: { gen: number; wrapped: string };

  /** Whether any of the personal values appears in `bytes`, in clear. */
  const leaks = (bytes: Uint8Array) => {
    const text = Buffer.from(bytes).toString('latin1');
    return Object.values(personal).filter((v) => text.includes(v) || text.includes(JSON.stringify(v).slice(1, -1)));
  };

  itWith({ real: ['nats', 'redis'] }, 'answers not_found for an unknown tenant or user, and records nothing', async () => {
    await expectError(Subjects.usersDelete, { tenantId: uniqueTenant('ghost'), userId }, 'not_found');
    await request(Subjects.tenantsConfigure, { tenantId, settings: {} });
    await expectError(Subjects.usersDelete, { tenantId, userId: 'nobody@contoso.example' }, 'not_found');
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, 'nobody@contoso.example')), []);
  });

  itWith({ real: ['nats', 'redis'] }, 'seals the personal data of user events under the user’s data key', async () => {
    await request(Subjects.usersRegister, { tenantId, userId, ...personal, language: 'sv-SE' });
    await request(Subjects.totpEnroll, { tenantId, userId, label: 'work phone' });
    const stored = await storedMessages(EventSubjects.user(tenantId, userId));
    assert.deepEqual(stored.map((m) => [m.event.type, m.event.version]), [['UserRegistered', 2], ['TotpTokenEnrolled', 1]]);
    for (const { raw } of stored) assert.deepEqual(leaks(raw), []);
    assert.deepEqual(await inClear(stored[0]!.event), { userId, ...personal, language: 'sv-SE' });
    const current = await keysStore().current(tenantId, userId);
    assert.equal(current?.kind, 'key');
    firstKey = { gen: current!.gen, wrapped: (current as { dataKey: { wrapped: string } }).dataKey.wrapped };
    assert.equal(await redis.hget(keysOf(tenantId, userId).user, 'dataKey'), `${firstKey.gen}:${firstKey.wrapped}`);
  });

  itWith({ real: ['nats', 'redis'] }, 'erases: UserErased, the key destroyed, the Redis projection reduced to a tombstone', async () => {
    const pii = (await storedMessages(EventSubjects.user(tenantId, userId)))[0]!.event.data as { pii: string };
    // What the user's sign-ins left (auth-challenge and dispatch write these): a remembered
    // browser and the last MFA would let a user registered later under this id skip MFA.
    const { tag } = keysOf(tenantId, userId);
    const signins = [RedisKeys.remembered(tag), RedisKeys.lastMfa(tag), RedisKeys.devicesUsed(tag), RedisKeys.failedMethods(tag)];
    await redis.hset(RedisKeys.remembered(tag), 'rememberid', `${Date.now() + 86_400_000}:${Date.now()}`);
    await redis.set(RedisKeys.lastMfa(tag), String(Date.now()));
    await redis.hset(RedisKeys.devicesUsed(tag), 'devicenonce', String(Date.now()));
    await redis.hset(RedisKeys.failedMethods(tag), 'sms', String(Date.now() + 600_000));
    // Counters that protect the account stay.
    await redis.set(RedisKeys.consecutiveFailures(tag), '3');
    assert.deepEqual(await request(Subjects.usersDelete, { tenantId, userId }), { userId, deleted: true });
    const stored = await storedMessages(EventSubjects.user(tenantId, userId));
    assert.deepEqual(stored.map((m) => m.event.type), ['UserRegistered', 'TotpTokenEnrolled', 'UserErased']);
    assert.deepEqual(stored[2]!.event.data, { userId, gen: firstKey.gen });
    // The log is unchanged, and what it holds of the user no longer opens.
    assert.equal(await new UserDataKeys(nats, keyring).get(tenantId, userId, dataKeyGeneration(pii.pii)!), 'erased');
    const entry = await keysStore().current(tenantId, userId);
    assert.deepEqual([entry?.kind, entry?.gen], ['erased', firstKey.gen]);
    // Redis: nothing of the user but the sequence of the erasure.
    const keys = keysOf(tenantId, userId);
    const seqOfErasure = (await jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.user(tenantId, userId) }))!.seq;
    assert.deepEqual(await redis.hgetall(keys.user), { seq: String(seqOfErasure) });
    assert.equal(await redis.exists(keys.totp, keys.steps), 0);
    assert.equal(await redis.exists(...signins), 0, 'remembered browsers, the last MFA, device use and failed methods erased');
    assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '3');
    await redis.del(RedisKeys.consecutiveFailures(tag));
    // A snapshot from before the erasure cannot bring the user back.
    const writer = service.app.get(UserProjectionWriter);
    assert.equal(await writer.apply({ tenantId, userId, seq: seqOfErasure - 1, methods: ['sms'], phoneNumber: personal.phoneNumber, totpTokens: [] }), false);
    assert.deepEqual(await redis.hgetall(keys.user), { seq: String(seqOfErasure) });
    // The user is gone for every command.
    await expectError(Subjects.totpEnroll, { tenantId, userId }, 'not_found');
  });

  itWith({ real: ['nats', 'redis'] }, 'answers deleted again for an erased user, recording nothing new', async () => {
    assert.deepEqual(await request(Subjects.usersDelete, { tenantId, userId }), { userId, deleted: true });
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, userId)), ['UserRegistered', 'TotpTokenEnrolled', 'UserErased']);
  });

  itWith({ real: ['nats', 'redis'] }, 'registers the same user id again as a new user, with a new data key', async () => {
    const reply = await request(Subjects.usersRegister, { tenantId, userId, displayName: 'Ingrid B.' });
    assert.deepEqual(reply, { userId, methods: [] }, 'no phone and no token from before');
    const stored = await storedMessages(EventSubjects.user(tenantId, userId));
    assert.deepEqual(stored.map((m) => m.event.type), ['UserRegistered', 'TotpTokenEnrolled', 'UserErased', 'UserRegistered']);
    const renewed = stored[3]!.event;
    assert.deepEqual(await inClear(renewed), { userId, displayName: 'Ingrid B.' });
    assert.equal(dataKeyGeneration((renewed.data as { pii: string }).pii), firstKey.gen + 1);
    const dataKey = await redis.hget(keysOf(tenantId, userId).user, 'dataKey');
    assert.match(String(dataKey), new RegExp(`^${firstKey.gen + 1}:`));
    assert.notEqual(dataKey, `${firstKey.gen}:${firstKey.wrapped}`);
  });

  itWith({ real: ['nats', 'redis'] }, 'a users.register that completes an erasure only the key store held is in the audit trail (erasure_completed, the caller, the user); a register that erases nothing is not', async () => {
    const who = uniqueUser('restored');
    await request(Subjects.usersRegister, { tenantId, userId: who, displayName: 'Sven Återställd' });
    const audited = async () => {
      const out: Array<Record<string, unknown>> = [];
      for (let seq = 1; ; ) {
        const msg = await jsm.direct.getMessage(Streams.audit.name, { seq, next_by_subj: EventSubjects.audit(tenantId) });
        if (!msg) return out.filter((d) => d.userId === who);
        out.push((parseEvent(msg.json()) as { data: Record<string, unknown> }).data);
        seq = msg.seq + 1;
      }
    };
    assert.deepEqual(await audited(), [], 'an IdP registering a user is not audited');
    // The key store erased the user, the log does not record it (a restore from two moments).
    await keysStore().erase(tenantId, who, 1, new Date());
    assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId: who, displayName: 'Sven Ny' }), { userId: who, methods: [] });
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, who)), ['UserRegistered', 'UserErased', 'UserRegistered']);
    const record = await eventually(async () => (await audited())[0], 10_000, 'the audit record');
    assert.deepEqual(record, { subject: Subjects.usersRegister, clientId: 'anonymous', userId: who, outcome: 'erasure_completed' });
    // Registering again erases nothing: no second record.
    await request(Subjects.usersRegister, { tenantId, userId: who, displayName: 'Sven Ny' });
    assert.equal((await audited()).length, 1);
  });

  itWith({ real: ['nats', 'redis'] }, 'a command that loaded the user before the erasure never writes its snapshot after it (erasure wins whatever the order)', async () => {
    const racer = uniqueUser('race');
    const subject = EventSubjects.user(tenantId, racer);
    const stateSubject = EventSubjects.snapshot(subject);
    const store = service.app.get(EventStore);
    const writer = service.app.get(UserProjectionWriter);
    const snapshots = service.app.get(SnapshotStore);
    // Enough events that a load of them writes a snapshot; this service writes none on the way.
    const plain = new UserSettingsService({ store, projection: writer, keyring, keys: keysStore(), log: createLogger('user-settings-test'), autoCreateTenants: false, totpIssuer: 'Open MFA' });
    await plain.register({ tenantId, userId: racer, ...personal }, new Date());
    await plain.enrollTotp({ tenantId, userId: racer, label: 'phone' }, new Date());
    for (let i = 0; i < SNAPSHOT_EVERY; i++) await plain.register({ tenantId, userId: racer, ...personal, displayName: `${personal.displayName} ${i}` }, new Date());
    // Another instance (its own data-key cache) loads the user for a read-only command...
    const keysOfOther = new UserDataKeys(nats, keyring);
    const other = new AggregateLoader(store, new UserEventCodec(keysOfOther), keysOfOther, new SnapshotStore(nats.js, nats.jsm));
    const ref = { kind: 'user' as const, subject, tenantId, aggregateId: racer };
    // (As one that read many events: the service's projector may have left a snapshot meanwhile.)
    const loaded = { ...(await other.loadUser(ref)), eventsRead: SNAPSHOT_EVERY };
    assert.ok(loaded.state.registered && loaded.state.tokens.length === 1);
    // ...the user is erased meanwhile, then that command remembers what it loaded.
    assert.deepEqual(await request(Subjects.usersDelete, { tenantId, userId: racer }), { userId: racer, deleted: true });
    await other.rememberUser(ref, loaded, loaded.state, loaded.lastSeq);
    const held = (await jsm.direct.getMessage(Streams.state.name, { last_by_subj: stateSubject }))?.json<Record<string, unknown>>();
    assert.equal(held?.state, undefined, `a snapshot written after the erasure holds the erased user's tokens, devices and sealed profile: ${JSON.stringify(held).slice(0, 160)}`);
    const erasedSeq = (await jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: subject }))!.seq;
    assert.deepEqual(held, { erased: erasedSeq }, 'the erasure’s tombstone');
    // Nor when its load read the tombstone but events from before the erasure (a replica behind).
    const tombstone = await snapshots.read(subject, USER_SNAPSHOT_VERSION);
    await other.rememberUser(ref, { ...loaded, snapshotAt: { revision: tombstone.revision, erasedSeq: tombstone.erasedSeq! } }, loaded.state, loaded.lastSeq);
    assert.deepEqual((await jsm.direct.getMessage(Streams.state.name, { last_by_subj: stateSubject }))?.json(), { erased: erasedSeq });
    // The same id registered again gets snapshots again.
    const service2 = new UserSettingsService({ store, projection: writer, keyring, keys: keysStore(), log: createLogger('user-settings-test'), autoCreateTenants: false, totpIssuer: 'Open MFA', snapshots });
    for (let i = 0; i <= SNAPSHOT_EVERY; i++) await service2.register({ tenantId, userId: racer, displayName: `Again ${i}` }, new Date());
    const renewed = await snapshots.get<{ state: { registered?: boolean } }>(subject, USER_SNAPSHOT_VERSION);
    assert.ok(renewed && renewed.seq > erasedSeq && renewed.state.state.registered, 'a snapshot of the new registration');
  });

  itWith({ real: ['nats', 'redis'] }, 'completes an erasure that was recorded but not carried out (the projector shreds on UserErased)', async () => {
    const other = uniqueUser('crash');
    await request(Subjects.usersRegister, { tenantId, userId: other, ...personal });
    // A service whose shredding fails after UserErased was appended, as if it crashed there.
    class FailingKeys extends UserDataKeys {
      override async erase(): Promise<void> {
        throw new Error('crashed before shredding');
      }
    }
    const crashing = new UserSettingsService({
      store: service.app.get(EventStore),
      projection: service.app.get(UserProjectionWriter),
      keyring,
      keys: new FailingKeys(nats, keyring),
      log: createLogger('user-settings-test'),
      autoCreateTenants: false,
      totpIssuer: 'Open MFA',
    });
    await assert.rejects(crashing.delete({ tenantId, userId: other }, new Date()), { code: 'unavailable' });
    assert.deepEqual(await typesOf(EventSubjects.user(tenantId, other)), ['UserRegistered', 'UserErased']);
    // The service's durable projector handles UserErased and finishes the job.
    await eventually(async () => ((await keysStore().current(tenantId, other))?.kind === 'erased' ? true : undefined), 10_000, 'the key destroyed');
    await eventually(async () => (Object.keys(await redis.hgetall(keysOf(tenantId, other).user)).join() === 'seq' ? true : undefined), 10_000, 'the Redis tombstone');
  });
});

describe('user-settings bad input', () => {
  const tenantId = uniqueTenant('bad');
  const userId = uniqueUser('bad');
  const big = 'x'.repeat(17 * 1024);

  before(async () => {
    await request(Subjects.usersRegister, { tenantId, userId });
  });

  const subjects = [Subjects.usersRegister, Subjects.totpEnroll, Subjects.totpActivate, Subjects.tenantsConfigure];

  // This and the next test are refused by the contract pipe before any handler runs: only NATS.
  itWith({ real: ['nats'] }, 'answers invalid_request to malformed JSON, non-objects and oversized bodies on every subject', async () => {
    for (const subject of subjects) {
      for (const body of ['{"tenantId":', 'not json', '[1,2]', 'null', '"text"', '\u00ff\u00fe']) {
        await expectError(subject, body, 'invalid_request');
      }
      await expectError(subject, new Uint8Array([0xff, 0xfe, 0x00]), 'invalid_request');
      await expectError(subject, JSON.stringify({ tenantId, userId, pad: big }), 'invalid_request');
    }
  });

  itWith({ real: ['nats'] }, 'answers invalid_request to missing fields and wrong types', async () => {
    const cases: Array<[string, unknown]> = [
      [Subjects.usersRegister, {}],
      [Subjects.usersRegister, { tenantId }],
      [Subjects.usersRegister, { tenantId: 42, userId: true }],
      [Subjects.usersRegister, { tenantId, userId, phoneNumber: '0701234567' }],
      [Subjects.usersRegister, { tenantId, userId, email: 'not-an-email' }],
      [Subjects.usersRegister, { tenantId: 'bad tenant!', userId }],
      [Subjects.totpEnroll, { tenantId }],
      [Subjects.totpEnroll, { tenantId, userId: ['x'] }],
      [Subjects.totpEnroll, { tenantId, userId, label: 'x'.repeat(65) }],
      [Subjects.totpActivate, { tenantId, userId, tokenId: 'abc' }],
      [Subjects.totpActivate, { tenantId, userId, tokenId: 'abc', code: 123456 }],
      [Subjects.totpActivate, { tenantId, userId, tokenId: 'abc', code: '12ab56' }],
      [Subjects.tenantsConfigure, { tenantId }],
      [Subjects.tenantsConfigure, { tenantId, settings: { maxAttempts: 99 } }],
      [Subjects.tenantsConfigure, { tenantId, settings: { enabledMethods: [] } }],
      [Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: '300' } }],
    ];
    for (const [subject, body] of cases) await expectError(subject, body, 'invalid_request');
  });

  itWith({ real: ['nats', 'redis'] }, 'answers not_found for unknown tenants, users and tokens', async () => {
    const ghostTenant = uniqueTenant('ghost');
    await expectError(Subjects.totpEnroll, { tenantId: ghostTenant, userId }, 'not_found');
    await expectError(Subjects.totpEnroll, { tenantId, userId: 'nobody@contoso.example' }, 'not_found');
    await expectError(Subjects.totpActivate, { tenantId: ghostTenant, userId, tokenId: 'abc', code: '123456' }, 'not_found');
    await expectError(Subjects.totpActivate, { tenantId, userId: 'nobody@contoso.example', tokenId: 'abc', code: '123456' }, 'not_found');
    await expectError(Subjects.totpActivate, { tenantId, userId, tokenId: 'no-such-token', code: '123456' }, 'not_found');
    // Looking a user up never creates its tenant.
    assert.deepEqual(await typesOf(EventSubjects.tenant(ghostTenant)), []);
  });

  itWith({ real: ['nats', 'redis'] }, 'gives a number taken for a fixed line both phone methods, as MISSION.md says of every registered number', async () => {
    for (const phoneNumber of ['+442071838750', '+33123456789', '+46812345678']) {
      const landline = uniqueUser(`landline-${phoneNumber.slice(1)}`);
      assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId: landline, phoneNumber }), { userId: landline, methods: ['sms', 'voice'] }, phoneNumber);
      // What the start script reads: the projection offers both too.
      assert.equal(await redis.hget(keysOf(tenantId, landline).user, UserFields.methods), 'sms,voice', phoneNumber);
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'keeps answering valid requests afterwards', async () => {
    assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId, phoneNumber: '+14155550199' }), { userId, methods: ['sms', 'voice'] });
    const reply = await request<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId });
    assert.ok(reply.tokenId);
  });
});

describe('user-settings service rules (handler wiring with a chosen clock and config)', () => {
  let store: EventStore;
  let writer: UserProjectionWriter;
  const log = createLogger('user-settings-test');

  before(() => {
    store = service.app.get(EventStore);
    writer = service.app.get(UserProjectionWriter);
  });

  const withConfig = (autoCreateTenants: boolean) =>
    new UserSettingsService({ store, projection: writer, keyring, keys: service.app.get(UserDataKeys), log, autoCreateTenants, totpIssuer: 'Contoso MFA' });

  itWith({ real: ['nats', 'redis'] }, 'answers not_found for an unknown tenant when auto-create is off', async () => {
    const strict = withConfig(false);
    const tenantId = uniqueTenant('strict');
    await assert.rejects(strict.register({ tenantId, userId: 'u1' }, new Date()), { code: 'not_found', message: 'unknown tenant' });
    assert.deepEqual(await typesOf(EventSubjects.tenant(tenantId)), []);
    await strict.configureTenant({ tenantId, settings: {} }, new Date(), { mayCreateTenant: true });
    assert.deepEqual(await strict.register({ tenantId, userId: 'u1' }, new Date()), { userId: 'u1', methods: [] });
  });

  itWith({ real: ['nats', 'redis'] }, 'answers not_found to activating a pending token after 10 minutes', async () => {
    const svc = withConfig(true);
    const tenantId = uniqueTenant('late');
    const userId = uniqueUser('late');
    const enrolledAt = new Date();
    await svc.register({ tenantId, userId }, enrolledAt);
    const enrolled = await svc.enrollTotp({ tenantId, userId, label: 'app' }, enrolledAt);
    assert.ok(enrolled.otpauthUri.startsWith('otpauth://totp/Contoso%20MFA:app?'));
    const later = new Date(enrolledAt.getTime() + 10 * 60_000 + 1);
    const code = totp(base32Decode(enrolled.secret), later.getTime());
    await assert.rejects(svc.activateTotp({ tenantId, userId, tokenId: enrolled.tokenId, code }, later), { code: 'not_found' });
    // Within the 10 minutes, the code of the request's own time step activates it.
    const inTime = new Date(enrolledAt.getTime() + 9 * 60_000);
    const ok = await svc.activateTotp(
      { tenantId, userId, tokenId: enrolled.tokenId, code: totp(base32Decode(enrolled.secret), inTime.getTime()) },
      inTime,
    );
    assert.deepEqual(ok, { tokenId: enrolled.tokenId, active: true });
    assert.equal(
      await redis.hget(keysOf(tenantId, userId).steps, enrolled.tokenId),
      String(totpStep(inTime.getTime())),
    );
  });

  itWith({ real: ['nats', 'redis'] }, 'loads a long user from its snapshot and a tenant from its last event (aggregates that grow stay fast)', async () => {
    const snapshots = service.app.get(SnapshotStore);
    const reads: number[] = [];
    const counting = Object.create(store) as EventStore;
    counting.load = async (subject: string, afterSeq = 0) => {
      const loaded = await store.load(subject, afterSeq);
      reads.push(loaded.events.length);
      return loaded;
    };
    const svc = new UserSettingsService({ store: counting, projection: writer, keyring, keys: service.app.get(UserDataKeys), log, autoCreateTenants: true, totpIssuer: 'Contoso MFA', snapshots });
    const tenantId = uniqueTenant('long');
    const userId = uniqueUser('long');
    const now = new Date();
    for (let i = 0; i < 60; i++) {
      await svc.register({ tenantId, userId, displayName: `Name ${i}`, phoneNumber: `+1415555${String(1000 + i)}` }, now);
    }
    const snapshot = await snapshots.get<{ profile: { displayName?: string } }>(EventSubjects.user(tenantId, userId), USER_SNAPSHOT_VERSION);
    assert.ok(snapshot, 'a snapshot was written');
    reads.length = 0;
    assert.deepEqual(await svc.register({ tenantId, userId, displayName: 'Name 59', phoneNumber: '+14155551059' }, now), { userId, methods: ['sms', 'voice'] });
    assert.ok(reads[0]! < SNAPSHOT_EVERY, `read ${reads[0]} events after the snapshot, not 60`);
    // The state from snapshot + events equals the state folded from every event.
    const full = await store.load(EventSubjects.user(tenantId, userId));
    assert.equal(full.events.length, 60);
    // A tenant configured many times is read from its last event only.
    for (let i = 0; i < 30; i++) await svc.configureTenant({ tenantId, settings: { codeLifetimeSeconds: 60 + i } }, now, { mayCreateTenant: true });
    reads.length = 0;
    assert.equal((await svc.getTenant({ tenantId }, now)).settings.codeLifetimeSeconds, 89);
    assert.deepEqual(reads, [], 'the tenant was not read event by event');
    // Its last event is parsed once and kept while it is the last: a change is read at once.
    assert.equal((await svc.getTenant({ tenantId }, now)).settings.codeLifetimeSeconds, 89);
    await svc.configureTenant({ tenantId, settings: { codeLifetimeSeconds: 120 } }, now, { mayCreateTenant: true });
    assert.equal((await svc.getTenant({ tenantId }, now)).settings.codeLifetimeSeconds, 120);
    const other = new UserSettingsService({ store, projection: writer, keyring, keys: service.app.get(UserDataKeys), log, autoCreateTenants: true, totpIssuer: 'Contoso MFA', snapshots });
    await other.configureTenant({ tenantId, settings: { codeLifetimeSeconds: 130 } }, now, { mayCreateTenant: true });
    assert.equal((await svc.getTenant({ tenantId }, now)).settings.codeLifetimeSeconds, 130, 'a change written by another writer is seen');
  });

  itWith({ real: ['nats', 'redis'] }, 'users.get names the app passwords (id, name, creation time; never a hash) in creation order, past a snapshot; one deleted by its id leaves the others', async () => {
    const tenantId = uniqueTenant('apppw');
    const userId = uniqueUser('legacy');
    await request(Subjects.usersRegister, { tenantId, userId, displayName: 'Legacy Larsson' });
    await request(Subjects.tenantsConfigure, { tenantId, settings: { appPasswords: { allowed: true } } });
    const before = Date.now();
    const outlook = await request<{ appPasswordId: string; password: string }>(Subjects.usersAppPasswordsCreate, { tenantId, userId, name: 'Outlook 2010' });
    const unnamed = await request<{ appPasswordId: string; password: string }>(Subjects.usersAppPasswordsCreate, { tenantId, userId });
    const printer = await request<{ appPasswordId: string; password: string }>(Subjects.usersAppPasswordsCreate, { tenantId, userId, name: 'Scanner' });
    const after = Date.now();
    type Listed = { appPasswords: number; appPasswordList: Array<{ appPasswordId: string; name: string | null; createdAt: string }> };
    const listed = await request<Listed>(Subjects.usersGet, { tenantId, userId });
    assert.equal(listed.appPasswords, 3);
    assert.deepEqual(
      listed.appPasswordList.map((a) => [a.appPasswordId, a.name]),
      [
        [outlook.appPasswordId, 'Outlook 2010'],
        [unnamed.appPasswordId, null],
        [printer.appPasswordId, 'Scanner'],
      ],
    );
    for (const a of listed.appPasswordList) {
      const at = Date.parse(a.createdAt);
      assert.ok(at >= before - 1000 && at <= after + 1000, `${a.createdAt} is when it was created`);
      assert.deepEqual(Object.keys(a).sort(), ['appPasswordId', 'createdAt', 'name'], 'nothing of the password or its hash');
    }
    const reply = JSON.stringify(listed);
    for (const p of [outlook, unnamed, printer]) assert.ok(!reply.includes(p.password), 'no password in the reply');
    // Enough commands for a snapshot: the times come back from it as they were.
    for (let i = 0; i < SNAPSHOT_EVERY + 2; i++) await request(Subjects.usersRegister, { tenantId, userId, displayName: `Legacy Larsson ${i}` });
    assert.ok(await service.app.get(SnapshotStore).get(EventSubjects.user(tenantId, userId), USER_SNAPSHOT_VERSION), 'a snapshot was written');
    assert.deepEqual((await request<Listed>(Subjects.usersGet, { tenantId, userId })).appPasswordList, listed.appPasswordList);
    // One deleted by its id: the others stay, and still sign their clients in.
    assert.deepEqual(await request(Subjects.usersAppPasswordsDelete, { tenantId, userId, appPasswordId: unnamed.appPasswordId }), { userId, deleted: 1 });
    const left = await request<Listed>(Subjects.usersGet, { tenantId, userId });
    assert.deepEqual([left.appPasswords, left.appPasswordList], [2, [listed.appPasswordList[0], listed.appPasswordList[2]]]);
    assert.deepEqual(await request(Subjects.appPasswordsVerify, { tenantId, userId, password: unnamed.password }), { valid: false });
    assert.deepEqual(await request(Subjects.appPasswordsVerify, { tenantId, userId, password: printer.password }), { valid: true });
  });

  itWith({ real: ['nats', 'redis'] }, 'users.list by method: users who have it now, or none (must register first); a page a filter leaves short still names the next; its cursor is bound to the method', async () => {
    const tenantId = uniqueTenant('bymethod');
    // Ids sort as listed: a phone (sms, voice), nothing, a code app (totp), a code app and a phone.
    const [phone, nothing, app, both] = ['a-phone', 'b-nothing', 'c-app', 'd-both'].map((n) => `${n}@contoso.example`) as [string, string, string, string];
    await request(Subjects.usersRegister, { tenantId, userId: phone, phoneNumber: '+14155550101' });
    await request(Subjects.usersRegister, { tenantId, userId: nothing, displayName: 'No Method' });
    for (const [userId, phoneNumber] of [[app, undefined], [both, '+14155550104']] as const) {
      await request(Subjects.usersRegister, { tenantId, userId, ...(phoneNumber ? { phoneNumber } : {}) });
      const enrolled = await request<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId });
      assert.deepEqual(await request(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: codeFor(enrolled.secret) }), { tokenId: enrolled.tokenId, active: true });
    }
    type Page = { items: Array<{ userId: string; methods: string[] }>; nextCursor?: string };
    /** Every page of the search, following the cursors. */
    const all = async (filter: Record<string, unknown>, limit = 50) => {
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await request<Page>(Subjects.usersList, { tenantId, ...filter, limit, ...(cursor ? { cursor } : {}) });
        seen.push(...page.items.map((i) => i.userId));
        cursor = page.nextCursor;
      } while (cursor);
      return seen;
    };
    assert.deepEqual(await all({ method: 'totp' }), [app, both]);
    assert.deepEqual(await all({ method: 'sms' }), [phone, both]);
    assert.deepEqual(await all({ method: 'voice' }, 1), [phone, both], 'one a page: the pages the filter leaves empty still lead on');
    assert.deepEqual(await all({ method: 'none' }), [nothing]);
    assert.deepEqual(await all({ method: 'push' }), []);
    assert.deepEqual(await all({ method: 'totp', query: 'd-' }), [both], 'with a search');
    assert.deepEqual(await all({}), [phone, nothing, app, both]);
    const first = await request<Page>(Subjects.usersList, { tenantId, method: 'sms', limit: 1 });
    assert.ok(first.nextCursor);
    await expectError(Subjects.usersList, { tenantId, method: 'voice', limit: 1, cursor: first.nextCursor }, 'invalid_request');
    await expectError(Subjects.usersList, { tenantId, method: 'email' }, 'invalid_request');
  });

  itWith({ real: ['nats', 'redis'] }, 'decides again on fresh state when another writer appended first', async () => {
    const tenantId = uniqueTenant('occ');
    const userId = uniqueUser('occ');
    const userSubject = EventSubjects.user(tenantId, userId);
    let conflicts = 0;
    let raced = false;
    // A store that lets a competing register land between our read and our append, once.
    class RacingStore extends EventStore {
      override async load(subject: string) {
        const loaded = await super.load(subject);
        if (subject === userSubject && !raced) {
          raced = true;
          await request(Subjects.usersRegister, { tenantId, userId, displayName: 'First' });
        }
        return loaded;
      }
      override async append(subject: string, events: readonly AnyEvent[], expectedLastSeq: number) {
        try {
          return await super.append(subject, events, expectedLastSeq);
        } catch (error) {
          conflicts++;
          throw error;
        }
      }
    }
    const racing = new UserSettingsService({
      store: new RacingStore(jsm, service.app.get(EventPublisher)),
      projection: writer,
      keyring,
      keys: service.app.get(UserDataKeys),
      log,
      autoCreateTenants: true,
      totpIssuer: 'Open MFA',
    });
    const reply = await racing.register({ tenantId, userId, displayName: 'First' }, new Date());
    assert.deepEqual(reply, { userId, methods: [] });
    assert.equal(conflicts, 1, 'the first append lost to the competing register');
    assert.deepEqual(await typesOf(userSubject), ['UserRegistered']);
  });

  itWith({ real: ['nats', 'redis'] }, 'forgets the remembered browsers of a user whose reset stopped after its event (the durable projector completes it)', async () => {
    const tenantId = uniqueTenant('reset-cut');
    const userId = uniqueUser('reset-cut');
    await withConfig(true).register({ tenantId, userId, phoneNumber: '+14155550100' }, new Date());
    const { tag } = keysOf(tenantId, userId);
    await redis.hset(RedisKeys.remembered(tag), 'thief-browser', `${Date.now() + 86_400_000}:${Date.now()}`);
    await redis.set(RedisKeys.lastMfa(tag), String(Date.now()));
    // An instance whose Redis projection cannot be written and that forgets no browser itself.
    class BrokenWriter extends UserProjectionWriter {
      override async apply(): Promise<boolean> {
        throw new Error("READONLY You can't write against a read only replica.");
      }
    }
    const cut = new UserSettingsService({ store, projection: new BrokenWriter(redis, keyring), keyring, keys: service.app.get(UserDataKeys), log, autoCreateTenants: false, totpIssuer: 'Open MFA' });
    await assert.rejects(cut.reset({ tenantId, userId }, new Date()), { code: 'unavailable' });
    await eventually(async () => ((await redis.exists(RedisKeys.remembered(tag), RedisKeys.lastMfa(tag))) === 0 ? true : undefined), 10_000, 'the remembered browser forgotten');
    assert.equal(await redis.hget(keysOf(tenantId, userId).user, 'methods'), null, 'and the reset projected');
  });

  itWith({ real: ['nats', 'redis'] }, "forgets the browser a verify remembered between the reset's forgetting and its projection write", async () => {
    const tenantId = uniqueTenant('reset-race');
    const userId = uniqueUser('reset-race');
    await withConfig(true).register({ tenantId, userId, phoneNumber: '+14155550100' }, new Date());
    const { tag } = keysOf(tenantId, userId);
    // auth-challenge approves a challenge started before the reset just before the reset's
    // projection is written (the old validFrom still there, the challenge not voided yet): it
    // remembers the browser and the MFA, as its verify script writes them.
    class VerifiedMeanwhile extends UserProjectionWriter {
      override async apply(...args: Parameters<UserProjectionWriter['apply']>): Promise<boolean> {
        const at = Date.now();
        await redis.hset(RedisKeys.remembered(tag), 'late-browser', `${at + 86_400_000}:${at}`);
        await redis.set(RedisKeys.lastMfa(tag), String(at));
        return super.apply(...args);
      }
    }
    const racing = new UserSettingsService({
      store,
      projection: new VerifiedMeanwhile(redis, keyring),
      remembered: new RememberedBrowsers(redis),
      keyring,
      keys: service.app.get(UserDataKeys),
      log,
      autoCreateTenants: false,
      totpIssuer: 'Open MFA',
    });
    // Dated back beyond the durable projector's reach (RESET_REACH_MS), whose own forgetting runs
    // whenever it handles the reset: what is checked is what the reset leaves when it answers.
    assert.deepEqual(await racing.reset({ tenantId, userId }, new Date(Date.now() - 2 * RESET_REACH_MS)), { userId, reset: true });
    assert.equal(await redis.hget(keysOf(tenantId, userId).user, 'methods'), null, 'the reset projected');
    assert.equal(await redis.hexists(RedisKeys.remembered(tag), 'late-browser'), 0, 'the browser remembered meanwhile is forgotten');
    assert.equal(await redis.exists(RedisKeys.lastMfa(tag)), 0, 'and the MFA completed meanwhile');
  });

  itWith({ real: ['nats', 'redis'] }, 'rebuilds one user on demand, and marks a user without events as unregistered for a while', async () => {
    const projector = service.app.get(UserProjector);
    const tenantId = uniqueTenant('rb');
    const userId = uniqueUser('rb');
    const keys = keysOf(tenantId, userId);
    assert.equal(await projector.rebuild(tenantId, userId), false);
    // The log holds no event of the user: a mark that says so for a while (start answers registration_required during a rebuild).
    assert.deepEqual(await redis.hgetall(keys.user), { seq: '0' });
    const ttl = await redis.ttl(keys.user);
    assert.ok(ttl > 0 && ttl <= UNREGISTERED_MARK_SECONDS, `ttl ${ttl}`);
    await withConfig(true).register({ tenantId, userId, phoneNumber: '+14155550100' }, new Date());
    // The registration's snapshot replaces the mark, and its expiry with it; so does an erasure.
    assert.equal(await redis.ttl(keys.user), -1);
    const other = uniqueUser('rb-erased');
    assert.equal(await writer.markUnregistered(tenantId, other), true);
    assert.equal(await writer.markUnregistered(tenantId, other), false, 'never over a user hash');
    assert.equal(await writer.erase(tenantId, other, 7), true);
    assert.deepEqual(await redis.hgetall(keysOf(tenantId, other).user), { seq: '7' });
    assert.equal(await redis.ttl(keysOf(tenantId, other).user), -1);
    await projectorCaughtUp();
    await redis.del(keys.user);
    assert.equal(await projector.rebuild(tenantId, userId), true);
    assert.equal(await redis.hget(keys.user, 'methods'), 'sms,voice');
    // Monotonic: the same snapshot again is not applied twice.
    assert.equal(await projector.rebuild(tenantId, userId), false);
  });
});
