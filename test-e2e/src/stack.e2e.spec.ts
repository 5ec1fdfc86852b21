import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, RequestSchemas, Streams, Subjects, type AnyEvent, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import {
  eventually,
  FakeTwilio,
  hasOathtool,
  SmtpSink,
  itWith,
  oathtoolTotp,
  OtlpReceiver,
  startStack,
  testDatabaseUrl, testEnv,
  uniqueTenant,
  uniqueUser,
  type Stack,
} from '@mfa/testing';
import { base32Decode, totp } from '@mfa/crypto';
import { runDemo } from './demo.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

// Every test drives the whole stack, whose services use all three servers; a fake is named where
// the test reads what it received.
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/**
 * The whole product as processes, scaled out: two instances of every service against one NATS,
 * Redis and Postgres, an IdP speaking the public NATS API, SMS through a fake Twilio speaking
 * Twilio's REST API, traces exported over OTLP to a local receiver.
 */
describe('end to end: two instances of every service', () => {
  const twilio = new FakeTwilio();
  const otlp = new OtlpReceiver();
  const smtp = new SmtpSink();
  let stack: Stack;
  let nc: NatsConnection;
  let js: JetStreamClient;
  const startedAt = new Date();
  /** Everything the services printed, to check that no secret ever reaches a log. */
  const logLines: string[] = [];
  const secretsSeen: string[] = [];
  const tenant = uniqueTenant('e2e');
  const ask = (subject: string, body: unknown, headers?: Record<string, string>) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, ...(headers ? { headers } : {}) });

  before(async () => {
    await twilio.start();
    await otlp.start();
    await smtp.start();
    stack = await startStack({
      instances: 2,
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'debug',
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        ...twilio.env(),
        ...otlp.env(),
        ...smtp.env(),
      },
      // Calls go to the development voice provider: the demo below plays the phone.
      serviceEnv: { dispatch: { VOICE_PROVIDER: 'console' } },
      onLine: (service, line) => {
        logLines.push(line);
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-idp' });
    js = jetstream(nc);
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await twilio.stop();
    await otlp.stop();
    await smtp.stop();
  });

  async function eventsSince(filter: string): Promise<AnyEvent[]> {
    const consumer = await js.consumers.get(Streams.challenges.name, {
      filter_subjects: filter,
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: startedAt.toISOString(),
    });
    const out: AnyEvent[] = [];
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 1000 });
      let n = 0;
      for await (const m of batch) {
        n++;
        out.push(parseEvent(m.json()));
      }
      if (n === 0) break;
    }
    return out;
  }

  itWith({ real: wholeStack, fake: ['twilio'] }, 'SMS sign-ins: one SMS per challenge, started on one instance and verified on another, one report row each', async () => {
    const user = uniqueUser();
    const phone = `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
    const registered = await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, displayName: 'Helga Larsson', email: user, phoneNumber: phone });
    assert.deepEqual(registered, { userId: user, methods: ['sms', 'voice'] });
    await ask(Subjects.tenantsConfigure, { tenantId: tenant, settings: { codeLifetimeSeconds: 300 } });
    const challengeIds: string[] = [];
    for (let i = 0; i < 12; i++) {
      const other = uniqueUser('sms');
      const otherPhone = `+1628555${String(i).padStart(4, '0')}`;
      await ask(Subjects.usersRegister, { tenantId: tenant, userId: other, phoneNumber: otherPhone });
      const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: other, clientIp: '198.51.100.9', application: 'e2e' });
      assert.equal(start.status, 'pending', JSON.stringify(start));
      assert.equal(start.method, 'sms');
      const sms = await twilio.waitFor((m) => m.to === otherPhone, 15_000);
      const verify = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: FakeTwilio.codeOf(sms) });
      assert.deepEqual(verify, { challengeId: start.challengeId, status: 'approved' });
      challengeIds.push(String(start.challengeId));
    }
    // Exactly one SMS per challenge, although two dispatch instances share the consumer.
    await new Promise((r) => setTimeout(r, 1000));
    const delivered = twilio.messages.filter((m) => m.to.startsWith('+1628'));
    assert.equal(delivered.length, challengeIds.length);
    // Some challenge was verified by another instance than the one that started it.
    const events = await eventually(async () => {
      const all = await eventsSince('mfa.evt.challenge.>');
      const mine = all.filter((e) => e.tenantId === tenant);
      return mine.filter((e) => e.type === 'ChallengeApproved').length >= challengeIds.length ? mine : undefined;
    }, 15_000, 'challenge events');
    const startedOn = new Map(events.filter((e) => e.type === 'ChallengeStarted').map((e) => [e.aggregateId, (e.data as { server: { name: string } }).server.name]));
    const approvedOn = events.filter((e) => e.type === 'ChallengeApproved').map((e) => [e.aggregateId, (e.data as { server: { name: string } }).server.name] as const);
    assert.equal(new Set(startedOn.values()).size, 2, 'both auth-challenge instances started challenges');
    assert.ok(approvedOn.some(([id, server]) => startedOn.get(id) !== server), 'a challenge was verified on the other instance');
    // One report row per challenge (two reporting instances share the projection).
    const items = await eventually(async () => {
      const r = await ask(Subjects.reportsSigninsQuery, { tenantId: tenant, limit: 100 });
      const list = (r.items as SigninItem[] | undefined) ?? [];
      return list.length >= challengeIds.length ? list : undefined;
    }, 15_000, 'report rows');
    assert.equal(items.length, challengeIds.length);
    assert.deepEqual(new Set(items.map((i) => i.challengeId)), new Set(challengeIds));
    for (const item of items) {
      assert.equal(item.result, 'success');
      assert.equal(item.resultDetail, 'MFA successfully completed');
      assert.equal(item.authMethod, 'sms');
      assert.equal(item.clientIp, '198.51.100.9');
      assert.equal(item.application, 'e2e');
      assert.match(String(item.serverName), /^auth-challenge-[12]$/);
    }
  });

  itWith({ real: wholeStack }, 'authenticator app: enroll, activate with an oathtool code, sign in, and the code is never accepted twice', async () => {
    const user = uniqueUser('app');
    await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, displayName: 'App User' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenant, userId: user, label: 'Phone' });
    assert.equal(enrolled.digits, 6);
    assert.equal(enrolled.period, 30);
    assert.equal(enrolled.algorithm, 'SHA1');
    const secret = String(enrolled.secret);
    secretsSeen.push(secret);
    assert.ok(base32Decode(secret).length >= 20, 'secret of at least 160 bits');
    const uri = new URL(String(enrolled.otpauthUri));
    assert.equal(uri.protocol, 'otpauth:');
    assert.equal(uri.searchParams.get('secret'), secret);
    assert.ok(uri.searchParams.get('issuer'));
    const now = new Date();
    const codeAt = (at: Date) => (hasOathtool() ? oathtoolTotp(secret, { at }) : totp(base32Decode(secret), at.getTime()));
    const activated = await ask(Subjects.totpActivate, { tenantId: tenant, userId: user, tokenId: enrolled.tokenId, code: codeAt(now) });
    assert.deepEqual(activated, { tokenId: enrolled.tokenId, active: true });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
    assert.equal(start.method, 'totp');
    // The activation used the current step; the activation code is not accepted again.
    const replay = await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: codeAt(now) });
    assert.deepEqual(replay, { challengeId: start.challengeId, status: 'pending', reason: 'invalid_code' });
    const next = codeAt(new Date(now.getTime() + 30_000));
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: next })).status, 'approved');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: next })).error?.code, 'conflict');
    const again = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: again.challengeId, code: next })).reason, 'invalid_code');
  });

  itWith({ real: wholeStack }, 'a tenant with lockout threshold 3: the third wrong code locks the user, the report says so, users.unblock lets the user in', async () => {
    const tenantId = uniqueTenant('lockout');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { lockout: { threshold: 3, autoUnblockMinutes: 30 } } })).error, undefined);
    const user = uniqueUser('locked');
    await ask(Subjects.usersRegister, { tenantId, userId: user });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId: user });
    const secret = base32Decode(String(enrolled.secret));
    const now = Date.now();
    await ask(Subjects.totpActivate, { tenantId, userId: user, tokenId: enrolled.tokenId, code: totp(secret, now) });
    // Wrong codes across two challenges (methods and challenges count together).
    const first = await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'totp' });
    const second = await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'totp' });
    const wrong = (n: number) => totp(Buffer.alloc(20, n + 7), now);
    const replies = [
      await ask(Subjects.challengeVerify, { tenantId, challengeId: first.challengeId, code: wrong(1) }),
      await ask(Subjects.challengeVerify, { tenantId, challengeId: first.challengeId, code: wrong(2) }),
      await ask(Subjects.challengeVerify, { tenantId, challengeId: second.challengeId, code: wrong(3) }),
    ];
    assert.deepEqual(replies.map((r) => [r.status, r.reason]), [['pending', 'invalid_code'], ['pending', 'invalid_code'], ['denied', 'locked_out']]);
    // Locked: even the right code of the first challenge is not checked, and no new challenge starts.
    const right = totp(secret, now + 30_000);
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: first.challengeId, code: right })).error?.code, 'rate_limited');
    const refused = await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'totp' });
    assert.equal(refused.error?.code, 'rate_limited');
    assert.match(String(refused.error?.message), /locked for (1[78]\d\d|1800) s/);
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: user, limit: 10 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === second.challengeId);
    }, 20_000, 'the locked-out sign-in in the report');
    assert.deepEqual([row.result, row.resultDetail], ['failure', 'MFA denied; account locked out after too many denied attempts']);
    assert.equal((await ask(Subjects.usersUnblock, { tenantId, userId: user, reason: 'helpdesk: user confirmed by phone' })).unblocked, true);
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: first.challengeId, code: right })).status, 'approved');
  });

  itWith({ real: wholeStack }, 'password spraying: one wrong code each for 50 users from one IP locks that IP, not a user signing in from elsewhere; listed, unlocked, dry run', async () => {
    const tenantId = uniqueTenant('spray');
    const attacker = '203.0.113.77';
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { ipLockout: { threshold: 50, windowMinutes: 10, durationMinutes: 30 } } })).error, undefined);
    const users = Array.from({ length: 51 }, (_, n) => uniqueUser(`sprayed-${n}`));
    await Promise.all(users.map((userId, n) => ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: `+1415555${String(1000 + n).padStart(4, '0')}` })));
    // One wrong code per user: far below each user's own lockout threshold (10).
    for (const userId of users.slice(0, 50)) {
      const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: attacker });
      assert.equal(start.status, 'pending', JSON.stringify(start));
      assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: '000000' })).reason, 'invalid_code');
    }
    const last = users[50]!;
    const denied = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: last, method: 'sms', clientIp: attacker });
      return reply.status === 'denied' ? reply : undefined;
    }, 20_000, 'a start from the locked IP denied');
    assert.equal(denied.reason, 'ip_locked');
    // The same user, from elsewhere, signs in (an IPv6 address too).
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: last, method: 'sms', clientIp: '198.51.100.8' })).status, 'pending');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: last, method: 'sms', clientIp: '2001:db8::8' })).status, 'pending');
    const listed = (await ask(Subjects.fraudIpsList, { tenantId })) as Reply & { items: Array<Record<string, unknown>> };
    assert.equal(listed.items.length, 1, JSON.stringify(listed));
    assert.deepEqual([listed.items[0]!.ip, listed.items[0]!.failures, listed.items[0]!.users, listed.items[0]!.dryRun], [attacker, 50, 50, false]);
    assert.ok(Math.abs(Date.parse(String(listed.items[0]!.until)) - (Date.now() + 30 * 60_000)) < 60_000);
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: last, limit: 10 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === denied.challengeId);
    }, 20_000, 'the denied sign-in in the report');
    assert.deepEqual([row.result, row.resultDetail, row.clientIp], ['failure', 'MFA denied; client IP is locked after too many denied attempts', attacker]);
    // Bad unlocks, then the operator's unlock lets the address in again.
    assert.equal((await ask(Subjects.fraudIpsUnlock, { tenantId, ip: attacker })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.fraudIpsUnlock, { tenantId, ip: '198.51.100.8', reason: 'not locked' })).error?.code, 'conflict');
    assert.equal((await ask(Subjects.fraudIpsUnlock, { tenantId, ip: 'not-an-ip', reason: 'x' })).error?.code, 'invalid_request');
    assert.deepEqual(await ask(Subjects.fraudIpsUnlock, { tenantId, ip: attacker, reason: 'pen test finished' }), { ip: attacker });
    await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: last, method: 'sms', clientIp: attacker });
      return reply.status === 'pending' ? reply : undefined;
    }, 20_000, 'the unlocked IP let in again');

    // A dry run records the lock and locks nothing; a never-block range is never locked.
    const dry = uniqueTenant('spray-dry');
    await ask(Subjects.tenantsConfigure, { tenantId: dry, settings: { ipLockout: { threshold: 5, dryRun: true, neverBlock: ['192.0.2.0/24'] } } });
    for (const [n, ip] of [...Array.from({ length: 5 }, () => '203.0.113.78'), ...Array.from({ length: 5 }, () => '192.0.2.10')].entries()) {
      const userId = uniqueUser(`dry-${n}`);
      await ask(Subjects.usersRegister, { tenantId: dry, userId, phoneNumber: `+1415556${String(1000 + n).padStart(4, '0')}` });
      const start = await ask(Subjects.challengeStart, { tenantId: dry, userId, method: 'sms', clientIp: ip });
      await ask(Subjects.challengeVerify, { tenantId: dry, challengeId: start.challengeId, code: '000000' });
    }
    const recorded = await eventually(async () => {
      const reply = (await ask(Subjects.fraudIpsList, { tenantId: dry })) as Reply & { items: Array<Record<string, unknown>> };
      return reply.items.length > 0 ? reply.items : undefined;
    }, 20_000, 'the dry-run lock recorded');
    assert.deepEqual(recorded.map((i) => [i.ip, i.dryRun]), [['203.0.113.78', true]]);
    const someone = uniqueUser('dry-after');
    await ask(Subjects.usersRegister, { tenantId: dry, userId: someone, phoneNumber: '+14155569999' });
    assert.equal((await ask(Subjects.challengeStart, { tenantId: dry, userId: someone, method: 'sms', clientIp: '203.0.113.78' })).status, 'pending');
  });

  itWith({ real: wholeStack }, 'methods: the user’s chosen default, and security defaults that leave only the app', async () => {
    const tenantId = uniqueTenant('methods');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const both = uniqueUser('both');
    await ask(Subjects.usersRegister, { tenantId, userId: both, phoneNumber: '+14155550161' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId: both });
    await ask(Subjects.totpActivate, { tenantId, userId: both, tokenId: enrolled.tokenId, code: totp(base32Decode(String(enrolled.secret)), Date.now()) });
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: both })).method, 'totp', 'the strongest by default');
    assert.deepEqual(await ask(Subjects.usersMethodsDefault, { tenantId, userId: both, method: 'sms' }), { userId: both, defaultMethod: 'sms' });
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: both })).method, 'sms', 'the chosen default');
    assert.equal((await ask(Subjects.usersMethodsDefault, { tenantId, userId: both, method: 'push' })).error?.code, 'conflict', 'not registered');
    assert.equal((await ask(Subjects.usersMethodsDefault, { tenantId, userId: both, method: 'fax' })).error?.code, 'invalid_request');

    await ask(Subjects.tenantsConfigure, { tenantId, settings: { securityDefaults: true } });
    const smsOnly = uniqueUser('sms-only');
    await ask(Subjects.usersRegister, { tenantId, userId: smsOnly, phoneNumber: '+14155550162' });
    const refused = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: smsOnly });
      return reply.status === 'registration_required' ? reply : undefined;
    }, 10_000, 'security defaults in force');
    assert.equal(refused.reason, 'method_disabled');
    const fallback = await ask(Subjects.challengeStart, { tenantId, userId: both });
    assert.deepEqual([fallback.status, fallback.method], ['pending', 'totp'], 'the default (sms) is not allowed: the app instead');
  });

  itWith({ real: wholeStack }, 'bypasses: a trusted IPv4 range, a trusted IPv6 named location and the corporate network approve at start; a block still denies; bad ranges are refused', async () => {
    const tenantId = uniqueTenant('trusted');
    const configured = await ask(Subjects.tenantsConfigure, {
      tenantId,
      settings: {
        trustedIps: { ranges: ['8.8.4.0/24'], federatedBypass: true },
        namedLocations: [{ name: 'Stockholm office', trusted: true, ranges: ['2a00:1450:4077::/48'] }, { name: 'Guest Wi-Fi', trusted: false, ranges: ['2001:db8:78::/48'] }],
      },
    });
    assert.equal(configured.error, undefined, JSON.stringify(configured.error));
    const user = uniqueUser('office');
    await ask(Subjects.usersRegister, { tenantId, userId: user, displayName: 'Office Worker', phoneNumber: '+14155550171' });
    const start = (body: Record<string, unknown>) => eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'sms', ...body });
      return reply.status === 'approved' || body.expect === 'pending' ? reply : undefined;
    }, 10_000, 'the settings in force');
    const v4 = await start({ clientIp: '8.8.4.20' });
    assert.deepEqual([v4.status, v4.reason, v4.method], ['approved', 'trusted_ip', null]);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId, challengeId: v4.challengeId }), { challengeId: v4.challengeId, status: 'approved', reason: 'trusted_ip' });
    assert.equal((await start({ clientIp: '2a00:1450:4077:1::5' })).reason, 'trusted_ip');
    assert.equal((await start({ clientIp: '198.51.100.1', context: { insideCorporateNetwork: true } })).reason, 'corporate_network');
    // Outside every trusted range (an untrusted named location too): a code as usual.
    for (const clientIp of ['8.8.5.20', '2001:db8:78::1']) assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'sms', clientIp })).status, 'pending', clientIp);
    // A user unknown here is not approved from a trusted IP: they must register.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: uniqueUser('stranger'), clientIp: '8.8.4.20' })).status, 'registration_required');
    // A block comes first.
    await ask(Subjects.usersBlock, { tenantId, userId: user, reason: 'left the company' });
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: user, clientIp: '8.8.4.20' })).reason, 'user_blocked');
    await ask(Subjects.usersUnblock, { tenantId, userId: user, reason: 'back' });
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: user, limit: 20 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === v4.challengeId);
    }, 20_000, 'the bypass in the report');
    assert.deepEqual([row.result, row.resultDetail, row.clientIp, row.authMethod], ['success', 'MFA requirement skipped due to trusted IP', '8.8.4.20', null]);
    // Ranges the contract refuses: IPv6 in trustedIps, private space in the cloud, 51 ranges, a malformed one.
    for (const ranges of [['2001:db8::/32'], ['10.0.0.0/8'], Array.from({ length: 51 }, (_, i) => `8.8.${i}.0/24`), ['8.8.4.0/33']]) {
      assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { trustedIps: { ranges } } })).error?.code, 'invalid_request', ranges[0]);
    }
    // A trusted named location follows the same rule, IPv6 included.
    for (const range of ['10.0.0.0/8', '::/0', 'fc00::/7']) {
      const refused = await ask(Subjects.tenantsConfigure, { tenantId, settings: { namedLocations: [{ name: 'Everywhere', trusted: true, ranges: [range] }] } });
      assert.equal(refused.error?.code, 'invalid_request', range);
    }
  });

  itWith({ real: wholeStack }, 'remember MFA: a remembered browser and a legacy client skip MFA; another user’s or a forged token does not; revoked one by one', async () => {
    const tenantId = uniqueTenant('remember');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { rememberMfa: { enabled: true, days: 30 } } });
    const enrol = async (userId: string) => {
      await ask(Subjects.usersRegister, { tenantId, userId, displayName: userId });
      const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
      const secret = base32Decode(String(enrolled.secret));
      const t0 = Date.now();
      await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, t0) });
      return { secret, t0 };
    };
    const alice = uniqueUser('alice');
    const bob = uniqueUser('bob');
    const a = await enrol(alice);
    await enrol(bob);
    const start = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: alice, method: 'totp', context: { rememberDevice: true } });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the tenant known');
    const verified = await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: totp(a.secret, a.t0 + 30_000) });
    assert.equal(verified.status, 'approved');
    assert.match(String(verified.rememberToken), /^mfar\.[A-Za-z0-9_-]{43}$/);
    assert.ok(Math.abs(Date.parse(String(verified.rememberUntil)) - (Date.now() + 30 * 86_400_000)) < 60_000);
    const token = String(verified.rememberToken);

    const remembered = await ask(Subjects.challengeStart, { tenantId, userId: alice, context: { rememberToken: token } });
    assert.deepEqual([remembered.status, remembered.reason], ['approved', 'remembered_device']);
    // Alice's token for Bob, or a forged one: a challenge as usual.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: bob, method: 'totp', context: { rememberToken: token } })).status, 'pending');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: alice, method: 'totp', context: { rememberToken: `mfar.${'A'.repeat(43)}` } })).status, 'pending');
    // A legacy client: Alice completed MFA moments ago, Bob never did.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: alice, context: { legacyClient: true } })).reason, 'remembered_device');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: bob, method: 'totp', context: { legacyClient: true } })).status, 'pending');

    const shown = await ask(Subjects.usersGet, { tenantId, userId: alice });
    const browsers = shown.rememberedBrowsers as Array<{ rememberId: string }>;
    assert.equal(browsers.length, 1);
    assert.ok(!JSON.stringify(shown).includes(token.slice(5)), 'the token itself is never shown');
    assert.deepEqual(await ask(Subjects.usersRememberedRevoke, { tenantId, userId: alice, rememberId: browsers[0]!.rememberId }), { userId: alice, revoked: 1 });
    assert.equal((await ask(Subjects.usersRememberedRevoke, { tenantId, userId: alice, rememberId: browsers[0]!.rememberId })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: alice, method: 'totp', context: { rememberToken: token } })).status, 'pending');
    // Revoking all of them (a lost phone) ends the legacy clients' trust too.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: alice, context: { legacyClient: true } })).reason, 'remembered_device');
    assert.deepEqual(await ask(Subjects.usersRememberedRevoke, { tenantId, userId: alice }), { userId: alice, revoked: 0 });
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: alice, method: 'totp', context: { legacyClient: true } })).status, 'pending');
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: alice, limit: 20 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === remembered.challengeId);
    }, 20_000, 'the remembered sign-in in the report');
    assert.equal(row.resultDetail, 'MFA requirement skipped due to remembered device');
    // Unknown context keys are refused.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: alice, context: { trustMe: true } })).error?.code, 'invalid_request');
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'fallback: an SMS no provider delivers makes status say so and name the app; the next start without a method takes the app', async () => {
    const tenantId = uniqueTenant('fallback');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const user = uniqueUser('fallback');
    await ask(Subjects.usersRegister, { tenantId, userId: user, phoneNumber: '+14155550181' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId: user });
    await ask(Subjects.totpActivate, { tenantId, userId: user, tokenId: enrolled.tokenId, code: totp(base32Decode(String(enrolled.secret)), Date.now()) });
    await ask(Subjects.usersMethodsDefault, { tenantId, userId: user, method: 'sms' });
    twilio.failNext({ status: 400, code: 21211, message: "The 'To' number is not a valid phone number." });
    const start = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId: user });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the tenant known');
    assert.equal(start.method, 'sms');
    const status = await eventually(async () => {
      const reply = await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId });
      return reply.status === 'denied' ? reply : undefined;
    }, 20_000, 'the failed delivery in the status');
    assert.deepEqual(status, { challengeId: start.challengeId, status: 'denied', reason: 'delivery_failed', fallbackMethods: ['totp', 'voice'] });
    const next = await ask(Subjects.challengeStart, { tenantId, userId: user });
    assert.deepEqual([next.status, next.method], ['pending', 'totp'], 'the next start takes the app');
    // Asked for by name, SMS is still tried.
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'sms' })).method, 'sms');
  });

  itWith({ real: wholeStack }, 'app passwords: refused until the tenant allows them; created once, checked, bound to the tenant, deleted, rate-limited', async () => {
    const tenantId = uniqueTenant('apppw');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const user = uniqueUser('legacy');
    await ask(Subjects.usersRegister, { tenantId, userId: user, phoneNumber: '+14155550191' });
    assert.equal((await ask(Subjects.usersAppPasswordsCreate, { tenantId, userId: user })).error?.code, 'forbidden');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { appPasswords: { allowed: true } } });
    const created = await ask(Subjects.usersAppPasswordsCreate, { tenantId, userId: user, name: 'Outlook 2010' });
    assert.match(String(created.password), /^[a-z2-7]{24}$/);
    assert.equal((await ask(Subjects.usersGet, { tenantId, userId: user })).appPasswords, 1);
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password: created.password }), { valid: true });
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password: String(created.password).toUpperCase() }), { valid: true }, 'case-insensitive');
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password: 'a'.repeat(24) }), { valid: false });
    // The same user id in another tenant has none of them.
    const other = uniqueTenant('apppw-other');
    await ask(Subjects.tenantsConfigure, { tenantId: other, settings: { appPasswords: { allowed: true } } });
    await ask(Subjects.usersRegister, { tenantId: other, userId: user });
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId: other, userId: user, password: created.password }), { valid: false });
    // A lost phone: every app password deleted.
    assert.deepEqual(await ask(Subjects.usersAppPasswordsDelete, { tenantId, userId: user }), { userId: user, deleted: 1 });
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password: created.password }), { valid: false });
    // Guessing: the 10th wrong password in 15 minutes is the last checked.
    let refused: Reply | undefined;
    for (let n = 0; n < 12 && !refused; n++) {
      const reply = await ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password: `guess${n}` });
      if (reply.error) refused = reply;
    }
    assert.equal(refused?.error?.code, 'rate_limited');
  });

  itWith({ real: wholeStack }, 'app passwords: guesses sent at once pass the limit no more than guesses in turn; right passwords do not count; a blocked user is refused', async () => {
    const tenantId = uniqueTenant('apppw-burst');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { appPasswords: { allowed: true } } });
    const user = uniqueUser('legacy');
    await ask(Subjects.usersRegister, { tenantId, userId: user, phoneNumber: '+14155550193' });
    const created = await ask(Subjects.usersAppPasswordsCreate, { tenantId, userId: user, name: 'Thunderbird' });
    const verify = (password: unknown) => ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password });
    // Right passwords are not failures: twelve of them leave the user's ten guesses whole.
    for (let n = 0; n < 12; n++) assert.deepEqual(await verify(created.password), { valid: true });
    // Twenty wrong guesses at once: ten are checked, the others refused unchecked.
    const burst = await Promise.all(Array.from({ length: 20 }, (_, n) => verify(`guess-${n}`)));
    assert.equal(burst.filter((r) => r.valid === false).length, 10, JSON.stringify(burst));
    assert.equal(burst.filter((r) => r.error?.code === 'rate_limited').length, 10);
    assert.equal((await verify(created.password)).error?.code, 'rate_limited', 'until they age out, even the right one');
    // A blocked user's app passwords are refused, and the refusal is not a guess.
    const other = uniqueUser('legacy');
    await ask(Subjects.usersRegister, { tenantId, userId: other });
    const theirs = await ask(Subjects.usersAppPasswordsCreate, { tenantId, userId: other });
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId, userId: other, password: theirs.password }), { valid: true });
    assert.equal((await ask(Subjects.usersBlock, { tenantId, userId: other, reason: 'phone stolen' })).error, undefined);
    const blocked = await eventually(async () => {
      const reply = await ask(Subjects.appPasswordsVerify, { tenantId, userId: other, password: theirs.password });
      return reply.error?.code === 'forbidden' ? reply : undefined;
    }, 10_000, 'the block in force');
    assert.match(String(blocked.error?.message), /blocked/);
    assert.equal((await ask(Subjects.usersUnblock, { tenantId, userId: other, reason: 'phone found' })).error, undefined);
    await eventually(async () => ((await ask(Subjects.appPasswordsVerify, { tenantId, userId: other, password: theirs.password })).valid === true ? true : undefined), 10_000, 'unblocked');
  });

  itWith({ real: wholeStack }, 'legacy clients: from a trusted IP no app password is needed until the user has one; once used, one stays required, even with none left, until a reset', async () => {
    const tenantId = uniqueTenant('legacy');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { trustedIps: { ranges: ['8.8.4.0/24'] }, appPasswords: { allowed: true } } });
    const user = uniqueUser('legacy');
    await ask(Subjects.usersRegister, { tenantId, userId: user, phoneNumber: '+14155550192' });
    const legacy = () => ask(Subjects.challengeStart, { tenantId, userId: user, clientIp: '8.8.4.4', context: { legacyClient: true } });
    const settled = (want: string) =>
      eventually(async () => {
        const reply = await legacy();
        return `${String(reply.status)}/${String(reply.reason)}` === want ? reply : undefined;
      }, 10_000, want);
    await settled('approved/trusted_ip');
    const created = await ask(Subjects.usersAppPasswordsCreate, { tenantId, userId: user, name: 'Thunderbird' });
    // In force once the create answered (projected before the reply), not moments later.
    const denied = await legacy();
    assert.deepEqual([denied.status, denied.reason], ['denied', 'app_password_required']);
    // A browser from the same trusted address is not concerned; nor is a legacy client of a user without app passwords.
    const browser = await ask(Subjects.challengeStart, { tenantId, userId: user, clientIp: '8.8.4.4' });
    assert.deepEqual([browser.status, browser.reason], ['approved', 'trusted_ip']);
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId, userId: user, password: created.password }), { valid: true });
    assert.deepEqual(await ask(Subjects.usersAppPasswordsDelete, { tenantId, userId: user }), { userId: user, deleted: 1 });
    // Used once: still required with none left (the user creates a new one), never back to the bypass.
    const after = await legacy();
    assert.deepEqual([after.status, after.reason], ['denied', 'app_password_required']);
    assert.deepEqual(await ask(Subjects.usersReset, { tenantId, userId: user }), { userId: user, reset: true });
    await settled('approved/trusted_ip');
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: user, limit: 20 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === denied.challengeId);
    }, 20_000, 'the denied legacy sign-in in the report');
    assert.equal(row.resultDetail, 'MFA denied; app password required for this legacy client');
    assert.equal(row.result, 'failure');
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'users.reset ends the challenges pending: the code sent before it is denied (method_not_registered, reported) even with the phone registered again', async () => {
    const user = uniqueUser('reset');
    const phone = `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
    await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, displayName: 'Lost Phone', phoneNumber: phone });
    const before = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    assert.equal(before.status, 'pending', JSON.stringify(before));
    const first = await twilio.waitFor((m) => m.to === phone, 15_000);
    const code = FakeTwilio.codeOf(first);
    assert.deepEqual(await ask(Subjects.usersReset, { tenantId: tenant, userId: user }), { userId: user, reset: true });
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, phoneNumber: phone }), { userId: user, methods: ['sms', 'voice'] });
    const denied = { challengeId: before.challengeId, status: 'denied', reason: 'method_not_registered' };
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: before.challengeId, code }), denied);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: before.challengeId }), denied);
    const after = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' });
    const fresh = FakeTwilio.codeOf(await twilio.waitFor((m) => m.to === phone && m !== first, 15_000));
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: after.challengeId, code: fresh }), { challengeId: after.challengeId, status: 'approved' });
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId: tenant, userId: user, limit: 20 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === before.challengeId && i.result === 'failure');
    }, 20_000, 'the voided sign-in in the report');
    assert.equal(row.resultDetail, "MFA denied; the user's MFA was reset after the challenge started");
  });

  itWith({ real: wholeStack }, 'block → denied (user_blocked, reported) → unblock → approved; bad block requests get contract errors', async () => {
    const user = uniqueUser('blocked');
    await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, displayName: 'Blocked User' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenant, userId: user });
    const secret = base32Decode(String(enrolled.secret));
    const now = Date.now();
    await ask(Subjects.totpActivate, { tenantId: tenant, userId: user, tokenId: enrolled.tokenId, code: totp(secret, now) });

    const blocked = await ask(Subjects.usersBlock, { tenantId: tenant, userId: user, reason: 'phone reported stolen' });
    const until = Date.parse(String(blocked.blockedUntil));
    assert.ok(Math.abs(until - (now + 90 * 86_400_000)) < 60_000, `blocked until ${String(blocked.blockedUntil)}`);
    assert.equal((await ask(Subjects.usersBlock, { tenantId: tenant, userId: user, reason: 'again' })).error?.code, 'conflict');
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId: tenant, userId: user })).blocked, { until: blocked.blockedUntil, reason: 'phone reported stolen' });
    const denied = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp', clientIp: '198.51.100.23' });
    assert.deepEqual([denied.status, denied.reason], ['denied', 'user_blocked'], JSON.stringify(denied));
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: denied.challengeId }), {
      challengeId: denied.challengeId,
      status: 'denied',
      reason: 'user_blocked',
    });
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId: tenant, userId: user, limit: 10 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === denied.challengeId);
    }, 20_000, 'the blocked sign-in in the report');
    assert.deepEqual([row.result, row.resultDetail, row.clientIp, row.displayName], ['failure', 'MFA denied; user is blocked', '198.51.100.23', 'Blocked User']);

    assert.equal((await ask(Subjects.usersUnblock, { tenantId: tenant, userId: user, reason: 'phone found' })).unblocked, true);
    assert.equal((await ask(Subjects.usersUnblock, { tenantId: tenant, userId: user, reason: 'twice' })).error?.code, 'conflict');
    const shown = await ask(Subjects.usersGet, { tenantId: tenant, userId: user });
    assert.deepEqual(
      [shown.blocked, shown.displayName, shown.methods, (shown.tokens as Array<Record<string, unknown>>).map((t) => [t.kind, t.state])],
      [null, 'Blocked User', ['totp'], [['app', 'active']]],
    );
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenant, userId: uniqueUser('nobody') })).error?.code, 'not_found');
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    assert.equal(start.status, 'pending');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: totp(secret, now + 30_000) })).status, 'approved');

    assert.equal((await ask(Subjects.usersBlock, { tenantId: tenant, userId: user })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.usersBlock, { tenantId: tenant, userId: user, reason: '' })).error?.code, 'invalid_request');
    assert.equal((await ask(Subjects.usersBlock, { tenantId: tenant, userId: uniqueUser('nobody'), reason: 'x' })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.usersBlock, { tenantId: uniqueTenant('none'), userId: user, reason: 'x' })).error?.code, 'not_found');
  });

  itWith({ real: wholeStack, fake: ['smtp-server'] }, 'a fraud report denies the pending challenge, blocks the user (auto-block), mails every address, is idempotent, and is refused when the tenant turned alerts off', async () => {
    const admins = [`soc-${randomBytes(4).toString('hex')}@contoso.example`, `helpdesk-${randomBytes(4).toString('hex')}@contoso.example`];
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: tenant, settings: { notificationEmails: admins } })).error, undefined);
    const user = uniqueUser('fraud');
    await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, displayName: 'Fraud Target' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenant, userId: user });
    await ask(Subjects.totpActivate, { tenantId: tenant, userId: user, tokenId: enrolled.tokenId, code: totp(base32Decode(String(enrolled.secret)), Date.now()) });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp', clientIp: '198.51.100.66', application: 'Contoso VPN' });
    const body = { tenantId: tenant, userId: user, challengeId: start.challengeId, source: 'idp', comment: 'user says this was not them' };
    const reported = await ask(Subjects.fraudReport, body);
    assert.equal(reported.challengeDenied, true, JSON.stringify(reported));
    assert.equal(reported.blocked, true);
    assert.ok(Date.parse(String(reported.blockedUntil)) > Date.now() + 89 * 86_400_000);
    assert.deepEqual(await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: start.challengeId }), {
      challengeId: start.challengeId,
      status: 'denied',
      reason: 'fraud_reported',
    });
    // One e-mail to every address, naming the user, time, client IP, application and source.
    const mails = await eventually(async () => {
      const found = smtp.messages.filter((m) => m.text.includes(String(reported.alertId)));
      return found.length >= admins.length ? found : undefined;
    }, 20_000, 'the alert e-mails');
    assert.deepEqual(mails.map((m) => m.to.join(',')).sort(), [...admins].sort());
    for (const text of ['198.51.100.66', 'Contoso VPN', user, 'the identity provider']) assert.ok(mails[0]!.text.includes(text), `${text} in the e-mail`);
    // A retry changes nothing more: the same alert, the challenge already denied, the block standing, no second e-mail.
    assert.deepEqual(await ask(Subjects.fraudReport, body), reported);
    const next = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'totp' });
    assert.deepEqual([next.status, next.reason], ['denied', 'user_blocked']);
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId: tenant, userId: user, limit: 10 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === start.challengeId && i.resultDetail !== 'MFA denied; verification timed out');
    }, 20_000, 'the reported sign-in in the report');
    assert.deepEqual([row.result, row.resultDetail], ['failure', 'MFA denied; Fraud Code Entered']);
    assert.equal(smtp.messages.filter((m) => m.text.includes(String(reported.alertId))).length, admins.length, 'the retried report mailed nobody again');
    // Another user's challenge is unknown to this report.
    const other = uniqueUser('other');
    await ask(Subjects.usersRegister, { tenantId: tenant, userId: other });
    assert.equal((await ask(Subjects.fraudReport, { ...body, userId: other })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.fraudReport, { ...body, source: 'email' })).error?.code, 'invalid_request');

    const quiet = uniqueTenant('no-alerts');
    await ask(Subjects.tenantsConfigure, { tenantId: quiet, settings: { fraudAlert: { enabled: false } } });
    await ask(Subjects.usersRegister, { tenantId: quiet, userId: user });
    const refused = await ask(Subjects.fraudReport, { tenantId: quiet, userId: user, source: 'idp' });
    assert.equal(refused.error?.code, 'forbidden');
    assert.match(String(refused.error?.message), /fraudAlert\.enabled/);
  });

  itWith({ real: wholeStack }, 'reports: the fraud alert, the block history, usage per day, and a tenant that keeps names and e-mail out of its reports', async () => {
    const tenantId = uniqueTenant('reports');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { reportFields: { displayName: false, email: false } } });
    const user = uniqueUser('reported');
    await ask(Subjects.usersRegister, { tenantId, userId: user, displayName: 'Kept Out', email: 'kept.out@contoso.example', phoneNumber: '+14155550142' });
    const start = await ask(Subjects.challengeStart, { tenantId, userId: user, method: 'sms', clientIp: '198.51.100.70', application: 'Payroll' });
    const reported = await ask(Subjects.fraudReport, { tenantId, userId: user, challengeId: start.challengeId, source: 'idp' });
    assert.equal(reported.blocked, true);
    const signin = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: user })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === start.challengeId && i.resultDetail === 'MFA denied; Fraud Code Entered');
    }, 20_000, 'the reported sign-in');
    assert.deepEqual([signin.displayName, signin.email, signin.phoneNumber], [null, null, '+14155550142']);
    const alert = await eventually(async () => {
      const report = (await ask(Subjects.reportsFraudQuery, { tenantId })) as Reply & { items?: Array<Record<string, unknown>> };
      return report.items?.[0];
    }, 20_000, 'the alert in the fraud report');
    assert.deepEqual(
      [alert.alertId, alert.userId, alert.source, alert.phoneNumber, alert.displayName, alert.clientIp, alert.application, alert.challengeDenied, alert.blocked],
      [reported.alertId, user, 'idp', '+14155550142', null, '198.51.100.70', 'Payroll', true, true],
    );
    await ask(Subjects.usersUnblock, { tenantId, userId: user, reason: 'confirmed with the user' });
    const history = await eventually(async () => {
      const report = (await ask(Subjects.reportsBlockedQuery, { tenantId, userId: user })) as Reply & { items?: Array<Record<string, unknown>> };
      return report.items && report.items.length >= 2 ? report.items : undefined;
    }, 20_000, 'the block history');
    assert.deepEqual(history.map((i) => [i.action, i.reason, i.source]), [['unblock', 'confirmed with the user', null], ['block', 'fraud reported', 'fraud_report']]);
    const today = new Date().toISOString().slice(0, 10);
    const usage = (await ask(Subjects.reportsUsageQuery, {
      tenantId,
      from: `${today}T00:00:00Z`,
      to: new Date(Date.parse(`${today}T00:00:00Z`) + 86_400_000).toISOString(),
      granularity: 'day',
    })) as Reply & { items: Array<{ period: string; authentications: { total: number }; enabledUsers: number }> };
    assert.deepEqual(usage.items.map((i) => [i.period, i.authentications.total, i.enabledUsers]), [[today, 1, 1]]);
  });

  itWith({ real: wholeStack, fake: ['twilio', 'otlp-collector'] }, 'one trace spans IdP request → auth-challenge → dispatch → provider call → reporting', async () => {
    const user = uniqueUser('trace');
    const phone = '+14155550199';
    await ask(Subjects.usersRegister, { tenantId: tenant, userId: user, phoneNumber: phone });
    const traceId = randomBytes(16).toString('hex');
    const traceparent = `00-${traceId}-${randomBytes(8).toString('hex')}-01`;
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'sms' }, { traceparent });
    const sms = await twilio.waitFor((m) => m.to === phone, 15_000);
    assert.equal(sms.traceparent?.split('-')[1], traceId, 'the provider call carries the trace');
    await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: FakeTwilio.codeOf(sms) });
    const spans = await eventually(async () => {
      const t = otlp.trace(traceId);
      const services = new Set(t.map((s) => s.service));
      return ['auth-challenge', 'dispatch', 'reporting'].every((s) => services.has(s)) && t.some((s) => s.name === 'twilio send') ? t : undefined;
    }, 20_000, 'spans of the trace from every hop');
    assert.ok(spans.some((s) => s.service === 'auth-challenge' && s.name === Subjects.challengeStart));
    assert.ok(spans.some((s) => s.service === 'dispatch' && s.name === 'twilio send'));
    assert.ok(spans.some((s) => s.service === 'reporting'));
  });

  itWith({ real: wholeStack }, 'answers bad input on every subject with the contract error, and every service stays up', async () => {
    const subjects = Object.values(Subjects);
    for (const subject of subjects) {
      for (const [body, code] of [
        ['{"tenantId":', 'invalid_request'],
        ['"just a string"', 'invalid_request'],
        [JSON.stringify({ tenantId: tenant, userId: 5, limit: 'ten' }), 'invalid_request'],
        [JSON.stringify({ tenantId: { $ne: 1 }, userId: [], challengeId: 7 }), 'invalid_request'],
        [JSON.stringify({ tenantId: tenant, pad: 'x'.repeat(40_000) }), 'invalid_request'],
      ] as const) {
        // A body the subject's schema accepts (extra fields are ignored) is not bad input for it.
        const parsed = (() => {
          try {
            return JSON.parse(body) as unknown;
          } catch {
            return undefined;
          }
        })();
        if (body.length < 16_384 && RequestSchemas[subject].safeParse(parsed).success) continue;
        const reply = (await nc.request(subject, body, { timeout: 10_000 })).json<Reply>();
        assert.equal(reply.error?.code, code, `${subject} ${body.slice(0, 40)}`);
      }
    }
    const unknownTenant = uniqueTenant('ghost');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: unknownTenant, userId: 'a@b.c' })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.reportsSigninsQuery, { tenantId: unknownTenant })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.totpEnroll, { tenantId: tenant, userId: 'nobody@contoso.example' })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: 'no-such-challenge' })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: 'no-such-challenge', code: '123456' })).error?.code, 'not_found');
    assert.equal(
      (await ask(Subjects.totpActivate, { tenantId: tenant, userId: 'nobody@contoso.example', tokenId: 'x', code: '123456' })).error?.code,
      'not_found',
    );
    for (const p of stack.processes) {
      const res = await fetch(`${p.url}/health`);
      assert.equal(res.status, 200, `${p.name}#${p.instance} healthy`);
      assert.ok((await fetch(`${p.url}/metrics`)).ok);
    }
  });

  itWith({ real: wholeStack }, 'the demo IdP signs a user in by SMS, by phone call and by app, reports a fraud that blocks the user, and prints the report', async () => {
    const lines: string[] = [];
    const code = await runDemo({ out: (l) => lines.push(l), natsUrl: testEnv.natsUrl, tenantId: uniqueTenant('demo'), dispatchUrl: stack.url('dispatch'), deviceApiUrl: `${stack.url('auth-challenge')}/device` });
    assert.equal(code, 0, lines.join('\n'));
    const report = lines.join('\n');
    // The phone call: the demo hears the Swedish greeting, presses #, and the call approves.
    assert.match(report, /phone hears: “Tack för att du använder systemet för inloggningsverifiering\./);
    assert.match(report, /phone hears: “Din inloggning har verifierats\. Hej då\.”/);
    assert.match(report, /mfa\.v1\.challenge\.status {4}→ approved/);
    assert.match(report, / voice success +MFA successfully completed/);
    // The push: the reference authenticator activates, sees the sign-in, approves with the number.
    assert.match(report, /app shows: VPN from 81\.2\.69\.142 \(GB\); the user types (\d\d)/);
    assert.match(report, /app → answer approve \d\d \(signed\) → approved/);
    assert.match(report, / push  success +MFA successfully completed/);
    assert.match(report, /MFA successfully completed/);
    assert.match(report, /MFA denied; invalid verification code/);
    assert.match(report, /mfa\.v1\.fraud\.report .*challenge denied: true, user blocked until/);
    assert.match(report, /MFA denied; Fraud Code Entered/);
    assert.match(report, /MFA denied; user is blocked/);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'never writes a TOTP secret, an SMS code or an SMS body to the logs', async () => {
    assert.ok(logLines.length > 50, `the services logged (${logLines.length} lines at debug level)`);
    const codes = twilio.messages.map((m) => FakeTwilio.codeOf(m));
    assert.ok(secretsSeen.length > 0 && codes.length > 0);
    for (const line of logLines) {
      for (const secret of secretsSeen) assert.ok(!line.includes(secret), 'a TOTP secret reached a log');
      for (const code of codes) assert.ok(!new RegExp(`"[^"]*":"?${code}"?[,}]`).test(line), `an SMS code reached a log: ${line.slice(0, 200)}`);
      assert.ok(!/verification code|verifieringskod/i.test(line), 'an SMS body reached a log');
    }
  });

  itWith({ real: wholeStack }, 'stops every instance cleanly on SIGTERM', async () => {
    const codes = await Promise.all(stack.processes.map((p) => p.stop()));
    assert.deepEqual(codes, codes.map(() => 0));
  });
});
