import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { ContractError, defaultTenantSettings, EventSubjects, Headers, InternalSubjects, Streams, Subjects } from '@mfa/contracts';
import {
  base32Encode,
  formatWrappedDataKey,
  hashCode,
  hotp,
  loadKeyring,
  maskSecret,
  OATH_TEST_VECTORS,
  parseWrappedDataKey,
  projectionUserKey,
  rememberTokenId,
  signInternalRequest,
  totp,
  totpStep,
  unwrapDataKey,
  userTag,
} from '@mfa/crypto';
import { InternalRequests, LOGGER, openPersonalData, ReplicatedWrites, UserDataKeys } from '@mfa/service-kit';
import { ensureStream, EventPublisher, requestJson } from '@mfa/messaging';
import { hashSlotOf, parseChallengeId, RedisKeys, slotOutboxKey, UserProjectionWriter } from '@mfa/projection';
import { REGISTRATION_REQUIRED_TTL_SECONDS, REMEMBERED_BROWSERS_MAX } from './adapters/scripts.js';
import { createLogger, registry } from '@mfa/telemetry';
import { eventually, hasOathtool, itWith, oathtoolTotp, tenantCreated, tenantDeleted, testEnv, testTenant, uniqueTenant, uniqueUser } from '@mfa/testing';
import { jetstream } from '@nats-io/jetstream';
import { boot } from './boot.js';
import { smsCodeFromLog } from './sms-code.spec-support.js';
import { loadAuthChallengeConfig } from './config.js';
import { ChallengeStore, type LockoutPolicy } from './adapters/challenge.store.js';
import { Outbox, parseDecisionRecord } from './adapters/outbox.js';
import { ChallengeService } from './application/challenge.service.js';
import { maskedTokensOf, tokenSpecsOf } from './adapters/script-replies.js';
import { TenantSettingsCache } from './adapters/tenant-settings.cache.js';
import { IpLocks } from './adapters/ip-locks.js';
import { CODE_GENERATOR, CONFIG, SERVER_IDENTITY } from './tokens.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

