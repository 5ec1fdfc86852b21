import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { base32Decode, base32Encode, hotp, totpStep } from '@mfa/crypto';
import { Subjects, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { Attr, Code } from '@mfa/radius/packet';
import { eventually, FakeTwilio, freePort, freeUdpPort, itWith, oathtoolTotp, repoRoot, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';
import { codeName, CraftedClient, radclient, type Answer } from './radius/client.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;
const PLATFORM_KEY = `radius-e2e-platform-${randomBytes(16).toString('hex')}`;
const run = promisify(execFile);
const AUTHENTICATOR = join(repoRoot, 'authenticator', 'bin', 'mfa-authenticator.js');
const randomPhone = () => `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;

/**
 * The RADIUS front through the whole stack, with auth on: FreeRADIUS's radclient for every flow
 * it can send (PAP with Access-Challenge for SMS, app and hardware tokens; voice waited for;
 * bypass; rejections; Status-Server), and crafted datagrams for what it cannot (no or a wrong
 * Message-Authenticator, retransmissions, another source address, broken packets, a State
 * carried to another user or client). Three clients: the platform key acting for tenant A on
 * 127.0.0.1; tenant B's own API key on 127.0.0.2; otp mode for tenant A on 127.0.0.3.
 */
describe('end to end: the RADIUS front', () => {
  const twilio = new FakeTwilio();
  let core: Stack;
  let front: Stack;
  let nc: NatsConnection;
  let port: number;
  const secrets = { a: `secret-a-${randomBytes(8).toString('hex')}`, b: `secret-b-${randomBytes(8).toString('hex')}`, otp: `secret-otp-${randomBytes(8).toString('hex')}` };
  const tenantA = uniqueTenant('rad-a');
  const tenantB = uniqueTenant('rad-b');
  /** The otp-mode client's tenant: no voice, so a user with a phone number has SMS only. */
  const tenantC = uniqueTenant('rad-c');
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${PLATFORM_KEY}` } });
  const clients: CraftedClient[] = [];
  const crafted = async (secret: string, source = '127.0.0.1') => {
    const c = await new CraftedClient(port, secret, source).open();
    clients.push(c);
    return c;
  };

  let env: Record<string, string | undefined>;
  const onLine = (service: string, line: string) => {
    if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
  };

  before(async () => {
    await twilio.start();
    env = {
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      NATS_URL: testEnv.natsUrl,
      REDIS_URL: testEnv.redisUrl,
      DATABASE_URL: testDatabaseUrl('mfa_e2e'),
      MFA_AUTH: 'required',
      MFA_PLATFORM_API_KEY: PLATFORM_KEY,
      ...twilio.env(),
    };
    // Calls go through the fake Twilio, whose webhooks reach dispatch on a known port; the
    // authenticator app reaches the device API where user-settings says it is.
    const [dispatchPort, devicePort] = [await freePort(), await freePort()];
    core = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'fraud', 'reporting'],
      env,
      serviceEnv: {
        dispatch: { HTTP_PORT: String(dispatchPort), VOICE_WEBHOOK_BASE_URL: `http://127.0.0.1:${dispatchPort}` },
        'auth-challenge': { HTTP_PORT: String(devicePort) },
        'user-settings': { DEVICE_API_PUBLIC_URL: `http://127.0.0.1:${devicePort}/device` },
      },
      onLine,
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-radius' });
    for (const [tenantId, settings] of [
      [tenantA, { trustedIps: { ranges: ['81.2.69.0/24'] }, lockout: { threshold: 3 } }],
      [tenantB, {}],
      [tenantC, { enabledMethods: ['sms', 'push', 'totp'] }],
    ] as const) {
      const configured = await ask(Subjects.tenantsConfigure, { tenantId, settings });
      assert.equal(configured.error, undefined, JSON.stringify(configured));
    }
    const key = await ask(Subjects.clientsCreate, { tenantId: tenantB, name: 'radius front', scopes: ['challenges'] });
    assert.equal(typeof key.apiKey, 'string', JSON.stringify(key));
    port = await freeUdpPort();
    const radiusClients = [
      { cidr: '127.0.0.1/32', secret: secrets.a, tenantId: tenantA, name: 'vpn-a' },
      { cidr: '127.0.0.2', secret: secrets.b, tenantId: tenantB, apiKey: key.apiKey },
      { cidr: '127.0.0.3/32', secret: secrets.otp, tenantId: tenantC, name: 'otp-vpn', passwordMode: 'otp' },
    ];
    front = await startStack({
      services: ['radius'],
      env,
      serviceEnv: { radius: { RADIUS_PORT: String(port), RADIUS_CLIENTS: JSON.stringify(radiusClients), RADIUS_WAIT_SECONDS: '20' } },
      onLine,
      readyTimeoutMs: 60_000,
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    await nc?.drain();
    await front?.stop();
    await core?.stop();
    await twilio.stop();
  });

  const register = async (tenantId: string, body: Record<string, unknown> = {}) => {
    const userId = uniqueUser('rad');
    // The tenant is known to user-settings a moment after tenants.configure.
    const reply = await eventually(async () => {
      const r = await ask(Subjects.usersRegister, { tenantId, userId, ...body });
      return r.error?.message === 'unknown tenant' ? undefined : r;
    }, 10_000, 'the tenant known');
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    return userId;
  };
  /** A user with an active TOTP app; the activation spent the current step, so sign-ins use the next. */
  const totpUser = async (tenantId: string) => {
    const userId = await register(tenantId);
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
    const secret = String(enrolled.secret);
    const activated = await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: oathtoolTotp(secret) });
    assert.equal(activated.active, true, JSON.stringify(activated));
    return {
      userId,
      next: () => oathtoolTotp(secret, { at: new Date(Date.now() + 30_000) }),
      /** The next step's code, computed here rather than by oathtool: no process spawned while timing. */
      nextHere: () => hotp(base32Decode(secret), totpStep(Date.now()) + 1),
    };
  };
  /** radclient until the user is known everywhere (projections are asynchronous). */
  const firstAnswer = (attributes: string[], want: (a: Awaited<ReturnType<typeof radclient>>) => boolean, secret = secrets.a) =>
    eventually(async () => {
      const a = await radclient(port, secret, attributes);
      return a && want(a) ? a : undefined;
    }, 15_000, 'the RADIUS answer');
  const signins = async (tenantId: string, userId: string) =>
    ((await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 20 })) as Reply & { items: SigninItem[] }).items;

  itWith({ real: wholeStack, fake: ['twilio'] }, 'radclient, SMS: Access-Challenge with the masked number, a wrong code asks again with a new State, an old State is refused, the code accepts, and the report says RADIUS', async () => {
    const phone = randomPhone();
    const userId = await register(tenantA, { phoneNumber: phone });
    const seen = twilio.messagesTo(phone).length;
    const first = await firstAnswer([`User-Name = "  ${userId} "`, 'User-Password = "vpn-password"', 'Calling-Station-Id = "198.51.100.7:51234"', 'NAS-Identifier = "openvpn-gw"'], (a) => a!.code === 'Access-Challenge');
    assert.ok(first.state, first.output);
    assert.match(first.replyMessage ?? '', new RegExp(`SMS to \\+\\*+${phone.slice(-2)}\\.`), 'the masked number, its last two digits only');
    const sms = await twilio.waitFor((m) => m.to === phone && twilio.messagesTo(phone).length > seen);
    const code = FakeTwilio.codeOf(sms);
    assert.ok(!first.output.includes(code), 'the code is never in an answer');

    const wrong = await radclient(port, secrets.a, [`User-Name = "${userId}"`, `User-Password = "${code === '000000' ? '111111' : '000000'}"`, `State = ${first.state}`]);
    assert.equal(wrong?.code, 'Access-Challenge', wrong?.output);
    assert.match(wrong!.replyMessage ?? '', /Wrong code/);
    assert.notEqual(wrong!.state, first.state, 'a new State');
    const reused = await radclient(port, secrets.a, [`User-Name = "${userId}"`, `User-Password = "${code}"`, `State = ${first.state}`]);
    assert.equal(reused?.code, 'Access-Reject', 'a State is single-use');
    const accepted = await radclient(port, secrets.a, [`User-Name = "${userId}"`, `User-Password = "${code.slice(0, 3)} ${code.slice(3)}"`, `State = ${wrong!.state}`]);
    assert.equal(accepted?.code, 'Access-Accept', accepted?.output);
    assert.equal(twilio.messagesTo(phone).length, seen + 1, 'one SMS');

    const rows = await eventually(async () => {
      const items = await signins(tenantA, userId);
      return items.some((i) => i.result === 'success') ? items : undefined;
    }, 15_000, 'the sign-in reported');
    const row = rows.find((i) => i.result === 'success')!;
    assert.equal((row as SigninItem & { via?: string }).via, 'radius');
    assert.equal(row.serverName, 'vpn-a');
    assert.equal(row.serverIp, '127.0.0.1');
    assert.equal(row.clientIp, '198.51.100.7', 'the Calling-Station-Id, not the VPN');
    assert.equal(row.application, 'openvpn-gw');
  });

  itWith({ real: wholeStack }, 'radclient, TOTP app and hardware token: Access-Challenge, then the code accepts once', async () => {
    const app = await totpUser(tenantA);
    const challenge = await firstAnswer([`User-Name = "${app.userId}"`, 'User-Password = "x"'], (a) => a!.code === 'Access-Challenge');
    assert.match(challenge.replyMessage ?? '', /authenticator app or hardware token/);
    const code = app.next();
    const accepted = await radclient(port, secrets.a, [`User-Name = "${app.userId}"`, `User-Password = "${code}"`, `State = ${challenge.state}`]);
    assert.equal(accepted?.code, 'Access-Accept', accepted?.output);
    // The same code again, in a new sign-in: an accepted TOTP code is never accepted again.
    const again = await radclient(port, secrets.a, [`User-Name = "${app.userId}"`, 'User-Password = "x"']);
    const replay = await radclient(port, secrets.a, [`User-Name = "${app.userId}"`, `User-Password = "${code}"`, `State = ${again!.state}`]);
    assert.notEqual(replay?.code, 'Access-Accept', 'a TOTP code is accepted once');

    const hw = await register(tenantA);
    const secret = base32Encode(randomBytes(20));
    const csv = `upn,serial number,secret key,time interval,manufacturer,model\n${hw},RAD-${randomBytes(4).toString('hex')},${secret},60,Contoso,HardwareKey\n`;
    const job = await ask(Subjects.oathImport, { tenantId: tenantA, format: 'csv', content: csv });
    assert.equal(typeof job.jobId, 'string', JSON.stringify(job));
    const serial = csv.split('\n')[1]!.split(',')[1]!;
    await eventually(async () => ((await ask(Subjects.oathImportStatus, { tenantId: tenantA, jobId: job.jobId })).state === 'completed' ? true : undefined), 30_000, 'the import');
    const activated = await ask(Subjects.oathTokensActivate, { tenantId: tenantA, serialNumber: serial, code: oathtoolTotp(secret, { period: 60 }) });
    assert.equal(activated.active, true, JSON.stringify(activated));
    const hwChallenge = await firstAnswer([`User-Name = "${hw}"`], (a) => a!.code === 'Access-Challenge');
    const hwAccepted = await radclient(port, secrets.a, [`User-Name = "${hw}"`, `User-Password = "${oathtoolTotp(secret, { period: 60, at: new Date(Date.now() + 60_000) })}"`, `State = ${hwChallenge.state}`]);
    assert.equal(hwAccepted?.code, 'Access-Accept', hwAccepted?.output);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'radclient, voice: the answer waits for the call; answered with # accepts, not answered rejects', async () => {
    const phone = randomPhone();
    const userId = await register(tenantA, { phoneNumber: phone });
    assert.equal((await ask(Subjects.usersMethodsDefault, { tenantId: tenantA, userId, method: 'voice' })).defaultMethod, 'voice');
    twilio.phone(phone, { answer: 'answer', presses: ['#'] });
    const accepted = await firstAnswer([`User-Name = "${userId}"`], (a) => a!.code !== 'Access-Reject' || !/Unknown user/.test(a!.replyMessage ?? ''));
    assert.equal(accepted.code, 'Access-Accept', accepted.output);
    assert.equal(twilio.calls.filter((c) => c.to === phone).length, 1);

    const phone2 = randomPhone();
    const user2 = await register(tenantA, { phoneNumber: phone2 });
    await ask(Subjects.usersMethodsDefault, { tenantId: tenantA, userId: user2, method: 'voice' });
    twilio.phone(phone2, { answer: 'no-answer' });
    const rejected = await firstAnswer([`User-Name = "${user2}"`], (a) => !/Unknown user/.test(a!.replyMessage ?? ''));
    assert.equal(rejected.code, 'Access-Reject', rejected.output);
  });

  /** A user of tenant A whose default method is push, with the authenticator app activated. */
  const pushUser = async () => {
    const userId = await register(tenantA);
    const enrolled = await ask(Subjects.usersPushEnroll, { tenantId: tenantA, userId });
    assert.equal(typeof enrolled.activationUrl, 'string', JSON.stringify(enrolled));
    const state = join(mkdtempSync(join(tmpdir(), 'mfa-authenticator-')), 'device.json');
    const app = (...args: string[]) => run(process.execPath, [AUTHENTICATOR, '--state', state, ...args], { timeout: 30_000 });
    await app('activate', String(enrolled.activationUrl), '--name', 'radius phone');
    return { userId, app };
  };
  /** A push sign-in's answer, asked again while the new user is not yet known to the front's API. */
  const pushAnswer = (radiusPort: number, userId: string, attributes: string[] = []) =>
    eventually(async () => {
      const a = await radclient(radiusPort, secrets.a, [`User-Name = "${userId}"`, ...attributes], 'auth', 30);
      return a && !/Unknown user|No MFA method/.test(a.replyMessage ?? '') ? a : undefined;
    }, 40_000, 'the push answered');

  itWith({ real: wholeStack, fake: ['authenticator'] }, 'radclient, push: the answer waits for the app, which shows no number to type (there is no sign-in page); approved accepts, denied rejects', async () => {
    const { userId, app } = await pushUser();
    const signIn = async (decision: 'approve' | 'deny') => {
      const answer = pushAnswer(port, userId, ['NAS-Identifier = "vpn-gw"']);
      const pending = JSON.parse((await app('pending', '--json', '--wait', '15')).stdout) as { challenge: { challengeId: string; numberMatch?: boolean; application: string } };
      assert.equal(pending.challenge.numberMatch, false, 'nothing to type');
      assert.equal(pending.challenge.application, 'vpn-gw');
      assert.match((await app(decision, '--challenge', pending.challenge.challengeId)).stdout, decision === 'approve' ? /approved/ : /denied/);
      return answer;
    };
    const accepted = await signIn('approve');
    assert.equal(accepted.code, 'Access-Accept', accepted.output);
    const rejected = await signIn('deny');
    assert.equal(rejected.code, 'Access-Reject', rejected.output);
    assert.match(rejected.replyMessage ?? '', /denied in the app/);
  }, { timeout: 120_000 });

  itWith({ real: wholeStack }, 'radclient: a trusted Calling-Station-Id bypasses at once (reported); blocked, unknown, unregistered and locked-out users are rejected saying why; CHAP is refused; Status-Server is accepted', async () => {
    const app = await totpUser(tenantA);
    const bypass = await firstAnswer([`User-Name = "${app.userId}"`, 'Calling-Station-Id = "81.2.69.9[4500]"'], (a) => a!.code === 'Access-Accept');
    assert.equal(bypass.code, 'Access-Accept');
    const rows = await eventually(async () => {
      const items = await signins(tenantA, app.userId);
      return items.length > 0 ? items : undefined;
    }, 15_000, 'the bypass reported');
    assert.equal(rows[0]!.result, 'success');
    assert.equal((rows[0] as SigninItem & { via?: string }).via, 'radius');

    const unknown = await radclient(port, secrets.a, [`User-Name = "nobody-${randomBytes(4).toString('hex')}@contoso.example"`]);
    assert.equal(unknown?.code, 'Access-Reject');
    assert.match(unknown!.replyMessage ?? '', /Unknown user|No MFA method/);

    const bare = await register(tenantA);
    const unregistered = await firstAnswer([`User-Name = "${bare}"`], (a) => !/Unknown user/.test(a!.replyMessage ?? ''));
    assert.equal(unregistered.code, 'Access-Reject');
    assert.match(unregistered.replyMessage ?? '', /No MFA method is registered/);

    const blocked = await totpUser(tenantA);
    assert.equal((await ask(Subjects.usersBlock, { tenantId: tenantA, userId: blocked.userId, reason: 'radius e2e' })).error, undefined);
    const refused = await firstAnswer([`User-Name = "${blocked.userId}"`], (a) => a!.code === 'Access-Reject');
    assert.match(refused.replyMessage ?? '', /blocked/);

    // Lockout threshold 3 (tenant A): three wrong codes lock the user out.
    const locked = await totpUser(tenantA);
    let last: Awaited<ReturnType<typeof radclient>>;
    let state = (await firstAnswer([`User-Name = "${locked.userId}"`], (a) => a!.code === 'Access-Challenge')).state;
    for (let i = 0; i < 3; i++) {
      last = await radclient(port, secrets.a, [`User-Name = "${locked.userId}"`, 'User-Password = "000000"', `State = ${state}`]);
      state = last?.state;
    }
    assert.equal(last!?.code, 'Access-Reject', last!?.output);
    assert.match(last!.replyMessage ?? '', /locked out/);
    const later = await radclient(port, secrets.a, [`User-Name = "${locked.userId}"`]);
    assert.equal(later?.code, 'Access-Reject');
    assert.match(later!.replyMessage ?? '', /locked|Too many/i);

    const chap = await radclient(port, secrets.a, [`User-Name = "${app.userId}"`, 'CHAP-Password = "hello"']);
    assert.equal(chap?.code, 'Access-Reject');
    assert.match(chap!.replyMessage ?? '', /Only PAP/);

    const status = await radclient(port, secrets.a, [], 'status');
    assert.equal(status?.code, 'Access-Accept', status?.output);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'otp mode: the password is the code (app tokens), a wrong one rejects, and an SMS-only user is rejected without an SMS', async () => {
    const otp = await crafted(secrets.otp, '127.0.0.3');
    const app = await totpUser(tenantC);
    const ok = await eventually(async () => {
      const a = await otp.send({ user: app.userId, password: app.next() });
      return a?.packet.code === Code.AccessAccept ? a : undefined;
    }, 15_000, 'accepted');
    assert.ok(ok.authentic && ok.messageAuthenticatorFirst);
    const wrong = await otp.send({ user: (await totpUser(tenantC)).userId, password: '000000' });
    assert.equal(codeName(wrong!.packet.code), 'Access-Reject');

    const phone = randomPhone();
    const smsOnly = await register(tenantC, { phoneNumber: phone });
    await ask(Subjects.usersMethodsDefault, { tenantId: tenantC, userId: smsOnly, method: 'sms' });
    const refused = await otp.send({ user: smsOnly, password: '123456' });
    assert.equal(codeName(refused!.packet.code), 'Access-Reject');
    assert.match(refused!.replyMessage ?? '', /challenge mode/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(twilio.messagesTo(phone).length, 0, 'no SMS in otp mode');
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'crafted: no answer without a Message-Authenticator, with a wrong one, with a wrong secret or from an unknown address; retransmissions get the same bytes and one SMS; Proxy-State echoed in order', async () => {
    const a = await crafted(secrets.a);
    const phone = randomPhone();
    const userId = await register(tenantA, { phoneNumber: phone });
    await eventually(async () => ((await ask(Subjects.usersGet, { tenantId: tenantA, userId })).userId ? true : undefined), 10_000, 'registered');
    assert.equal(await a.send({ user: userId, messageAuthenticator: false }, 1_500), undefined, 'no Message-Authenticator: dropped (BlastRADIUS)');
    const forged = a.request({ user: userId });
    const tampered = Buffer.from(forged.bytes);
    tampered[tampered.length - 1]! ^= 0x01; // the Message-Authenticator's last octet
    assert.equal(await a.sendRaw(tampered, forged.identifier, forged.authenticator, 1_500), undefined, 'wrong Message-Authenticator: dropped');
    assert.equal(await a.send({ user: userId, secret: 'a-wrong-secret-of-enough-length' }, 1_500), undefined, 'wrong secret: dropped');
    const stranger = await crafted(secrets.a, '127.0.0.9');
    assert.equal(await stranger.send({ user: userId }, 1_500), undefined, 'unknown client: dropped');
    assert.equal(twilio.messagesTo(phone).length, 0, 'nothing dropped started anything');

    const proxyStates = [Buffer.from('first proxy'), Buffer.from([0, 1, 2, 255])];
    const request = a.request({ user: userId, extra: proxyStates.map((value) => ({ type: Attr.ProxyState, value })) });
    const [one, two] = await Promise.all([
      a.sendRaw(request.bytes, request.identifier, request.authenticator, 5_000),
      new Promise<Answer | undefined>((resolve) => setTimeout(() => resolve(a.sendRaw(request.bytes, request.identifier, request.authenticator, 5_000)), 5)),
    ]);
    assert.equal(codeName(one!.packet.code), 'Access-Challenge');
    assert.ok(one!.authentic, 'Response Authenticator and Message-Authenticator right');
    assert.ok(one!.messageAuthenticatorFirst);
    assert.deepEqual(
      one!.packet.attributes.filter((x) => x.type === Attr.ProxyState).map((x) => x.value),
      proxyStates,
    );
    assert.ok(two, 'the retransmission is answered');
    const three = await a.sendRaw(request.bytes, request.identifier, request.authenticator, 3_000);
    assert.deepEqual(three!.bytes, one!.bytes, 'a later retransmission: the same bytes');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(twilio.messagesTo(phone).length, 1, 'one SMS for the three datagrams');
    // The same Identifier with a new authenticator is a new request.
    const fresh = await a.send({ user: userId, identifier: request.identifier }, 5_000);
    assert.equal(codeName(fresh!.packet.code), 'Access-Challenge');
    assert.notDeepEqual(fresh!.state, one!.state);

    const metrics = await (await fetch(`${front.url('radius')}/metrics`)).text();
    for (const reason of ['no_message_authenticator', 'bad_message_authenticator', 'unknown_client']) assert.match(metrics, new RegExp(`mfa_radius_drops_total\\{[^}]*reason="${reason}"[^}]*\\} [1-9]`));
    assert.match(metrics, /mfa_radius_retransmissions_total\{[^}]*\} [1-9]/);
    assert.match(metrics, /mfa_radius_answers_total\{[^}]*answer="challenge"[^}]*\} [1-9]/);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'a captured Access-Request replayed to another instance (whose memory never held it: as after a restart or past the retransmission window) gets no answer and sends no second SMS; the first instance still answers its retransmission from memory; a new request from the same NAS at the other instance is answered', async () => {
    const secondPort = await freeUdpPort();
    const second = await startStack({
      services: ['radius'],
      env,
      serviceEnv: { radius: { RADIUS_PORT: String(secondPort), RADIUS_CLIENTS: JSON.stringify([{ cidr: '127.0.0.1/32', secret: secrets.a, tenantId: tenantA, name: 'vpn-a' }]), RADIUS_WAIT_SECONDS: '20' } },
      onLine,
      readyTimeoutMs: 60_000,
    });
    try {
      const a = await crafted(secrets.a);
      const elsewhere = await new CraftedClient(secondPort, secrets.a).open();
      clients.push(elsewhere);
      const phone = randomPhone();
      const userId = await register(tenantA, { phoneNumber: phone });
      await eventually(async () => ((await ask(Subjects.usersGet, { tenantId: tenantA, userId })).userId ? true : undefined), 10_000, 'registered');

      const captured = a.request({ user: userId });
      const first = await a.sendRaw(captured.bytes, captured.identifier, captured.authenticator, 5_000);
      assert.equal(codeName(first!.packet.code), 'Access-Challenge');
      await twilio.waitFor((m) => m.to === phone);

      const replayed = await elsewhere.sendRaw(captured.bytes, captured.identifier, captured.authenticator, 2_000);
      assert.equal(replayed, undefined, 'the same bytes at the other instance: no answer');
      const retransmitted = await a.sendRaw(captured.bytes, captured.identifier, captured.authenticator, 3_000);
      assert.deepEqual(retransmitted?.bytes, first!.bytes, 'the NAS’s retransmission to the first instance: the same answer, from memory');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(twilio.messagesTo(phone).length, 1, 'one SMS: the replay started no challenge');

      const fresh = await elsewhere.send({ user: userId }, 5_000);
      assert.equal(codeName(fresh!.packet.code), 'Access-Challenge', 'a new request (a new Request Authenticator) from the same NAS');
      assert.notDeepEqual(fresh!.state, first!.state);
      await twilio.waitFor((m) => m.to === phone && twilio.messagesTo(phone).length > 1);
      assert.equal(twilio.messagesTo(phone).length, 2);

      const metrics = await (await fetch(`${second.url('radius')}/metrics`)).text();
      assert.match(metrics, /mfa_radius_drops_total\{[^}]*reason="replay"[^}]*\} 1\b/);
    } finally {
      await second.stop();
    }
  }, { timeout: 120_000 });

  itWith({ real: wholeStack }, 'crafted: broken packets are dropped and nothing crashes; a non-UTF-8 User-Name and a State from another user or client are rejected; a client acts for its own tenant only', async () => {
    const a = await crafted(secrets.a);
    const b = await crafted(secrets.b, '127.0.0.2');
    const app = await totpUser(tenantA);
    const good = a.request({ user: app.userId });
    const broken: Buffer[] = [
      Buffer.alloc(0),
      good.bytes.subarray(0, 19),
      Buffer.concat([good.bytes.subarray(0, 2), Buffer.from([0xff, 0xff]), good.bytes.subarray(4)]), // Length past the datagram
      Buffer.concat([good.bytes.subarray(0, 2), Buffer.from([0x00, 0x10]), good.bytes.subarray(4)]), // Length < 20
      Buffer.alloc(5000, 1),
      Buffer.concat([good.bytes.subarray(0, 20), Buffer.from([1, 1, 0])]),
    ];
    for (const bytes of broken) assert.equal(await a.sendRaw(bytes, bytes[1] ?? 0, Buffer.alloc(16), 300), undefined);
    // An unknown attribute type is ignored; the request is answered.
    const unknownAttr = await eventually(async () => {
      const r = await a.send({ user: app.userId, extra: [{ type: 240, value: Buffer.from('x') }] });
      return r?.packet.code === Code.AccessChallenge ? r : undefined;
    }, 15_000, 'a challenge');
    const notUtf8 = await a.send({ user: Buffer.from([0x61, 0xff, 0xfe, 0x62]) });
    assert.equal(codeName(notUtf8!.packet.code), 'Access-Reject');
    assert.match(notUtf8!.replyMessage ?? '', /UTF-8/);

    const other = await totpUser(tenantA);
    const stolen = await a.send({ user: other.userId, password: app.next(), state: unknownAttr.state! });
    assert.equal(codeName(stolen!.packet.code), 'Access-Reject', "another user's State");
    const again = await a.send({ user: app.userId });
    const crossClient = await b.send({ user: app.userId, password: app.next(), state: again!.state! });
    assert.equal(codeName(crossClient!.packet.code), 'Access-Reject', "another client's State");
    const afterAll = await a.send({ user: app.userId, password: app.next(), state: again!.state! });
    assert.equal(codeName(afterAll!.packet.code), 'Access-Accept', 'a State presented by another user or client stays good for its own user');

    // Client B acts for tenant B with its own key: tenant A's user is unknown there.
    const foreign = await b.send({ user: app.userId });
    assert.equal(codeName(foreign!.packet.code), 'Access-Reject');
    assert.match(foreign!.replyMessage ?? '', /Unknown user|No MFA method/);
    const own = await totpUser(tenantB);
    const ownChallenge = await eventually(async () => {
      const r = await b.send({ user: own.userId });
      return r?.packet.code === Code.AccessChallenge ? r : undefined;
    }, 15_000, "tenant B's challenge");
    const ownAccepted = await b.send({ user: own.userId, password: own.next(), state: ownChallenge.state! });
    assert.equal(codeName(ownAccepted!.packet.code), 'Access-Accept');
    const health = await fetch(`${front.url('radius')}/health`);
    assert.equal(health.status, 200, 'still healthy');
  });

  itWith({ real: wholeStack }, 'the mfa command: radius status and radius signin answer an Access-Challenge with --code; a wrong secret gets no answer', async () => {
    const mfa = (args: string[], secret: string) =>
      run(process.execPath, [join(repoRoot, 'cli', 'bin', 'mfa.js'), 'radius', ...args], { env: { ...process.env, RADIUS_SECRET: secret }, timeout: 30_000 }).then(
        (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
      );
    const status = await mfa(['status', `127.0.0.1:${port}`], secrets.a);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^Access-Accept \(\d+ ms\)/);
    const wrong = await mfa(['status', `127.0.0.1:${port}`, '--wait', '2'], 'not-the-secret-of-vpn-a');
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /no answer .* within 2 s/);

    const app = await totpUser(tenantA);
    await firstAnswer([`User-Name = "${app.userId}"`], (a) => a!.code === 'Access-Challenge');
    const signin = await mfa(['signin', `127.0.0.1:${port}`, app.userId, '--code', app.nextHere(), '--calling-station', '198.51.100.9:4444'], secrets.a);
    assert.equal(signin.code, 0, `${signin.stdout}${signin.stderr}`);
    assert.match(signin.stdout, /^Access-Challenge: Enter the code from your authenticator app or hardware token\. \(\d+ ms\)\nAccess-Accept \(\d+ ms\)\n$/);
  });

  itWith({ real: wholeStack }, '200 concurrent TOTP sign-ins from one client: every one accepted, each answer within 1 s (a VPN times out at 3 s)', async () => {
    const users = await Promise.all(Array.from({ length: 200 }, () => totpUser(tenantA)));
    // Each socket has its own 256 Identifiers: 200 sign-ins from four source ports.
    const sockets = await Promise.all(Array.from({ length: 4 }, () => crafted(secrets.a)));
    await eventually(async () => {
      const r = await sockets[0]!.send({ user: users[199]!.userId });
      return r?.packet.code === Code.AccessChallenge ? r : undefined;
    }, 20_000, 'the last user known');
    const codes = users.map((u) => u.nextHere());
    const times: number[] = [];
    const results = await Promise.all(
      users.map(async (u, i) => {
        const socket = sockets[i % sockets.length]!;
        const challenge = await socket.send({ user: u.userId });
        if (challenge?.packet.code !== Code.AccessChallenge) return `start ${challenge ? codeName(challenge.packet.code) : 'no answer'}`;
        const accepted = await socket.send({ user: u.userId, password: codes[i]!, state: challenge.state! });
        times.push(challenge.ms, accepted?.ms ?? Infinity);
        return accepted?.packet.code === Code.AccessAccept ? 'ok' : `verify ${accepted ? codeName(accepted.packet.code) : 'no answer'}`;
      }),
    );
    const failed = results.filter((r) => r !== 'ok');
    assert.deepEqual(failed, [], `${failed.length} failed`);
    times.sort((x, y) => x - y);
    process.stdout.write(`# 200 RADIUS sign-ins: answer p50 ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms, max ${times.at(-1)!.toFixed(0)} ms\n`);
    assert.ok(times.at(-1)! < 1_000, `slowest answer ${times.at(-1)!.toFixed(0)} ms`);
  }, { timeout: 180_000 });

  itWith({ real: wholeStack }, 'a burst of 4,000 Status-Server datagrams sent at once is answered in full: the socket queues it (RADIUS_RECEIVE_BUFFER_BYTES) instead of the kernel dropping it, and /metrics counts kernel drops', async () => {
    // Sixteen source ports, 250 Identifiers each, every datagram sent before the first answer is
    // read: the kernel's default receive buffer (208 KiB, about 250 such datagrams) overflows here.
    const perSocket = 250;
    const sockets = await Promise.all(
      Array.from({ length: 16 }, async () => {
        const socket = createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
        const answered = new Set<number>();
        socket.on('message', (bytes) => {
          if (bytes[0] === Code.AccessAccept) answered.add(bytes[1]!);
        });
        await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
        return { socket, answered };
      }),
    );
    try {
      const shaper = new CraftedClient(port, secrets.a);
      const datagrams = sockets.flatMap(({ socket }) =>
        Array.from({ length: perSocket }, (_, identifier) => ({ socket, bytes: shaper.request({ code: Code.StatusServer, identifier }).bytes })),
      );
      for (const { socket, bytes } of datagrams) socket.send(bytes, port, '127.0.0.1');
      const total = () => sockets.reduce((n, s) => n + s.answered.size, 0);
      await eventually(async () => (total() === datagrams.length ? true : undefined), 10_000, `all ${datagrams.length} answered`).catch(() => undefined);
      const unanswered = datagrams.length - total();
      // What the kernel dropped is what went unanswered (none, with the buffer the service asks for).
      const metrics = await (await fetch(`${front.url('radius')}/metrics`)).text();
      const kernelDropped = /mfa_radius_drops_total\{[^}]*reason="receive_buffer_full"[^}]*\} (\d+)/.exec(metrics)?.[1];
      assert.equal(Number(kernelDropped), unanswered, `receive_buffer_full drops counted: ${kernelDropped}`);
      assert.equal(unanswered, 0, `${unanswered} of ${datagrams.length} Status-Server datagrams unanswered`);
    } finally {
      for (const { socket } of sockets) socket.close();
    }
  }, { timeout: 60_000 });

  itWith({ real: wholeStack, fake: ['authenticator'] }, 'a shutdown waits for a push under way: approved 11 s after SIGTERM (past the 10 s an answer used to get), the NAS still gets Access-Accept, then the process exits cleanly; meanwhile /health answers 503 and /metrics still answers', async () => {
    const drainPort = await freeUdpPort();
    const draining = await startStack({
      services: ['radius'],
      env,
      serviceEnv: { radius: { RADIUS_PORT: String(drainPort), RADIUS_CLIENTS: JSON.stringify([{ cidr: '127.0.0.1/32', secret: secrets.a, tenantId: tenantA, name: 'vpn-a' }]), RADIUS_WAIT_SECONDS: '20' } },
      onLine,
      readyTimeoutMs: 60_000,
    });
    try {
      const { userId, app } = await pushUser();
      // A first sign-in, approved at once, shows the user is known to the front's API.
      const first = pushAnswer(drainPort, userId);
      const firstId = (JSON.parse((await app('pending', '--json', '--wait', '15')).stdout) as { challenge: { challengeId: string } }).challenge.challengeId;
      await app('approve', '--challenge', firstId);
      assert.equal((await first).code, 'Access-Accept');

      const answer = radclient(drainPort, secrets.a, [`User-Name = "${userId}"`], 'auth', 30);
      const secondId = (JSON.parse((await app('pending', '--json', '--wait', '15')).stdout) as { challenge: { challengeId: string } }).challenge.challengeId;
      const exited = draining.processes[0]!.stop();
      const url = draining.url('radius');
      // During the drain: not ready (a load balancer's health check takes the front out), alive,
      // and still scraped.
      let health: Response | undefined;
      for (let i = 0; (health = await fetch(`${url}/health`)).status === 200; i++) {
        assert.ok(i < 100, '/health still 200 5 s after SIGTERM');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(health.status, 503);
      assert.equal(((await health.json()) as { status: string }).status, 'stopping');
      assert.equal((await fetch(`${url}/health/live`)).status, 200);
      const metrics = await fetch(`${url}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /mfa_radius_/);
      await new Promise((resolve) => setTimeout(resolve, 11_000));
      assert.match((await app('approve', '--challenge', secondId)).stdout, /approved/);
      const accepted = await answer;
      assert.equal(accepted?.code, 'Access-Accept', accepted?.output ?? 'no answer: the push was cut off by the shutdown');
      assert.equal(await exited, 0, 'a clean exit once the answer was sent');
    } finally {
      await draining.stop();
    }
  }, { timeout: 120_000 });
});
