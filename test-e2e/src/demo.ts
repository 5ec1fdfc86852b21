import type { NatsConnection } from '@nats-io/transport-node';
import { createHmac, randomBytes } from 'node:crypto';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { DEVELOPMENT_VOICE_WEBHOOK_TOKEN, EventSubjects, OATH_CSV_HEADER, parseEvent, Streams, Subjects, type AnyEvent, type SigninItem } from '@mfa/contracts';
import { base32Decode, base32Encode, loadKeyring, open, SealContext, totp } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually } from '@mfa/testing';
import { DeviceClient } from '@mfa/authenticator';

/**
 * The demo identity provider: registers a user, signs them in by SMS and by authenticator app,
 * and prints the sign-in report, all over the public NATS API of a running stack (npm start).
 *
 * Two stand-ins play the user's devices: the "phone" reads the SMS code from the delivery request
 * event, opening it with the stack's key (the development key unless MFA_ENCRYPTION_KEY is set),
 * and answers a call of the development voice provider the way Twilio would (fetches the TwiML,
 * presses #); the "authenticator app" computes TOTP codes from the enrolled secret.
 */
export async function runDemo(options: {
  out: (line: string) => void;
  natsUrl?: string;
  tenantId?: string;
  env?: NodeJS.ProcessEnv;
  /** The stack's MFA_PLATFORM_API_KEY, when it runs with MFA_AUTH=required. */
  platformKey?: string;
  /** Where dispatch's voice webhooks are (default VOICE_WEBHOOK_BASE_URL, else npm start's dispatch). */
  dispatchUrl?: string;
  /** The device API's base, when not where user-settings' activation URLs say (a test stack's port). */
  deviceApiUrl?: string;
}): Promise<number> {
  const out = options.out;
  // NATS_URL and the NATS_* credentials, as the services read them (docs/operations.md). The
  // phone's stand-in reads the event log, so on a server with deploy/nats's permissions the demo
  // needs the services' user, not an IdP's.
  const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env), ...(options.natsUrl ? { NATS_URL: options.natsUrl } : {}) };
  const natsUrl = env.NATS_URL || 'nats://127.0.0.1:4222';
  let nc: NatsConnection;
  try {
    nc = await connectClient({ name: 'demo-idp' }, env);
  } catch (error) {
    out(`Cannot connect to NATS at ${natsUrl} (${(error as Error).message}). Start the stack first: npm start`);
    return 1;
  }
  const { keyring } = loadKeyring(env);
  const jsm = await jetstreamManager(nc);
  // With MFA_PLATFORM_API_KEY set (a stack started with MFA_AUTH=required), the platform key
  // creates the tenant and an API key for the IdP, which then goes on every request; without it
  // (development, MFA_AUTH=off) requests carry no key.
  const platformKey = options.platformKey ?? env.MFA_PLATFORM_API_KEY;
  let apiKey = platformKey;
  const askWith = async <T>(key: string | undefined, subject: string, body: unknown): Promise<T> => {
    const reply = await requestJson<T & { error?: { code: string; message: string } }>(nc, subject, body, {
      timeoutMs: 10_000,
      ...(key ? { headers: { Authorization: `Bearer ${key}` } } : {}),
    });
    if (reply.error) throw new Error(`${subject}: ${reply.error.code}: ${reply.error.message}`);
    return reply;
  };
  const ask = <T>(subject: string, body: unknown): Promise<T> => askWith<T>(apiKey, subject, body);
  // The tenant's administrator (hardware token imports need the admin scope the IdP's key lacks).
  const admin = <T>(subject: string, body: unknown): Promise<T> => askWith<T>(platformKey, subject, body);
  try {
    const tenantId = options.tenantId ?? `demo-${Date.now().toString(36)}`;
    const userId = 'helga@contoso.com';
    out(`IdP → mfa.v1.tenants.configure   tenant ${tenantId}, codes live 300 s${platformKey ? ' (platform key)' : ''}`);
    await ask(Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: 300 } });
    if (platformKey) {
      const client = await ask<{ clientId: string; apiKey: string }>(Subjects.clientsCreate, {
        tenantId,
        name: 'demo IdP',
        scopes: ['challenges', 'users', 'reports'],
      });
      apiKey = client.apiKey;
      out(`IdP → mfa.v1.clients.create      client ${client.clientId}, scopes challenges, users, reports: its key goes on every request from here`);
    }
    out(`IdP → mfa.v1.users.register      ${userId}, +46701234567`);
    const reg = await ask<{ methods: string[] }>(Subjects.usersRegister, {
      tenantId,
      userId,
      displayName: 'Helga Larsson',
      email: userId,
      phoneNumber: '+46701234567',
      language: 'sv-SE',
    });
    out(`      methods: ${reg.methods.join(', ')}`);

    // SMS sign-in.
    const sms = await ask<{ challengeId: string; status: string; expiresAt: string }>(Subjects.challengeStart, {
      tenantId,
      userId,
      method: 'sms',
      clientIp: '198.51.100.23',
      application: 'Outlook Web',
    });
    out(`IdP → mfa.v1.challenge.start     sms → ${sms.status}, expires ${sms.expiresAt}`);
    const code = await eventually(
      async () => {
        const msg = await jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested });
        const event = msg?.json<{ tenantId: string; data: { challengeId: string; delivery: { sealedCode: string } } }>();
        if (event?.data.challengeId !== sms.challengeId) return undefined;
        return open(keyring, event.data.delivery.sealedCode, SealContext.smsCode(tenantId, sms.challengeId)).toString();
      },
      10_000,
      'the SMS request',
    );
    out(`📱 phone receives the SMS code ${code} (dispatch sends it through the configured provider)`);
    const smsResult = await ask<{ status: string }>(Subjects.challengeVerify, { tenantId, challengeId: sms.challengeId, code });
    out(`IdP → mfa.v1.challenge.verify    ${code} → ${smsResult.status}`);

    // Phone-call sign-in: with the development voice provider (npm start without Twilio) no phone
    // rings, so the demo plays the phone against dispatch's webhooks, as Twilio would.
    const voice = await playVoiceSignIn({ ask, jsm, out, tenantId, userId, dispatchUrl: options.dispatchUrl ?? env.VOICE_WEBHOOK_BASE_URL ?? 'http://127.0.0.1:3002' });

    // Authenticator-app sign-in.
    const enrolled = await ask<{ tokenId: string; secret: string; otpauthUri: string }>(Subjects.totpEnroll, { tenantId, userId });
    out(`IdP → mfa.v1.users.totp.enroll   ${enrolled.otpauthUri.replace(/secret=[^&]+/, 'secret=…')}`);
    const secret = base32Decode(enrolled.secret);
    const now = Date.now();
    await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, now) });
    out('IdP → mfa.v1.users.totp.activate app code accepted, token active');
    const app = await ask<{ challengeId: string; method: string }>(Subjects.challengeStart, {
      tenantId,
      userId,
      clientIp: '198.51.100.23',
      application: 'VPN',
    });
    out(`IdP → mfa.v1.challenge.start     default method → ${app.method}`);
    // The activation used this time step; the app's next code (still within ±1 step) signs in.
    const appCode = totp(secret, now + 30_000);
    const appResult = await ask<{ status: string }>(Subjects.challengeVerify, { tenantId, challengeId: app.challengeId, code: appCode });
    out(`IdP → mfa.v1.challenge.verify    ${appCode} → ${appResult.status}`);
    // A hardware token: the administrator imports the vendor's CSV, the user activates the token
    // with the code it shows, then signs in with it like with the app.
    const hardware = await playHardwareToken({ ask, admin, out, tenantId, userId });

    const wrong = await ask<{ challengeId: string }>(Subjects.challengeStart, { tenantId, userId, method: 'totp', application: 'VPN' });
    for (let i = 0; i < 5; i++) await ask(Subjects.challengeVerify, { tenantId, challengeId: wrong.challengeId, code: '000000' });
    out('IdP → five wrong codes on a third sign-in → denied');

    // Push sign-in: the reference authenticator app activates with the enrolment's code and
    // answers with the number the sign-in page shows.
    const push = await playPushSignIn({ ask, out, tenantId, userId, ...(options.deviceApiUrl ? { deviceApiUrl: options.deviceApiUrl } : {}) });

    // A sign-in the user did not start: the IdP reports it, the challenge is denied and the user blocked.
    const suspicious = await ask<{ challengeId: string }>(Subjects.challengeStart, { tenantId, userId, method: 'totp', clientIp: '203.0.113.66', application: 'VPN' });
    const alert = await ask<{ challengeDenied: boolean; blocked: boolean; blockedUntil?: string }>(Subjects.fraudReport, {
      tenantId,
      userId,
      challengeId: suspicious.challengeId,
      source: 'idp',
      comment: 'Helga says this sign-in was not hers',
    });
    out(`IdP → mfa.v1.fraud.report        challenge denied: ${alert.challengeDenied}, user blocked until ${alert.blockedUntil ?? '-'}`);
    const afterBlock = await ask<{ status: string; reason?: string }>(Subjects.challengeStart, { tenantId, userId, clientIp: '203.0.113.66', application: 'VPN' });
    out(`IdP → mfa.v1.challenge.start     → ${afterBlock.status} (${afterBlock.reason ?? ''})`);

    const report = await eventually(
      async () => {
        const r = await ask<{ items: SigninItem[] }>(Subjects.reportsSigninsQuery, { tenantId, limit: 10 });
        // SMS, app, hardware token, wrong codes, the reported fraud and the start refused after
        // the block; the call and push when they ran.
        return r.items.length >= 6 + (voice === 'skipped' ? 0 : 1) + (push === 'skipped' ? 0 : 1) ? r.items : undefined;
      },
      15_000,
      'the sign-in report',
    );
    out('\nSign-in report (mfa.v1.reports.signins.query):');
    for (const item of report) {
      out(
        `  ${item.occurredAt}  ${item.userId}  ${String(item.authMethod).padEnd(5)} ${item.result.padEnd(8)} ${item.resultDetail}` +
          `  client ${item.clientIp ?? '-'}  app ${item.application ?? '-'}  server ${item.serverName ?? '-'}`,
      );
    }
    const ok = smsResult.status === 'approved' && voice !== 'denied' && push !== 'denied' && appResult.status === 'approved' && hardware === 'approved' && alert.blocked && afterBlock.reason === 'user_blocked';
    return ok ? 0 : 1;
  } catch (error) {
    out(`demo failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await nc.drain();
  }
}

type Ask = <T>(subject: string, body: unknown) => Promise<T>;

/**
 * Hardware tokens: a small CSV in the seeds' format (one token for the user, a 60-second one, and
 * one left in the inventory), the import job followed to its end, the token activated with the code
 * it shows (computed here from its secret, as the token would), and a sign-in with its next code.
 */
async function playHardwareToken(o: { ask: Ask; admin: Ask; out: (line: string) => void; tenantId: string; userId: string }): Promise<string> {
  const secret = randomBytes(20);
  const serial = `DEMO-${randomBytes(3).toString('hex').toUpperCase()}`;
  const csv = [OATH_CSV_HEADER, `${o.userId},${serial},${base32Encode(secret)},60,Contoso,HardwareKey`, `,${serial}-SPARE,${base32Encode(randomBytes(20))},30,Contoso,HardwareKey`].join('\n');
  const { jobId } = await o.admin<{ jobId: string }>(Subjects.oathImport, { tenantId: o.tenantId, format: 'csv', content: csv });
  const job = await eventually(async () => {
    const s = await o.admin<{ state: string; imported: number; failed: number; total: number }>(Subjects.oathImportStatus, { tenantId: o.tenantId, jobId });
    return s.state === 'completed' || s.state === 'failed' ? s : undefined;
  }, 30_000, 'the import job');
  o.out(`admin → mfa.v1.oath.import         2 hardware tokens → ${job.state}: ${job.imported} imported, ${job.failed} failed`);
  const now = Date.now();
  const activated = await o.admin<{ active: boolean }>(Subjects.oathTokensActivate, { tenantId: o.tenantId, serialNumber: serial, code: totp(secret, now, { period: 60 }) });
  o.out(`admin → mfa.v1.oath.tokens.activate ${serial} → ${activated.active ? 'active' : 'refused'}`);
  const start = await o.ask<{ challengeId: string }>(Subjects.challengeStart, { tenantId: o.tenantId, userId: o.userId, method: 'totp', application: 'VPN' });
  const code = totp(secret, now + 60_000, { period: 60 });
  const result = await o.ask<{ status: string }>(Subjects.challengeVerify, { tenantId: o.tenantId, challengeId: start.challengeId, code });
  o.out(`IdP → mfa.v1.challenge.verify    ${code} (hardware token) → ${result.status}`);
  return result.status;
}

/** X-Twilio-Signature: HMAC-SHA1 of the URL and the parameters sorted by name, base64. */
function twilioSignature(token: string, url: string, params: Record<string, string>): string {
  const data = Object.keys(params)
    .sort()
    .reduce((text, key) => text + key + params[key], url);
  return createHmac('sha1', token).update(data).digest('base64');
}

const xmlText = (text: string) => text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

/**
 * A voice sign-in. When dispatch placed the call through the development provider, the demo is
 * the phone: it fetches the TwiML (signed with the development token), says what it hears, presses
 * # at the prompt. With Twilio, a real phone rings and the demo does not wait for it; with no voice
 * provider the call is not placed and the IdP would fall back. Answers the challenge's outcome, or
 * `skipped`.
 */
async function playVoiceSignIn(o: { ask: Ask; jsm: JetStreamManager; out: (line: string) => void; tenantId: string; userId: string; dispatchUrl: string }): Promise<string> {
  const start = await o.ask<{ challengeId: string; status: string }>(Subjects.challengeStart, { tenantId: o.tenantId, userId: o.userId, method: 'voice', clientIp: '198.51.100.23', application: 'VPN' });
  o.out(`IdP → mfa.v1.challenge.start     voice → ${start.status}`);
  const outcome = await eventually(
    async () => {
      for (const subject of [EventSubjects.voicePlaced, EventSubjects.voiceFailed]) {
        const msg = await o.jsm.direct.getMessage(Streams.dispatch.name, { last_by_subj: subject });
        const event = msg ? (parseEvent(msg.json()) as AnyEvent) : undefined;
        if ((event?.type === 'VoiceCallPlaced' || event?.type === 'VoiceCallFailed') && event.data.challengeId === start.challengeId) return event;
      }
      return undefined;
    },
    15_000,
    'the call placed or refused',
  ).catch(() => undefined);
  if (!outcome) {
    o.out('📞 no call: dispatch did not take the voice request (is it running?)');
    return 'skipped';
  }
  if (outcome.type === 'VoiceCallFailed') {
    o.out(`📞 no call: ${outcome.data.failures[0]?.error ?? 'not placed'} (npm start uses the development voice provider when Twilio is not set)`);
    return 'skipped';
  }
  if (outcome.data.provider !== 'console') {
    o.out(`📞 ${outcome.data.provider} is calling the user's phone (call ${outcome.data.providerCallId}); the demo does not wait for it`);
    return 'skipped';
  }
  let url = `${o.dispatchUrl.replace(/\/+$/, '')}/voice/twiml/${encodeURIComponent(start.challengeId)}`;
  let params: Record<string, string> = { CallSid: outcome.data.providerCallId, AccountSid: 'ACdevelopment', CallStatus: 'in-progress' };
  for (let prompt = 0; prompt < 4; prompt++) {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Twilio-Signature': twilioSignature(DEVELOPMENT_VOICE_WEBHOOK_TOKEN, url, params) },
      body: new URLSearchParams(params),
    });
    const twiml = await response.text();
    if (response.status !== 200) throw new Error(`the voice webhook answered ${response.status}`);
    for (const said of twiml.matchAll(/<Say[^>]*>([^<]*)<\/Say>/g)) o.out(`📞 phone hears: “${xmlText(said[1]!)}”`);
    const action = /<Gather[^>]*action="([^"]+)"/.exec(twiml);
    if (!action) break;
    url = xmlText(action[1]!);
    params = { ...params, Digits: '', FinishedOnKey: '#' };
    o.out('📞 phone presses #');
  }
  const status = await o.ask<{ status: string }>(Subjects.challengeStatus, { tenantId: o.tenantId, challengeId: start.challengeId });
  o.out(`IdP → mfa.v1.challenge.status    → ${status.status}`);
  return status.status === 'approved' ? 'approved' : 'denied';
}