/** How MONITOR shows an argument's bytes (Redis escapes them like sdscatrepr; ioredis unescapes `\"`). */
const MONITOR_ESCAPES: Record<number, string> = { 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x07: '\\a', 0x08: '\\b' };
const monitorRepr = (bytes: Uint8Array) =>
  [...bytes]
    .map((c) => MONITOR_ESCAPES[c] ?? (c >= 0x20 && c <= 0x7e ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`))
    .join('');

/**
 * A MONITOR connection on a socket of its own; `seen` gets each command's arguments as ioredis's
 * monitor mode gives them (split at `" "`, `\\"` unescaped). Not that mode: ioredis switches to it
 * a turn after MONITOR's OK, so a command shown in the same read as the OK is taken for a reply no
 * command waits for ("Command queue state error"), as a CI run with a busy Redis found.
 */
async function monitorRedis(redis: Redis, seen: (args: string[]) => void): Promise<{ close(): void }> {
  const socket = netConnect({ host: redis.options.host ?? '127.0.0.1', port: redis.options.port ?? 6379 });
  socket.setEncoding('utf8'); // MONITOR escapes every byte outside printable ASCII (monitorRepr)
  let buffered = '';
  const monitoring = new Promise<void>((resolve, reject) => {
    socket.once('error', (error: Error) => reject(new Error(`entering monitor mode failed: ${error.message}`, { cause: error })));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line === '+OK') resolve();
        else if (line.startsWith('-')) reject(new Error(`entering monitor mode failed: ${line.slice(1)}`));
        else if (line.startsWith('+') && line.includes('"')) seen(line.slice(line.indexOf('"') + 1, -1).split('" "').map((arg) => arg.replace(/\\"/g, '"')));
      }
    });
  });
  socket.write('MONITOR\r\n');
  try {
    await monitoring;
  } catch (error) {
    socket.destroy();
    throw error;
  }
  return { close: () => socket.destroy() };
}

describe('auth-challenge against real NATS and Redis', () => {
  const { keyring } = loadKeyring({});
  let service: Awaited<ReturnType<typeof boot>>;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let redis: Redis;
  let writer: UserProjectionWriter;
  let seq = 1;
  const tenant = uniqueTenant();
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 5000 });
  /** As dispatch asks: signed with the master key. */
  let internal: InternalRequests;

  before(async () => {
    service = await boot(loadAuthChallengeConfig({ ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' }));
    nc = await connect({ servers: testEnv.natsUrl });
    internal = new InternalRequests(nc, keyring);
    jsm = await jetstreamManager(nc);
    redis = new Redis(testEnv.redisUrl);
    writer = new UserProjectionWriter(redis, keyring);
    // Users are seeded straight into Redis here, with no user-settings to rebuild the projection:
    // declare it complete, so a user missing is absent rather than not rebuilt yet.
    await writer.markComplete();
    await ensureStream(jsm, Streams.userKeys);
  });

  after(async () => {
    await service.stop();
    await nc.drain();
    await redis.quit();
  });

  async function projectUser(
    userId: string,
    opts: { phone?: string; totp?: Buffer[]; tenantId?: string; phoneCountry?: string; methods?: string[]; defaultMethod?: string; validFrom?: number } = {},
  ) {
    const methods = opts.methods ?? [...(opts.totp?.length ? ['totp'] : []), ...(opts.phone ? ['sms', 'voice'] : [])];
    // A real key, as user-settings creates it: dispatch (sharing this NATS) can open what start seals.
    const key = await new UserDataKeys({ js: jetstream(nc), jsm }, keyring).getOrCreate(opts.tenantId ?? tenant, userId);
    await writer.apply({
      tenantId: opts.tenantId ?? tenant,
      userId,
      seq: seq++,
      dataKey: formatWrappedDataKey(key.gen, key.wrapped),
      displayName: 'Helga Test',
      email: 'helga@contoso.example',
      phoneNumber: opts.phone,
      phoneCountry: opts.phoneCountry,
      methods,
      defaultMethod: opts.defaultMethod ?? methods[0],
      validFrom: opts.validFrom,
      totpTokens: (opts.totp ?? []).map((secret, i) => ({ tokenId: `tok${i}`, secret, digits: 6, period: 30, activatedStep: 0 })),
    });
  }

  const smsCodeOf = (challengeId: string) => smsCodeFromLog(jsm, keyring, challengeId);

  itWith({ real: ['nats', 'redis'] }, 'SMS: a wrong code answers pending/invalid_code, the right one approves, a second verify is a conflict', async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550100' });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms', clientIp: '203.0.113.7' });
    assert.equal(start.status, 'pending');
    assert.equal(start.method, 'sms');
    const challengeId = String(start.challengeId);
    assert.ok(parseChallengeId(challengeId));
    assert.ok(Date.parse(String(start.expiresAt)) > Date.now() + 170_000);
    const code = await smsCodeOf(challengeId);
    assert.match(code, /^\d{6}$/);
    // Only a keyed hash of the code is stored.
    const id = parseChallengeId(challengeId)!;
    const stored = await redis.hgetallBuffer(RedisKeys.challenge(id.tag, id.nonce));
    assert.ok(!Object.values(stored).some((v) => v.toString('utf8').includes(code)));
    const wrong = code === '000000' ? '000001' : '000000';
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code: wrong }), {
      challengeId,
      status: 'pending',
      reason: 'invalid_code',
    });
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code }), { challengeId, status: 'approved' });
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId }), { challengeId, status: 'approved' });
    const again = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code });
    assert.equal(again.error?.code, 'conflict');
  });

  itWith({ real: ['nats', 'redis'] }, 'a user reset or erased after the start: the right code is denied (method_not_registered, recorded once), a resend sends nothing; other changes void nothing', async () => {
    const user = uniqueUser();
    const secret = randomBytes(20);
    const registeredAt = Date.now() - 86_400_000;
    const phone = '+14155550102';
    await projectUser(user, { phone, totp: [secret], methods: ['sms', 'voice', 'totp'], defaultMethod: 'sms', validFrom: registeredAt });
    const sms = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const totpStart = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const voice = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'voice' });
    const kept = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const smsId = String(sms.challengeId);
    const totpId = String(totpStart.challengeId);
    const voiceId = String(voice.challengeId);
    const code = await smsCodeOf(smsId);
    // A change that is not a reset (a second token enrolled, the profile edited) voids nothing.
    await projectUser(user, { phone, totp: [secret, randomBytes(20)], methods: ['sms', 'voice', 'totp'], defaultMethod: 'sms', validFrom: registeredAt });
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: String(kept.challengeId), code: totp(secret, Date.now()) }), {
      challengeId: String(kept.challengeId),
      status: 'approved',
    });
    // users.reset, then the user registered the same phone again at once (user-settings' projection).
    await projectUser(user, { phone, methods: ['sms', 'voice'], defaultMethod: 'sms', validFrom: Date.now() });
    const resend = await ask(Subjects.challengeResend, { tenantId: tenant, challengeId: smsId });
    assert.equal(resend.error?.code, 'forbidden');
    assert.match(String(resend.error?.message), /reset/);
    const denied = { challengeId: smsId, status: 'denied', reason: 'method_not_registered' };
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: smsId, code }), denied);
    const recorded = await jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.challengeVoided });
    const event = recorded!.json<{ type: string; data: { challengeId: string; userId: string; method: string } }>();
    assert.deepEqual([event.type, event.data.challengeId, event.data.userId, event.data.method], ['ChallengeVoided', smsId, user, 'sms']);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: smsId }), denied);
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: smsId, code })).error?.code, 'conflict');
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: totpId, code: totp(secret, Date.now()) }), {
      challengeId: totpId,
      status: 'denied',
      reason: 'method_not_registered',
    });
    // The call answered on the old phone after the reset (# pressed): denied all the same.
    assert.deepEqual(await internal.request<Reply>(InternalSubjects.voiceOutcome, { tenantId: tenant, challengeId: voiceId, approved: true }, { timeoutMs: 5000 }), {
      status: 'denied',
      reason: 'method_not_registered',
    });
    // A challenge started after the reset verifies; then the user is erased: its tombstone voids it.
    const after = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const afterId = String(after.challengeId);
    const afterCode = await smsCodeOf(afterId);
    const again = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: afterId, code: afterCode }), { challengeId: afterId, status: 'approved' });
    await writer.erase(tenant, user, seq++);
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: String(again.challengeId), code: await smsCodeOf(String(again.challengeId)) }), {
      challengeId: String(again.challengeId),
      status: 'denied',
      reason: 'method_not_registered',
    });
  });

  itWith({ real: ['nats', 'redis'] }, 'a user hash written without validFrom (an older user-settings during an upgrade) voids no challenge; a tombstone does', async () => {
    const user = uniqueUser('old-writer');
    const phone = '+14155550103';
    await projectUser(user, { phone, validFrom: Date.now() - 60_000 });
    const first = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const firstId = String(first.challengeId);
    const firstCode = await smsCodeOf(firstId);
    const second = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const secondId = String(second.challengeId);
    const secondCode = await smsCodeOf(secondId);
    await projectUser(user, { phone });
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: firstId, code: firstCode }), { challengeId: firstId, status: 'approved' });
    await writer.erase(tenant, user, seq++);
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: secondId, code: secondCode }), {
      challengeId: secondId,
      status: 'denied',
      reason: 'method_not_registered',
    });
  });

  itWith({ real: ['nats', 'redis'] }, 'a user blocked after the start: the right code is denied (user_blocked, recorded once), a resend sends nothing', async () => {
    const user = uniqueUser();
    const secret = randomBytes(20);
    await projectUser(user, { phone: '+14155550101', totp: [secret], methods: ['sms', 'totp'], defaultMethod: 'sms' });
    const sms = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const totpStart = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const smsId = String(sms.challengeId);
    const totpId = String(totpStart.challengeId);
    const code = await smsCodeOf(smsId);
    // fraud's projection of UserBlocked (an administrator, or a fraud report's automatic block).
    const { tag } = parseChallengeId(smsId)!;
    await redis.set(RedisKeys.blocked(tag), String(Date.now() + 60_000), 'PX', 60_000);
    try {
      const resend = await ask(Subjects.challengeResend, { tenantId: tenant, challengeId: smsId });
      assert.equal(resend.error?.code, 'forbidden');
      assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: smsId, code }), { challengeId: smsId, status: 'denied', reason: 'user_blocked' });
      const recorded = await jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.challengeUserBlocked });
      assert.deepEqual((recorded!.json() as { type: string; data: { challengeId: string } }).type, 'ChallengeUserBlocked');
      assert.equal((recorded!.json() as { data: { challengeId: string } }).data.challengeId, smsId);
      assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: smsId }), { challengeId: smsId, status: 'denied', reason: 'user_blocked' });
      assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: smsId, code })).error?.code, 'conflict');
      assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: totpId, code: totp(secret, Date.now()) }), { challengeId: totpId, status: 'denied', reason: 'user_blocked' });
    } finally {
      await redis.del(RedisKeys.blocked(tag));
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'decides nothing with under 250 ms before the Mfa-Deadline: unavailable, and the challenge is untouched', async () => {
    const user = uniqueUser();
    const secret = randomBytes(20);
    await projectUser(user, { totp: [secret] });
    const soon = () => ({ [Headers.deadline]: String(Date.now() + 200) });
    const early = await requestJson<Reply>(nc, Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' }, { timeoutMs: 5000, headers: soon() });
    assert.equal(early.error?.code, 'unavailable', JSON.stringify(early));
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    assert.equal(start.status, 'pending');
    const challengeId = String(start.challengeId);
    const code = totp(secret, Date.now());
    const late = await requestJson<Reply>(nc, Subjects.challengeVerify, { tenantId: tenant, challengeId, code }, { timeoutMs: 5000, headers: soon() });
    assert.equal(late.error?.code, 'unavailable', JSON.stringify(late));
    // Nothing was counted or used: the same code approves with time to spare.
    const inTime = await requestJson<Reply>(nc, Subjects.challengeVerify, { tenantId: tenant, challengeId, code }, { timeoutMs: 5000, headers: { [Headers.deadline]: String(Date.now() + 5_000) } });
    assert.deepEqual(inTime, { challengeId, status: 'approved' });
  });

  itWith({ real: ['nats', 'redis'] }, 'denies after 5 wrong codes and never accepts the right one afterwards', async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550101' });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
    const challengeId = String(start.challengeId);
    const code = await smsCodeOf(challengeId);
    const wrong = code === '111111' ? '222222' : '111111';
    for (let i = 1; i <= 4; i++) {
      const r = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code: wrong });
      assert.equal(r.status, 'pending', `attempt ${i}`);
    }
    const fifth = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code: wrong });
    assert.deepEqual(fifth, { challengeId, status: 'denied', reason: 'too_many_attempts' });
    const late = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code });
    assert.equal(late.error?.code, 'conflict');
  });

  itWith({ real: ['nats', 'redis'] }, 'TOTP: accepts codes of the current step (oathtool), never the same step twice', async () => {
    const secret = Buffer.from('3132333435363738393031323334353637383930', 'hex');
    const base32 = base32Encode(secret);
    const user = uniqueUser();
    await projectUser(user, { totp: [secret], phone: '+14155550102' });
    const now = new Date();
    const code = hasOathtool() ? oathtoolTotp(base32, { at: now }) : hotp(secret, Math.floor(now.getTime() / 30000));
    const first = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
    assert.equal(first.method, 'totp', 'the default method is the authenticator app');
    const ok = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: first.challengeId, code });
    assert.equal(ok.status, 'approved');
    const second = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const replay = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: second.challengeId, code });
    assert.deepEqual(replay, { challengeId: second.challengeId, status: 'pending', reason: 'invalid_code' });
    // The next step's code is within the ±1 window and was never used.
    const next = new Date(now.getTime() + 30_000);
    const nextCode = hasOathtool() ? oathtoolTotp(base32, { at: next }) : hotp(secret, Math.floor(next.getTime() / 30000));
    const accepted = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: second.challengeId, code: nextCode });
    assert.equal(accepted.status, 'approved');
    // Two steps ahead is outside the window.
    const third = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const far = new Date(now.getTime() + 90_000);
    const farCode = hotp(secret, Math.floor(far.getTime() / 30000));
    const rejected = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: third.challengeId, code: farCode });
    assert.equal(rejected.status, 'pending');
  });

  itWith({ real: ['nats', 'redis'] }, 'a challenge past its lifetime answers denied/expired on verify and status', async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550103' });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const challengeId = String(start.challengeId);
    const code = await smsCodeOf(challengeId);
    const id = parseChallengeId(challengeId)!;
    await redis.hset(RedisKeys.challenge(id.tag, id.nonce), 'expiresAt', Date.now() - 1);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId }), {
      challengeId,
      status: 'denied',
      reason: 'expired',
    });
    const expected = { challengeId, status: 'denied', reason: 'expired' };
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code }), expected);
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code }), expected);
  });

  itWith({ real: ['nats', 'redis'] }, 'registration_required for users without a usable method; unknown tenants are not_found', async () => {
    const js = jetstream(nc);
    const created = tenantCreated(testTenant({ tenantId: tenant, settings: { ...defaultTenantSettings(), enabledMethods: ['totp', 'sms'] } }));
    await new EventPublisher(js).publish(EventSubjects.tenant(tenant), created);
    const stranger = uniqueUser('stranger');
    const r = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenant, userId: stranger });
      return reply.error ? undefined : reply;
    }, 5000, 'the tenant to be known');
    assert.equal(r.status, 'registration_required');
    assert.equal(r.reason, 'no_method_registered');
    const phoneOnly = uniqueUser();
    await projectUser(phoneOnly, { phone: '+14155550104' });
    const wantsTotp = await ask(Subjects.challengeStart, { tenantId: tenant, userId: phoneOnly, method: 'totp' });
    assert.equal(wantsTotp.status, 'registration_required');
    assert.equal(wantsTotp.reason, 'method_not_registered');
    const status = await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: wantsTotp.challengeId });
    assert.equal(status.status, 'registration_required');
    // Such a record can never be verified: it lives a minute, not the code lifetime.
    const id = parseChallengeId(String(r.challengeId))!;
    const ttl = await redis.ttl(RedisKeys.challenge(id.tag, id.nonce));
    assert.ok(ttl > 0 && ttl <= REGISTRATION_REQUIRED_TTL_SECONDS, `ttl ${ttl}`);
    const unknown = await ask(Subjects.challengeStart, { tenantId: uniqueTenant('nobody'), userId: stranger });
    assert.equal(unknown.error?.code, 'not_found');
  });

  itWith({ real: ['nats', 'redis'] }, 'tenant isolation: another tenant cannot verify or read a challenge', async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550105' });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const code = await smsCodeOf(String(start.challengeId));
    const other = uniqueTenant('other');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: other, challengeId: start.challengeId, code })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: other, challengeId: start.challengeId })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code })).status, 'approved');
  });

  itWith({ real: ['nats', 'redis'] }, 'rate-limits SMS sends per user: the 6th in 5 minutes waits until the oldest leaves the sliding window', async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550106' });
    for (let i = 0; i < 5; i++) {
      assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' })).status, 'pending');
    }
    const sixth = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    assert.equal(sixth.error?.code, 'rate_limited');
    assert.match(String(sixth.error?.message), /too many codes sent to this user; try again in (29\d|300) s/);
    const retry = (sixth.error as { retryAfterSeconds?: number }).retryAfterSeconds!;
    assert.ok(retry >= 290 && retry <= 300, `retryAfterSeconds ${retry}`);
    // The oldest send moved out of the window (as if 5 minutes had passed for it): one more fits, not two.
    const key = RedisKeys.smsSends(userTag(keyring, tenant, user));
    const [oldest] = await redis.zrange(key, 0, 0);
    await redis.zadd(key, Date.now() - 301_000, oldest!);
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' })).status, 'pending');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' })).error?.code, 'rate_limited');
  });

  itWith({ real: ['nats', 'redis'] }, "throttles across users: a phone number's throttle (dispatch's) stops SMS starts of its users, TOTP goes on", async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550107', totp: [randomBytes(20)] });
    const tag = userTag(keyring, tenant, user);
    await redis.set(RedisKeys.phoneThrottle(tag), String(Date.now() + 120_000), 'PX', 120_000);
    const sms = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    assert.equal(sms.error?.code, 'rate_limited');
    assert.match(String(sms.error?.message), /phone number; try again in (11\d|120) s/);
    assert.ok((sms.error as { retryAfterSeconds?: number }).retryAfterSeconds! > 110);
    assert.equal(await redis.zcard(RedisKeys.smsSends(tag)), 0, 'a refused start counts for nothing');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' })).status, 'pending');
    await redis.del(RedisKeys.phoneThrottle(tag));
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' })).status, 'pending');
  });

  itWith({ real: ['nats', 'redis'] }, "throttles across users: a client IP's throttle (fraud's IpThrottled) reaches start within moments, for what sends something only", async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550108', totp: [randomBytes(20)] });
    const ip = '198.51.100.77';
    const until = new Date(Date.now() + 60_000);
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.ipThrottle(tenant, ip), {
      id: randomUUID(),
      type: 'IpThrottled',
      version: 1,
      tenantId: tenant,
      aggregateId: ip,
      occurredAt: new Date().toISOString(),
      metadata: {},
      data: { ip, until: until.toISOString(), starts: 300, windowSeconds: 300 },
    });
    await eventually(async () => {
      const sms = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms', clientIp: ip });
      assert.equal(sms.error?.code, 'rate_limited');
      assert.match(String(sms.error?.message), /from this client IP; try again in \d+ s/);
      assert.ok((sms.error as { retryAfterSeconds?: number }).retryAfterSeconds! <= 60);
      return true;
    });
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp', clientIp: ip })).status, 'pending');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms', clientIp: '198.51.100.78' })).status, 'pending');
  });

  itWith({ real: ['nats', 'redis'] }, 'remember MFA: a token is good until its end, for its own user only; an ended one asks for MFA', async () => {
    const remembering = uniqueTenant('remember');
    const settings = { ...defaultTenantSettings(), rememberMfa: { enabled: true, days: 30 } };
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(remembering), tenantCreated(testTenant({ tenantId: remembering, settings })));
    const [alice, bob] = [uniqueUser('alice'), uniqueUser('bob')];
    await projectUser(alice, { tenantId: remembering, totp: [randomBytes(20)] });
    await projectUser(bob, { tenantId: remembering, totp: [randomBytes(20)] });
    const token = `mfar.${randomBytes(32).toString('base64url')}`;
    const aliceTag = userTag(keyring, remembering, alice);
    const remember = (until: number) => redis.hset(RedisKeys.remembered(aliceTag), rememberTokenId(keyring, aliceTag, token), `${until}:${Date.now() - 1000}`);
    const startWith = (userId: string) => ask(Subjects.challengeStart, { tenantId: remembering, userId, method: 'totp', context: { rememberToken: token } });
    await remember(Date.now() + 60_000);
    const approved = await eventually(async () => {
      const reply = await startWith(alice);
      return reply.status === 'approved' ? reply : undefined;
    }, 5000, 'the tenant known, the browser remembered');
    assert.equal(approved.reason, 'remembered_device');
    assert.equal((await startWith(bob)).status, 'pending', "alice's token does nothing for bob");
    await remember(Date.now() - 1);
    assert.equal((await startWith(alice)).status, 'pending', 'an ended token asks for MFA');
    // Remembered 40 days ago for 90 days, when the tenant remembered for 90: its days are 30 now.
    const day = 24 * 60 * 60 * 1000;
    await redis.hset(RedisKeys.remembered(aliceTag), rememberTokenId(keyring, aliceTag, token), `${Date.now() + 50 * day}:${Date.now() - 40 * day}`);
    assert.equal((await startWith(alice)).status, 'pending', 'a browser remembered longer ago than the days the tenant allows now asks for MFA');
    await redis.hset(RedisKeys.remembered(aliceTag), rememberTokenId(keyring, aliceTag, token), `${Date.now() + 50 * day}:${Date.now() - 20 * day}`);
    assert.equal((await startWith(alice)).status, 'approved', 'one remembered 20 days ago still counts');
  });

  itWith({ real: ['nats', 'redis'] }, `remember MFA: a user keeps at most ${REMEMBERED_BROWSERS_MAX} remembered browsers, the newest; ended ones go first`, async () => {
    const remembering = uniqueTenant('remember-bound');
    const settings = { ...defaultTenantSettings(), rememberMfa: { enabled: true, days: 30 } };
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(remembering), tenantCreated(testTenant({ tenantId: remembering, settings })));
    const dora = uniqueUser('dora');
    // Two tokens: each verify below spends its token's time step.
    const secrets = [randomBytes(20), randomBytes(20)];
    await projectUser(dora, { tenantId: remembering, totp: secrets });
    const key = RedisKeys.remembered(userTag(keyring, remembering, dora));
    const now = Date.now();
    // One ended, and one fewer than the bound still remembered, created a second apart (browser-0 the oldest).
    await redis.hset(key, 'ended', `${now - 1}:${now - 86_400_000}`);
    for (let n = 0; n < REMEMBERED_BROWSERS_MAX - 1; n++) await redis.hset(key, `browser-${n}`, `${now + 86_400_000}:${now - 3_600_000 + n * 1000}`);
    const remember = async (secret: Buffer) => {
      const start = await eventually(async () => {
        const reply = await ask(Subjects.challengeStart, { tenantId: remembering, userId: dora, method: 'totp', context: { rememberDevice: true } });
        return reply.status === 'pending' ? reply : undefined;
      }, 5000, 'the tenant known');
      const verified = await ask(Subjects.challengeVerify, { tenantId: remembering, challengeId: String(start.challengeId), code: totp(secret, Date.now()) });
      assert.equal(verified.status, 'approved');
      return rememberTokenId(keyring, userTag(keyring, remembering, dora), String(verified.rememberToken));
    };
    const first = await remember(secrets[0]!);
    let ids = Object.keys(await redis.hgetall(key));
    assert.equal(ids.length, REMEMBERED_BROWSERS_MAX, 'the ended one dropped, the new one fits: none remembered is forgotten');
    assert.ok(ids.includes(first) && ids.includes('browser-0') && !ids.includes('ended'));
    const second = await remember(secrets[1]!);
    ids = Object.keys(await redis.hgetall(key));
    assert.equal(ids.length, REMEMBERED_BROWSERS_MAX, 'one beyond the bound: the oldest forgotten');
    assert.ok(!ids.includes('browser-0'), 'the browser remembered longest ago is forgotten');
    assert.ok(ids.includes('browser-1') && ids.includes(first) && ids.includes(second), 'the newer ones stay');
  });

  itWith({ real: ['nats', 'redis'] }, 'push suspended for the user: a start without a method takes another of their methods; one naming push is denied push_suspended', async () => {
    const pushing = uniqueTenant('push-suspended');
    const settings = { ...defaultTenantSettings(), enabledMethods: ['push' as const, 'totp' as const, 'sms' as const] };
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(pushing), tenantCreated(testTenant({ tenantId: pushing, settings })));
    const suspend = (userId: string) => redis.set(RedisKeys.pushSuspended(userTag(keyring, pushing, userId)), String(Date.now() + 60_000), 'PX', 60_000);
    const fatigued = uniqueUser('fatigued');
    await projectUser(fatigued, { tenantId: pushing, methods: ['push', 'totp'], defaultMethod: 'push', totp: [randomBytes(20)] });
    await suspend(fatigued);
    const byDefault = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: pushing, userId: fatigued });
      return reply.status === undefined ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.deepEqual([byDefault.status, byDefault.method], ['pending', 'totp']);
    const named = await ask(Subjects.challengeStart, { tenantId: pushing, userId: fatigued, method: 'push' });
    assert.deepEqual([named.status, named.reason], ['denied', 'push_suspended']);
    // Push the only method: nothing to take instead.
    const pushOnly = uniqueUser('push-only');
    await projectUser(pushOnly, { tenantId: pushing, methods: ['push'] });
    await suspend(pushOnly);
    const only = await ask(Subjects.challengeStart, { tenantId: pushing, userId: pushOnly });
    assert.deepEqual([only.status, only.reason], ['denied', 'push_suspended']);
    // The fatigue alert counts users whose push is suspended now, not starts refused while it is.
    const fatigue = async () => {
      const values = (await registry.getSingleMetric('mfa_push_fatigue_total')?.get())?.values ?? [];
      return Object.fromEntries(values.map((v) => [v.labels.event, v.value]));
    };
    const before = await fatigue();
    assert.equal((await ask(Subjects.challengeStart, { tenantId: pushing, userId: pushOnly })).reason, 'push_suspended');
    const refusing = uniqueUser('refusing');
    await projectUser(refusing, { tenantId: pushing, methods: ['push'] });
    const refusals = RedisKeys.pushRefusals(userTag(keyring, pushing, refusing));
    for (let n = 0; n < 3; n++) await redis.zadd(refusals, Date.now() - n, `refused-${n}`);
    const suspendedNow = await ask(Subjects.challengeStart, { tenantId: pushing, userId: refusing, method: 'push' });
    assert.deepEqual([suspendedNow.status, suspendedNow.reason], ['denied', 'push_suspended']);
    const after = await fatigue();
    assert.deepEqual(
      [(after.suspended ?? 0) - (before.suspended ?? 0), (after.refused_suspended ?? 0) - (before.refused_suspended ?? 0)],
      [1, 1],
    );
  });

  itWith({ real: ['nats', 'redis'] }, 'remember MFA: a call answered on the phone is the last MFA legacy clients rely on (no browser remembered)', async () => {
    const remembering = uniqueTenant('remember-call');
    const settings = { ...defaultTenantSettings(), rememberMfa: { enabled: true, days: 30 } };
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(remembering), tenantCreated(testTenant({ tenantId: remembering, settings })));
    const carol = uniqueUser('carol');
    await projectUser(carol, { tenantId: remembering, phone: '+14155550199', methods: ['voice'] });
    const legacy = () => ask(Subjects.challengeStart, { tenantId: remembering, userId: carol, context: { legacyClient: true } });
    const call = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: remembering, userId: carol, method: 'voice', context: { rememberDevice: true } });
      return reply.status === 'pending' ? reply : undefined;
    }, 5000, 'the tenant known');
    assert.equal((await legacy()).status, 'pending', 'no MFA completed yet');
    // Only the services may answer a call: an unsigned answer, or one signed for another body, is refused and changes nothing.
    const answer = { tenantId: remembering, challengeId: call.challengeId, approved: true };
    assert.equal((await ask(InternalSubjects.voiceOutcome, answer)).error?.code, 'forbidden');
    const signedForPin = signInternalRequest(keyring, InternalSubjects.voiceOutcome, JSON.stringify({ ...answer, approved: false }), Date.now());
    const replayed = await requestJson<Reply>(nc, InternalSubjects.voiceOutcome, JSON.stringify(answer), { timeoutMs: 5000, headers: { [Headers.internal]: signedForPin } });
    assert.equal(replayed.error?.code, 'forbidden');
    const stale = signInternalRequest(keyring, InternalSubjects.voiceOutcome, JSON.stringify(answer), Date.now() - 60_000);
    assert.equal((await requestJson<Reply>(nc, InternalSubjects.voiceOutcome, JSON.stringify(answer), { timeoutMs: 5000, headers: { [Headers.internal]: stale } })).error?.code, 'forbidden');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: remembering, challengeId: call.challengeId })).status, 'pending');
    const body = JSON.stringify(answer);
    const signature = signInternalRequest(keyring, InternalSubjects.voiceOutcome, body, Date.now());
    const send = () => requestJson<Reply>(nc, InternalSubjects.voiceOutcome, body, { timeoutMs: 5000, headers: { [Headers.internal]: signature } });
    const answered = await send();
    assert.equal(answered.status, 'approved');
    // A copy of that signed request, within its 30 s, is refused before it reaches the challenge.
    const copy = await send();
    assert.deepEqual([copy.error?.code, copy.error?.message], ['forbidden', 'this internal request was answered already (a copy of a signed request)']);
    const bypassed = await legacy();
    assert.deepEqual([bypassed.status, bypassed.reason], ['approved', 'remembered_device']);
    assert.equal(await redis.exists(RedisKeys.remembered(userTag(keyring, remembering, carol))), 0, 'no browser remembered with a token nobody received');
    // A call answered after its user was erased remembers nothing for whoever takes the id next.
    const late = await ask(Subjects.challengeStart, { tenantId: remembering, userId: carol, method: 'voice' });
    const tag = userTag(keyring, remembering, carol);
    assert.equal(await writer.erase(remembering, carol, seq++), true);
    assert.equal(await redis.exists(RedisKeys.lastMfa(tag)), 0, 'the erasure forgot the last MFA');
    assert.equal((await internal.request<Reply>(InternalSubjects.voiceOutcome, { tenantId: remembering, challengeId: late.challengeId, approved: true }, { timeoutMs: 5000 })).status, 'approved');
    assert.equal(await redis.exists(RedisKeys.lastMfa(tag)), 0, 'nor did the approval after it write it again');
  });

  itWith({ real: ['nats', 'redis'] }, "a call's answer sent again with its answer id after its reply was lost (the script ran) is recorded once: the same reply, one attempt, approved stays approved", async () => {
    // A tenant of its own: another test takes voice out of the shared one's methods.
    const calling = uniqueTenant('answer-once');
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(calling), tenantCreated(testTenant({ tenantId: calling, settings: defaultTenantSettings() })));
    const user = uniqueUser('answer-once');
    await projectUser(user, { tenantId: calling, phone: '+14155550177', methods: ['voice'] });
    const tag = userTag(keyring, calling, user);
    const startCall = async () => {
      const reply = await eventually(async () => {
        const started = await ask(Subjects.challengeStart, { tenantId: calling, userId: user, method: 'voice' });
        return started.status === 'pending' ? started : undefined;
      }, 5000, 'the tenant known');
      const challengeId = String(reply.challengeId);
      return { challengeId, key: RedisKeys.challenge(tag, parseChallengeId(challengeId)!.nonce) };
    };
    const answer = (challengeId: string, approved: boolean, answerId?: string) =>
      internal.request<Reply>(InternalSubjects.voiceOutcome, { tenantId: calling, challengeId, approved, ...(answerId ? { answerId } : {}) }, { timeoutMs: 5000 });
    // A Redis connection that closes once a script whose arguments hold `cutAt` has run, before its
    // reply reaches auth-challenge: the script ran, the request answers `unavailable`.
    const { store: cutStore, cutAt, close } = await storeBehindCut();
    try {
      const wrong = await startCall();
      const where = {
        tag, nonce: parseChallengeId(wrong.challengeId)!.nonce, tenantId: calling, now: new Date(), challengeId: wrong.challengeId, slot: hashSlotOf(tag),
        lockout: { threshold: 10, windowSeconds: 900, lockoutSeconds: 900, maxConsecutiveFailures: 100 } satisfies LockoutPolicy,
        context: JSON.stringify({ k: 'verify', t: calling, id: wrong.challengeId, n: Date.now(), s: { name: 'test', ip: '' } }),
      };
      const pinAnswer = `CA${randomUUID()}:1`;
      cutAt(pinAnswer);
      await assert.rejects(cutStore.recordVoiceOutcome({ ...where, approved: false, answerId: pinAnswer }), (error: Error & { code?: string }) => error.code === 'unavailable');
      assert.equal(await redis.hget(wrong.key, 'attempts'), '1', 'the script ran');
      assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '1');
      // dispatch sends the wrong PIN again: the same reply, nothing counted again.
      const expected = { status: 'pending', reason: 'invalid_code', answerId: pinAnswer };
      assert.deepEqual(await answer(wrong.challengeId, false, pinAnswer), expected);
      assert.deepEqual(await answer(wrong.challengeId, false, pinAnswer), expected);
      assert.equal(await redis.hget(wrong.key, 'attempts'), '1');
      assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '1');
      assert.equal(await redis.get(RedisKeys.failures(tag)), '1');
      // The next prompt's PIN is another answer: counted.
      assert.deepEqual(await answer(wrong.challengeId, false, `${pinAnswer.slice(0, -2)}:2`), { ...expected, answerId: `${pinAnswer.slice(0, -2)}:2` });
      assert.equal(await redis.hget(wrong.key, 'attempts'), '2');

      // # pressed; its approval's reply lost: sent again it is approved, not a conflict.
      const right = await startCall();
      const hashAnswer = `CA${randomUUID()}:1`;
      cutAt(hashAnswer);
      await assert.rejects(
        cutStore.recordVoiceOutcome({ ...where, nonce: parseChallengeId(right.challengeId)!.nonce, challengeId: right.challengeId, now: new Date(), approved: true, answerId: hashAnswer }),
        (error: Error & { code?: string }) => error.code === 'unavailable',
      );
      assert.equal(await redis.hget(right.key, 'status'), 'approved', 'the script ran');
      assert.deepEqual(await answer(right.challengeId, true, hashAnswer), { status: 'approved', answerId: hashAnswer });
      // Another answer (or one without an id) finds the challenge decided; another tenant learns nothing.
      assert.equal((await answer(right.challengeId, true, `${hashAnswer}0`)).error?.code, 'conflict');
      assert.equal((await answer(right.challengeId, true)).error?.code, 'conflict');
      const store = new ChallengeStore(redis, new ReplicatedWrites(redis, { replicas: 0, timeoutMs: 100 }, createLogger('test', { level: 'error' })));
      const otherTenant = { ...where, nonce: parseChallengeId(right.challengeId)!.nonce, challengeId: right.challengeId, tenantId: uniqueTenant('other'), now: new Date() };
      assert.deepEqual(await store.recordVoiceOutcome({ ...otherTenant, approved: true, answerId: hashAnswer }), { kind: 'not_found' });
    } finally {
      await close();
    }

    // An older dispatch (no answer id): each request is recorded, as before.
    const older = await startCall();
    assert.deepEqual(await answer(older.challengeId, false), { status: 'pending', reason: 'invalid_code' });
    assert.deepEqual(await answer(older.challengeId, false), { status: 'pending', reason: 'invalid_code' });
    assert.equal(await redis.hget(older.key, 'attempts'), '2');
  });

  /**
   * A ChallengeStore whose Redis connection goes through a proxy that, once told an argument
   * (`cutAt`), lets the next script carrying it run and then closes the connection instead of
   * passing its reply on: a reply lost after the script ran.
   */
  async function storeBehindCut() {
    const upstream = new URL(testEnv.redisUrl);
    let marker: string | undefined;
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const server = netConnect(Number(upstream.port || 6379), upstream.hostname);
      sockets.add(client).add(server);
      let cutting = false;
      client.on('data', (chunk) => {
        if (marker && chunk.includes(marker)) {
          cutting = true;
          marker = undefined;
        }
        server.write(chunk);
      });
      server.on('data', (chunk) => {
        // NOSCRIPT: the script did not run (ioredis sends it whole next): passed on.
        if (cutting && !chunk.toString('latin1').startsWith('-NOSCRIPT')) {
          client.destroy();
          server.destroy();
          return;
        }
        client.write(chunk);
      });
      client.on('close', () => server.destroy());
      server.on('close', () => client.destroy());
      client.on('error', () => undefined);
      server.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const { port } = proxy.address() as AddressInfo;
    // As the services connect (createRedis): a command written before the connection closed is not sent again.
    const client = new Redis({ host: '127.0.0.1', port, autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 1, commandTimeout: 2000 });
    client.on('error', () => undefined);
    const store = new ChallengeStore(client, new ReplicatedWrites(client, { replicas: 0, timeoutMs: 100 }, createLogger('test', { level: 'error' })));
    return {
      store,
      cutAt: (argument: string) => void (marker = argument),
      close: async () => {
        client.disconnect();
        for (const socket of sockets) socket.destroy();
        await new Promise((resolve) => proxy.close(resolve));
      },
    };
  }

  itWith({ real: ['nats', 'redis'] }, "SMS country rules: a phone in a blocked country, or outside the allowed ones, gets no SMS or call; the app still works", async () => {
    const js = jetstream(nc);
    const blocking = uniqueTenant('countries');
    const settings = { ...defaultTenantSettings(), sms: { allowedCountries: null, blockedCountries: ['SE'] } };
    await new EventPublisher(js).publish(EventSubjects.tenant(blocking), tenantCreated(testTenant({ tenantId: blocking, settings })));
    const swede = uniqueUser('swede');
    const american = uniqueUser('american');
    await projectUser(swede, { tenantId: blocking, phone: '+46701234567', phoneCountry: 'SE', totp: [randomBytes(20)] });
    await projectUser(american, { tenantId: blocking, phone: '+14155550123', phoneCountry: 'US' });
    const refused = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: blocking, userId: swede, method: 'sms' });
      return reply.status === 'registration_required' ? reply : undefined;
    }, 5000, 'the tenant known');
    assert.equal(refused.reason, 'country_not_allowed');
    assert.deepEqual([(await ask(Subjects.challengeStart, { tenantId: blocking, userId: swede })).method], ['totp'], 'a start without a method takes the app');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: blocking, userId: american, method: 'sms' })).status, 'pending');
    // Only some countries allowed: the others, and a phone of unknown country, are refused.
    const allowing = uniqueTenant('countries');
    await new EventPublisher(js).publish(
      EventSubjects.tenant(allowing),
      tenantCreated(testTenant({ tenantId: allowing, settings: { ...defaultTenantSettings(), sms: { allowedCountries: ['US', 'CA'], blockedCountries: [] } } })),
    );
    const unknownCountry = uniqueUser('unknown');
    await projectUser(american, { tenantId: allowing, phone: '+14155550123', phoneCountry: 'US' });
    await projectUser(swede, { tenantId: allowing, phone: '+46701234567', phoneCountry: 'SE' });
    await projectUser(unknownCountry, { tenantId: allowing, phone: '+88212345678' });
    const ok = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: allowing, userId: american, method: 'voice' });
      return reply.status === 'pending' ? reply : undefined;
    }, 5000, 'the second tenant known');
    assert.equal(ok.method, 'voice');
    for (const userId of [swede, unknownCountry]) {
      const reply = await ask(Subjects.challengeStart, { tenantId: allowing, userId });
      assert.deepEqual([reply.status, reply.reason], ['registration_required', 'country_not_allowed'], userId);
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'a deleted tenant (tenants.delete) is unknown to start, verify, resend and status, its users still in Redis until they are erased; created again, it is known again', async () => {
    const js = jetstream(nc);
    const leaving = uniqueTenant('leaving');
    await new EventPublisher(js).publish(EventSubjects.tenant(leaving), tenantCreated(testTenant({ tenantId: leaving, settings: defaultTenantSettings() })));
    const user = uniqueUser('leaving');
    await projectUser(user, { tenantId: leaving, phone: '+14155550177' });
    const pending = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: leaving, userId: user, method: 'sms' });
      return reply.status === 'pending' ? reply : undefined;
    }, 5000, 'the tenant known');
    const code = await smsCodeOf(String(pending.challengeId));
    // The offboarding has not erased the user yet: their projection is still in Redis.
    await new EventPublisher(js).publish(EventSubjects.tenant(leaving), tenantDeleted(testTenant({ tenantId: leaving })));
    await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId: leaving, userId: user, method: 'sms' })).error?.code === 'not_found' ? true : undefined), 5000, 'the deletion seen');
    for (const [subject, body] of [
      [Subjects.challengeStart, { tenantId: leaving, userId: user }],
      [Subjects.challengeVerify, { tenantId: leaving, challengeId: pending.challengeId, code }],
      [Subjects.challengeResend, { tenantId: leaving, challengeId: pending.challengeId }],
      [Subjects.challengeStatus, { tenantId: leaving, challengeId: pending.challengeId }],
    ] as const) {
      assert.deepEqual((await ask(subject, body)).error, { code: 'not_found', message: 'unknown tenant' }, subject);
    }
    // The id created again (a new tenant): known again.
    await new EventPublisher(js).publish(EventSubjects.tenant(leaving), tenantCreated(testTenant({ tenantId: leaving, settings: defaultTenantSettings() })));
    await eventually(async () => ((await ask(Subjects.challengeStatus, { tenantId: leaving, challengeId: pending.challengeId })).status === 'pending' ? true : undefined), 5000, 'the tenant known again');
  });

  itWith({ real: ['nats', 'redis'] }, 'locks a user out after 10 wrong codes across challenges: new challenges buy no new guesses', async () => {
    const user = uniqueUser();
    await projectUser(user, { phone: '+14155550107' });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(String((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' })).challengeId));
    const third = await smsCodeOf(ids[2]!);
    const wrong = third === '999999' ? '999998' : '999999';
    const replies: Reply[] = [];
    for (const challengeId of ids.slice(0, 2)) {
      for (let i = 0; i < 5; i++) replies.push(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code: wrong }));
    }
    // The first challenge runs out of attempts; the tenth wrong code (the default threshold) locks the user.
    assert.deepEqual([replies[4]!.status, replies[4]!.reason], ['denied', 'too_many_attempts']);
    assert.deepEqual([replies[9]!.status, replies[9]!.reason], ['denied', 'locked_out']);
    const locked = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: ids[2], code: third });
    assert.equal(locked.error?.code, 'rate_limited', 'even the right code is not checked while locked out');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' })).error?.code, 'rate_limited');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: ids[2] })).status, 'pending');
    // When the lockout ends (its key expires), the pending challenge still works, and success resets the count.
    await redis.del(RedisKeys.failures(parseChallengeId(ids[2]!)!.tag));
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: ids[2], code: third })).status, 'approved');
    assert.equal(await redis.exists(RedisKeys.failures(parseChallengeId(ids[2]!)!.tag)), 0);
  });

  itWith({ real: ['nats', 'redis'] }, 'seals the personal data of ChallengeStarted under the user’s data key from the projection (v2)', async () => {
    const user = uniqueUser();
    const phone = '+14155550177';
    await projectUser(user, { phone });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const msg = await eventually(async () => {
      const m = await jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested });
      return m && m.json<{ data: { challengeId: string } }>().data.challengeId === start.challengeId ? m : undefined;
    }, 5000, 'the ChallengeStarted event');
    const raw = Buffer.from(msg.data).toString('utf8');
    for (const personal of [phone, 'Helga Test', 'helga@contoso.example']) assert.ok(!raw.includes(personal), `${personal} in clear`);
    const event = msg.json<{ version: number; data: { pii: string; delivery: Record<string, unknown>; profile?: unknown } }>();
    assert.equal(event.version, 2);
    assert.equal(event.data.profile, undefined);
    assert.equal(event.data.delivery.to, undefined);
    const field = parseWrappedDataKey(String(await redis.hget(RedisKeys.user(parseChallengeId(String(start.challengeId))!.tag), 'dataKey')))!;
    const dataKey = unwrapDataKey(keyring, tenant, user, field.gen, field.wrapped);
    assert.deepEqual(openPersonalData(dataKey, { tenantId: tenant, userId: user, purpose: 'challenge' }, event.data.pii), {
      displayName: 'Helga Test',
      email: 'helga@contoso.example',
      phoneNumber: phone,
    });
    // Bound to its purpose: the same value does not open as a profile.
    assert.throws(() => openPersonalData(dataKey, { tenantId: tenant, userId: user, purpose: 'profile' }, event.data.pii));
  });

  itWith({ real: ['nats', 'redis'] }, 'Redis never receives a typed code, a TOTP secret or the key that unmasks it (MONITOR)', async () => {
    const secret = randomBytes(20);
    const user = uniqueUser();
    const tag = userTag(keyring, tenant, user);
    const unmaskKey = projectionUserKey(keyring, tag);
    const seen: string[][] = [];
    const typed: string[] = [];
    const challenges: { totp?: unknown; sms?: unknown } = {};
    const verify = async (challengeId: unknown, code: string) => {
      typed.push(code);
      return ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code });
    };
    const monitor = await monitorRedis(redis, (args) => seen.push(args));
    try {
      await projectUser(user, { totp: [secret], phone: '+14155550110' });
      const totpStart = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
      challenges.totp = totpStart.challengeId;
      const code = hotp(secret, totpStep(Date.now()));
      const wrongTotp = String((Number(code) + 500_000) % 1_000_000).padStart(6, '0');
      // The replies in full on a failure: a wrong decision and an unavailable service look alike otherwise.
      const wrongTotpReply = await verify(totpStart.challengeId, wrongTotp);
      assert.equal(wrongTotpReply.reason, 'invalid_code', JSON.stringify({ totpStart, wrongTotpReply }));
      const totpReply = await verify(totpStart.challengeId, code);
      assert.equal(totpReply.status, 'approved', JSON.stringify(totpReply));
      const smsStart = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
      challenges.sms = smsStart.challengeId;
      const smsCode = await smsCodeOf(String(smsStart.challengeId));
      const wrongSms = String((Number(smsCode) + 500_000) % 1_000_000).padStart(6, '0');
      const wrongSmsReply = await verify(smsStart.challengeId, wrongSms);
      assert.equal(wrongSmsReply.reason, 'invalid_code', JSON.stringify({ smsStart, wrongSmsReply }));
      const smsReply = await verify(smsStart.challengeId, smsCode);
      assert.equal(smsReply.status, 'approved', JSON.stringify(smsReply));
      // Everything sent before this marker has been seen by the monitor once the marker is.
      const marker = `mfa:monitor-test:${randomBytes(8).toString('hex')}`;
      await redis.get(marker);
      await eventually(async () => seen.some((args) => args.includes(marker)) || undefined, 5000, 'the monitor to catch up');
    } finally {
      monitor.close();
    }
    // The monitor did see the verifications: two script calls per TOTP verify, one per SMS verify.
    const scriptCallsOn = (challengeId: unknown) => {
      const key = RedisKeys.challenge(tag, parseChallengeId(String(challengeId))!.nonce);
      return seen.filter((args) => /^evalsha$|^eval$/i.test(args[0] ?? '') && args.includes(key)).length;
    };
    assert.equal(scriptCallsOn(challenges.totp), 1 + 2, 'start, then one call for each TOTP verify (checked with the tokens the start answered)');
    assert.equal(scriptCallsOn(challenges.sms), 1 + 2, 'start, then one call for each SMS verify');
    const forbidden: Array<[string, string]> = [
      ['secret (hex)', secret.toString('hex')],
      ['secret (HEX)', secret.toString('hex').toUpperCase()],
      ['secret (base32)', base32Encode(secret)],
      ['secret (bytes)', monitorRepr(secret)],
      ['unmask key (hex)', unmaskKey.toString('hex')],
      ['unmask key (base64)', unmaskKey.toString('base64')],
      ['unmask key (base64url)', unmaskKey.toString('base64url')],
      ['unmask key (bytes)', monitorRepr(unmaskKey)],
    ];
    for (const args of seen) {
      for (const arg of args) {
        for (const [what, value] of forbidden) assert.ok(!arg.includes(value), `${what} sent to Redis in ${args[0]}`);
        // A code may only appear inside a longer number (a timestamp, say), never on its own.
        for (const code of typed) assert.doesNotMatch(arg, new RegExp(`(^|\\D)${code}(\\D|$)`), `typed code sent to Redis in ${args[0]}`);
      }
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'TOTP: one code presented to two challenges at once is accepted once', async () => {
    const secret = randomBytes(20);
    const user = uniqueUser();
    await projectUser(user, { totp: [secret] });
    const a = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const b = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const code = hotp(secret, totpStep(Date.now()));
    const replies = await Promise.all([a, b].map((c) => ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: c.challengeId, code })));
    assert.deepEqual(replies.map((r) => r.status).sort(), ['approved', 'pending']);
    assert.equal(replies.find((r) => r.status === 'pending')?.reason, 'invalid_code');
  });

  /**
   * The challenge store alone (no service), for a new TOTP user: `startOne` starts a TOTP challenge
   * and gives what its verify calls take, with the tokens the start answered.
   */
  async function totpStoreUser() {
    const store = new ChallengeStore(redis, new ReplicatedWrites(redis, { replicas: 0, timeoutMs: 100 }, createLogger('test', { level: 'error' })));
    const lockout: LockoutPolicy = { threshold: 10, windowSeconds: 900, lockoutSeconds: 900, maxConsecutiveFailures: 100 };
    const user = uniqueUser();
    const tag = userTag(keyring, tenant, user);
    await projectUser(user, { totp: [randomBytes(20)] });
    const startOne = async () => {
      const nonce = randomBytes(16).toString('base64url').slice(0, 22);
      const now = new Date();
      const started = await store.startChallenge({
        tag, nonce, tenantId: tenant, userId: user, requestedMethod: 'totp', enabledMethods: ['totp', 'sms'], now,
        expiresAt: new Date(now.getTime() + 180_000), maxAttempts: 5, codeHash: hashCode(keyring, 'x', 'y'), ttlSeconds: 600,
        smsMaxSends: 5, smsWindowSeconds: 300, tenantKnown: true, lockout,
        challengeId: `${tag}.${nonce}`, context: '{}', slot: hashSlotOf(tag),
      });
      assert.ok(started.kind === 'pending' && started.totp, 'a pending TOTP challenge answers the tokens');
      const where = { tag, nonce, tenantId: tenant, now: new Date(), lockout, challengeId: `${tag}.${nonce}`, context: '{}', slot: hashSlotOf(tag) };
      return { where, tokens: started.totp };
    };
    return { store, user, tag, startOne };
  }

  itWith({ real: ['redis'] }, "a known user of a tenant whose settings the instance could not read is not decided under the defaults", async () => {
    const store = new ChallengeStore(redis, new ReplicatedWrites(redis, { replicas: 0, timeoutMs: 100 }, createLogger('test', { level: 'error' })));
    const lockout: LockoutPolicy = { threshold: 10, windowSeconds: 900, lockoutSeconds: 900, maxConsecutiveFailures: 100 };
    const start = async (userId: string, tenantKnown: boolean, tenantUnread = false) => {
      const tag = userTag(keyring, tenant, userId);
      const nonce = randomBytes(16).toString('base64url').slice(0, 22);
      const now = new Date();
      return store.startChallenge({
        tag, nonce, tenantId: tenant, userId, requestedMethod: 'totp', enabledMethods: ['totp', 'sms'], now,
        expiresAt: new Date(now.getTime() + 180_000), maxAttempts: 5, codeHash: hashCode(keyring, 'x', 'y'), ttlSeconds: 600,
        smsMaxSends: 5, smsWindowSeconds: 300, tenantKnown, tenantUnread, lockout, challengeId: `${tag}.${nonce}`, context: '{}', slot: hashSlotOf(tag),
      });
    };
    const user = uniqueUser('unread');
    await projectUser(user, { totp: [randomBytes(20)] });
    assert.equal((await start(user, true)).kind, 'pending');
    assert.equal((await start(user, false, true)).kind, 'tenant_unread');
    assert.equal((await start(uniqueUser('nobody'), false, true)).kind, 'tenant_unread');
    assert.equal((await start(uniqueUser('nobody'), false)).kind, 'unknown_tenant');
  });

  itWith({ real: ['redis'] }, 'the TOTP outcome script checks again what may have changed since the tokens were read', async () => {
    const { store, user, tag, startOne } = await totpStoreUser();
    const { where } = await startOne();
    const check = await store.checkCode({ ...where, codeHash: hashCode(keyring, 'x', '123456') });
    assert.deepEqual(check.kind === 'totp_check' && maskedTokensOf(check.tokens).map((t) => [t.tokenId, t.lastStep]), [['tok0', 0]]);
    // A token deleted since it was read, a step spent since it was read: wrong codes.
    const first = await store.recordTotpCheck({ ...where, match: { matched: true, tokenId: 'deleted', step: 99 } });
    assert.ok(first.kind === 'rejected');
    const { guard, ...rest } = first;
    assert.deepEqual(rest, { kind: 'rejected', userId: user, method: 'totp', attempts: 1, remaining: 4, cause: 'mismatch' });
    // The counters the event records: one failure, its window ending 900 s from now, one in a row.
    assert.equal(guard.failures, 1);
    assert.equal(guard.consecutive, 1);
    assert.ok(Math.abs(guard.resetAt - (where.now.getTime() + 900_000)) < 5_000, `resetAt ${guard.resetAt}`);
    assert.equal((await store.recordTotpCheck({ ...where, match: { matched: true, tokenId: 'tok0', step: 0 } })).kind, 'rejected');
    assert.equal((await store.recordTotpCheck({ ...where, match: { matched: false, cause: 'reused' } })).kind, 'rejected');
    assert.equal(await redis.get(RedisKeys.consecutiveFailures(tag)), '3');
    assert.deepEqual(await store.recordTotpCheck({ ...where, match: { matched: true, tokenId: 'tok0', step: 99 } }), {
      kind: 'approved', userId: user, method: 'totp', tokenId: 'tok0',
    });
    assert.equal(await redis.hget(RedisKeys.totpSteps(tag), 'tok0'), '99');
    assert.equal(await redis.exists(RedisKeys.failures(tag), RedisKeys.consecutiveFailures(tag)), 0, 'a success resets both counters');
    assert.equal((await store.recordTotpCheck({ ...where, match: { matched: true, tokenId: 'tok0', step: 100 } })).kind, 'conflict');
    // The replay guard holds across challenges.
    const next = await startOne();
    const replay = await store.recordTotpCheck({ ...next.where, match: { matched: true, tokenId: 'tok0', step: 99 } });
    assert.equal(replay.kind === 'rejected' && replay.cause, 'reused');
  });

  itWith({ real: ['redis'] }, 'TOTP in one call: the verify script decides with the tokens the start answered only while they are the user\'s', async () => {
    const { store, user, tag, startOne: start } = await totpStoreUser();
    const codeHash = hashCode(keyring, 'x', '123456');
    const startOne = async () => {
      const { where, tokens } = await start();
      return { where: { ...where, codeHash }, tokens };
    };
    const attemptsOf = async (nonce: string) => redis.hget(RedisKeys.challenge(tag, nonce), 'attempts');

    // The tokens as the projection holds them, with their last accepted step; never in the outbox.
    const first = await startOne();
    assert.deepEqual(maskedTokensOf(first.tokens).map((t) => [t.tokenId, t.lastStep]), [['tok0', 0]]);
    const kept = await redis.hget(slotOutboxKey(hashSlotOf(tag)), `${first.where.challengeId}:pending`);
    assert.ok(kept && !kept.includes(first.tokens[1]!), 'the kept reply holds no token');
    // A wrong code, then the right one: each decided and recorded by the one call.
    const wrong = await store.checkCode({ ...first.where, totp: { match: { matched: false, cause: 'mismatch' }, tokens: first.tokens } });
    assert.ok(wrong.kind === 'rejected' && wrong.attempts === 1 && wrong.cause === 'mismatch', JSON.stringify(wrong));
    assert.deepEqual(await store.checkCode({ ...first.where, totp: { match: { matched: true, tokenId: 'tok0', step: 50 }, tokens: first.tokens } }), {
      kind: 'approved', userId: user, method: 'totp', tokenId: 'tok0',
    });
    assert.equal(await redis.hget(RedisKeys.totpSteps(tag), 'tok0'), '50');

    // The start's tokens are stale: the step was spent since (by another challenge): reused.
    const stale = await startOne();
    const spent = await store.checkCode({ ...stale.where, totp: { match: { matched: true, tokenId: 'tok0', step: 50 }, tokens: first.tokens } });
    assert.equal(spent.kind === 'rejected' && spent.cause, 'reused');

    // A token added since the start (it might match): nothing decided, the current tokens answered.
    const added = await startOne();
    await projectUser(user, { totp: [randomBytes(20), randomBytes(20)] });
    const recheck = await store.checkCode({ ...added.where, totp: { match: { matched: false, cause: 'mismatch' }, tokens: added.tokens } });
    assert.ok(recheck.kind === 'totp_check');
    assert.deepEqual(maskedTokensOf(recheck.tokens).map((t) => t.tokenId).sort(), ['tok0', 'tok1']);
    assert.equal(await attemptsOf(added.where.nonce), '0', 'nothing counted');
    // A token replaced under the same id (another secret): the same.
    const replaced = await startOne();
    await projectUser(user, { totp: [randomBytes(20), randomBytes(20)] });
    const again = await store.checkCode({ ...replaced.where, totp: { match: { matched: true, tokenId: 'tok1', step: 60 }, tokens: replaced.tokens } });
    assert.ok(again.kind === 'totp_check');
    assert.notDeepEqual(tokenSpecsOf(again.tokens), tokenSpecsOf(replaced.tokens));
    assert.equal(await attemptsOf(replaced.where.nonce), '0', 'nothing counted');
    assert.equal(await redis.hget(RedisKeys.totpSteps(tag), 'tok1'), '0', 'nothing accepted');
    // A token removed: its code no longer counts.
    const removed = await startOne();
    await projectUser(user, { totp: [randomBytes(20)] });
    assert.equal((await store.checkCode({ ...removed.where, totp: { match: { matched: true, tokenId: 'tok1', step: 60 }, tokens: removed.tokens } })).kind, 'totp_check');
  });

  itWith({ real: ['nats', 'redis'] }, 'TOTP: a verify on an instance that did not start the challenge checks the code with the tokens a first call reads', async () => {
    const secret = randomBytes(20);
    const user = uniqueUser();
    await projectUser(user, { totp: [secret] });
    const app = service.app;
    // Another instance: its own memory, the same Redis and JetStream.
    const other = new ChallengeService(
      app.get(ChallengeStore), app.get(Outbox), app.get(TenantSettingsCache), app.get(IpLocks), app.get(EventPublisher),
      app.get(CODE_GENERATOR), app.get(CONFIG), app.get(SERVER_IDENTITY), app.get(LOGGER),
    );
    const checks = async () => {
      const values = (await registry.getSingleMetric('mfa_challenge_totp_checks_total')?.get())?.values ?? [];
      return Object.fromEntries(values.map((v) => [v.labels.path, v.value]));
    };
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const challengeId = String(start.challengeId);
    const code = hotp(secret, totpStep(Date.now()));
    const wrong = String((Number(code) + 500_000) % 1_000_000).padStart(6, '0');
    const before = await checks();
    assert.deepEqual(await other.verify({ tenantId: tenant, challengeId, code: wrong }, new Date()), { challengeId, status: 'pending', reason: 'invalid_code' });
    const afterWrong = await checks();
    assert.equal((afterWrong.two_calls ?? 0) - (before.two_calls ?? 0), 1);
    // The tokens that first call read serve the next code on that instance: one call.
    assert.deepEqual(await other.verify({ tenantId: tenant, challengeId, code }, new Date()), { challengeId, status: 'approved' });
    const afterRight = await checks();
    assert.equal((afterRight.one_call ?? 0) - (afterWrong.one_call ?? 0), 1);
    assert.equal(await redis.get(RedisKeys.consecutiveFailures(userTag(keyring, tenant, user))), null, 'the success reset the counters');
  });

  itWith({ real: ['nats', 'redis'] }, "a verify on an instance that could not read the tenant's settings decides nothing under the defaults: unavailable, nothing counted", async () => {
    const secret = randomBytes(20);
    const user = uniqueUser();
    await projectUser(user, { totp: [secret] });
    const app = service.app;
    // Another instance, to which the tenant is new and whose lookup of it in the log failed.
    const cache = app.get(TenantSettingsCache);
    const unread = Object.assign(Object.create(cache) as TenantSettingsCache, { has: () => false, lookup: async () => 'unread' as const });
    const other = new ChallengeService(
      app.get(ChallengeStore), app.get(Outbox), unread, app.get(IpLocks), app.get(EventPublisher),
      app.get(CODE_GENERATOR), app.get(CONFIG), app.get(SERVER_IDENTITY), app.get(LOGGER),
    );
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    const challengeId = String(start.challengeId);
    const code = hotp(secret, totpStep(Date.now()));
    const wrong = String((Number(code) + 500_000) % 1_000_000).padStart(6, '0');
    await assert.rejects(other.verify({ tenantId: tenant, challengeId, code: wrong }, new Date()), (error: unknown) => error instanceof ContractError && error.code === 'unavailable');
    await assert.rejects(other.verify({ tenantId: tenant, challengeId, code }, new Date()), (error: unknown) => error instanceof ContractError && error.code === 'unavailable');
    const id = parseChallengeId(challengeId)!;
    assert.deepEqual(await redis.hmget(RedisKeys.challenge(id.tag, id.nonce), 'status', 'attempts'), ['pending', '0'], 'nothing decided, nothing counted');
    // The instance that reads the tenant decides it.
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId, code }), { challengeId, status: 'approved' });
  });

  /** The last event recorded on `subject`, once it is the one of `challengeId`. */
  const lastEventOf = (subject: string, challengeId: unknown) =>
    eventually(async () => {
      const m = await jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: subject });
      const event = m?.json<{ id: string; type: string; data: Record<string, unknown> & { challengeId: string } }>();
      return event?.data.challengeId === challengeId ? event : undefined;
    }, 5000, `the event of ${String(challengeId)} on ${subject}`);

  itWith({ real: ['nats', 'redis'] }, 'RADIUS: a start with context.radius is recorded via radius, decided by the RADIUS client; the relay rebuilds the same event; the reply masks the phone', async () => {
    const user = uniqueUser('radius');
    await projectUser(user, { phone: '+14155550178' });
    const radius = { serverName: 'vpn-gateway', serverIp: '192.0.2.10' };
    // Keep the decisions in the outbox (as if JetStream had not acknowledged), to rebuild their events as the relay does.
    const outbox = service.app.get(Outbox);
    const remove = outbox.remove.bind(outbox);
    outbox.remove = () => undefined;
    let start: Reply;
    try {
      start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, clientIp: '198.51.100.20', context: { radius } });
    } finally {
      outbox.remove = remove;
    }
    assert.deepEqual([start.status, start.method, start.sentTo], ['pending', 'sms', '+*********78']);
    const event = await lastEventOf(EventSubjects.smsRequested, start.challengeId);
    assert.equal(event.type, 'ChallengeStarted');
    assert.deepEqual([event.data.via, event.data.server, event.data.clientIp], ['radius', { name: 'vpn-gateway', ip: '192.0.2.10' }, '198.51.100.20']);
    const challengeId = String(start.challengeId);
    const slot = hashSlotOf(parseChallengeId(challengeId)!.tag);
    const raw = await redis.hget(slotOutboxKey(slot), `${challengeId}:pending`);
    const record = parseDecisionRecord(raw!);
    assert.equal(record?.c.k === 'start' && record.c.v, 'radius');
    const rebuilt = service.app.get(ChallengeService).eventOfRecord(record!);
    await redis.hdel(slotOutboxKey(slot), `${challengeId}:pending`);
    assert.equal(rebuilt?.subject, EventSubjects.smsRequested);
    // The same event, same id (de-duplicated), but for the trace context and `pii`: this test's
    // projection holds no pre-sealed copy, so each build seals the personal data with a fresh IV.
    const comparable = (e: { metadata?: unknown; data: Record<string, unknown> }) => {
      const { metadata: _trace, data, ...envelope } = e;
      const { pii: _pii, ...rest } = data;
      return { ...envelope, data: rest };
    };
    assert.deepEqual(comparable(rebuilt!.event as never), comparable(event));

    // Without context.radius nothing changes: no via, this instance as the server.
    const plain = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const over = await lastEventOf(EventSubjects.smsRequested, plain.challengeId);
    assert.equal('via' in over.data, false);
    assert.notDeepEqual(over.data.server, event.data.server);
    assert.equal(plain.sentTo, '+*********78');
  });

  itWith({ real: ['nats', 'redis'] }, 'RADIUS in OTP password mode: never SMS; an SMS-only user gets method_disabled and nothing is sent, an SMS-default user with a TOTP token gets TOTP', async () => {
    const radius = { serverName: '192.0.2.0/24', serverIp: '192.0.2.11', passwordMode: 'otp' };
    const smsOnly = uniqueUser('radius-sms');
    await projectUser(smsOnly, { phone: '+14155550179', methods: ['sms'] });
    for (const method of [undefined, 'sms']) {
      const refused = await ask(Subjects.challengeStart, { tenantId: tenant, userId: smsOnly, ...(method ? { method } : {}), context: { radius } });
      assert.deepEqual([refused.status, refused.reason, refused.sentTo], ['registration_required', 'method_disabled', undefined], `method ${method}`);
      const recorded = await lastEventOf(EventSubjects.challengeRegistrationRequired, refused.challengeId);
      assert.deepEqual([recorded.data.via, recorded.data.server], ['radius', { name: '192.0.2.0/24', ip: '192.0.2.11' }]);
    }
    assert.equal(await redis.zcard(RedisKeys.smsSends(userTag(keyring, tenant, smsOnly))), 0, 'no SMS counted, so none sent');
    // The same user in challenge mode (or over NATS) gets the SMS.
    const challengeMode = await ask(Subjects.challengeStart, { tenantId: tenant, userId: smsOnly, context: { radius: { ...radius, passwordMode: 'challenge' } } });
    assert.deepEqual([challengeMode.status, challengeMode.method], ['pending', 'sms']);

    const both = uniqueUser('radius-both');
    await projectUser(both, { phone: '+14155550180', totp: [randomBytes(20)], methods: ['totp', 'sms'], defaultMethod: 'sms' });
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: both })).method, 'sms', 'the default over NATS');
    const otp = await ask(Subjects.challengeStart, { tenantId: tenant, userId: both, context: { radius } });
    assert.deepEqual([otp.status, otp.method, otp.sentTo], ['pending', 'totp', undefined]);
    const started = await lastEventOf(EventSubjects.challengeStarted('totp'), otp.challengeId);
    assert.equal(started.data.via, 'radius');
  });

  itWith({ real: ['nats', 'redis'] }, 'answers bad input on every subject with a contract error and keeps serving', async () => {
    const bodies: Array<[string, string | Uint8Array, string]> = [];
    for (const subject of [Subjects.challengeStart, Subjects.challengeVerify, Subjects.challengeStatus, Subjects.challengeResend]) {
      bodies.push([subject, '{not json', 'invalid_request']);
      bodies.push([subject, '[]', 'invalid_request']);
      bodies.push([subject, JSON.stringify({ tenantId: 42 }), 'invalid_request']);
      bodies.push([subject, JSON.stringify({ tenantId: tenant, userId: 'x', challengeId: 'y', code: 'x'.repeat(20_000) }), 'invalid_request']);
      bodies.push([subject, new Uint8Array([0xff, 0xfe, 0x00]), 'invalid_request']);
    }
    bodies.push([Subjects.challengeStart, JSON.stringify({ tenantId: tenant, userId: 'u', method: 'carrier-pigeon' }), 'invalid_request']);
    bodies.push([Subjects.challengeStart, JSON.stringify({ tenantId: '../../etc', userId: 'u' }), 'invalid_request']);
    bodies.push([Subjects.challengeStart, JSON.stringify({ tenantId: tenant, userId: 'u\u0000' }), 'invalid_request']);
    bodies.push([Subjects.challengeStart, JSON.stringify({ tenantId: tenant, userId: 'u', context: { radius: { serverName: 'vpn', serverIp: 'vpn.example' } } }), 'invalid_request']);
    bodies.push([Subjects.challengeStart, JSON.stringify({ tenantId: tenant, userId: 'u', context: { radius: { serverName: 'vpn', serverIp: '192.0.2.1', secret: 'x' } } }), 'invalid_request']);
    bodies.push([Subjects.challengeVerify, JSON.stringify({ tenantId: tenant, challengeId: 'nope', code: '123456' }), 'not_found']);
    bodies.push([Subjects.challengeVerify, JSON.stringify({ tenantId: tenant, challengeId: `${'A'.repeat(22)}.${'B'.repeat(22)}`, code: '123456' }), 'not_found']);
    bodies.push([Subjects.challengeVerify, JSON.stringify({ tenantId: tenant, challengeId: 'x', code: 123456 }), 'invalid_request']);
    bodies.push([Subjects.challengeStatus, JSON.stringify({ tenantId: tenant, challengeId: 'nope' }), 'not_found']);
    bodies.push([Subjects.challengeResend, JSON.stringify({ tenantId: tenant, challengeId: 'nope' }), 'not_found']);
    bodies.push([Subjects.challengeResend, JSON.stringify({ tenantId: tenant, challengeId: `${'A'.repeat(22)}.${'B'.repeat(22)}` }), 'not_found']);
    bodies.push([Subjects.challengeResend, JSON.stringify({ tenantId: tenant, challengeId: 42 }), 'invalid_request']);
    bodies.push([Subjects.challengeResend, JSON.stringify({ tenantId: tenant }), 'invalid_request']);
    for (const [subject, body, code] of bodies) {
      const msg = await nc.request(subject, body, { timeout: 5000 });
      const reply = msg.json<Reply>();
      assert.equal(reply.error?.code, code, `${subject} ${String(body).slice(0, 60)}`);
      assert.equal(typeof reply.error?.message, 'string');
    }
    const res = await fetch(`${service.url}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok', checks: { nats: 'ok', redis: 'ok' } });
  });
});