/**
 * A push sign-in with the reference authenticator (@mfa/authenticator): enrol, activate with the
 * code, start a push, read the pending sign-in as the app shows it, approve with the number.
 * `skipped` when the device API cannot be reached (a stack without auth-challenge's HTTP port).
 */
async function playPushSignIn(o: { ask: Ask; out: (line: string) => void; tenantId: string; userId: string; deviceApiUrl?: string }): Promise<string> {
  const enrolled = await o.ask<{ activationCode: string; activationUrl: string }>(Subjects.usersPushEnroll, { tenantId: o.tenantId, userId: o.userId });
  o.out(`IdP → mfa.v1.users.push.enroll   activation code ${enrolled.activationCode} (also a QR code of ${enrolled.activationUrl})`);
  const url = o.deviceApiUrl ? `${o.deviceApiUrl.replace(/\/+$/, '')}/v1/activate?code=${enrolled.activationCode}` : enrolled.activationUrl;
  let app: DeviceClient;
  try {
    app = await DeviceClient.activate(url, { name: "Helga's phone" });
  } catch (error) {
    o.out(`📲 the app could not reach the device API (${(error as Error).message}): push skipped`);
    return 'skipped';
  }
  o.out(`📲 app activated: device ${app.identity.deviceId}, key ES256 kept on the phone`);
  const start = await o.ask<{ challengeId: string; status: string; numberMatch?: string }>(Subjects.challengeStart, {
    tenantId: o.tenantId,
    userId: o.userId,
    method: 'push',
    clientIp: '81.2.69.142',
    application: 'VPN',
  });
  o.out(`IdP → mfa.v1.challenge.start     push → ${start.status}; the sign-in page shows ${start.numberMatch}`);
  const pending = await app.pending();
  if (!pending) throw new Error('the app found no pending sign-in');
  o.out(`📲 app shows: ${pending.application ?? '?'} from ${pending.clientIp ?? '?'} (${pending.location?.country ?? '?'}); the user types ${start.numberMatch}`);
  const answered = await app.answer(start.challengeId, 'approve', start.numberMatch);
  o.out(`📲 app → answer approve ${start.numberMatch} (signed) → ${answered.status}`);
  const status = await o.ask<{ status: string }>(Subjects.challengeStatus, { tenantId: o.tenantId, challengeId: start.challengeId });
  o.out(`IdP → mfa.v1.challenge.status    → ${status.status}`);
  return status.status === 'approved' ? 'approved' : 'denied';
}
