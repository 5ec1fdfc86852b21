import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams, Subjects, type SigninItem } from '@mfa/contracts';
import { base32Decode, loadKeyring, open, SealContext, totp } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually } from '@mfa/testing';

/**
 * The demo identity provider: registers a user, signs them in by SMS and by authenticator app,
 * and prints the sign-in report, all over the public NATS API of a running stack (npm start).
 *
 * Two stand-ins play the user's devices: the "phone" reads the SMS code from the delivery request
 * event, opening it with the stack's key (the development key unless MFA_ENCRYPTION_KEY is set);
 * the "authenticator app" computes TOTP codes from the enrolled secret.
 */
export async function runDemo(options: {
  out: (line: string) => void;
  natsUrl?: string;
  tenantId?: string;
  env?: NodeJS.ProcessEnv;
  /** The stack's MFA_PLATFORM_API_KEY, when it runs with MFA_AUTH=required. */
  platformKey?: string;
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
  const ask = async <T>(subject: string, body: unknown): Promise<T> => {
    const reply = await requestJson<T & { error?: { code: string; message: string } }>(nc, subject, body, {
      timeoutMs: 10_000,
      ...(apiKey ? { headers: { Authorization: `Bearer ${apiKey}` } } : {}),
    });
    if (reply.error) throw new Error(`${subject}: ${reply.error.code}: ${reply.error.message}`);
    return reply;
  };
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
    const wrong = await ask<{ challengeId: string }>(Subjects.challengeStart, { tenantId, userId, method: 'totp', application: 'VPN' });
    for (let i = 0; i < 5; i++) await ask(Subjects.challengeVerify, { tenantId, challengeId: wrong.challengeId, code: '000000' });
    out('IdP → five wrong codes on a third sign-in → denied');

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
        return r.items.length >= 5 ? r.items : undefined;
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
    const ok = smsResult.status === 'approved' && appResult.status === 'approved' && alert.blocked && afterBlock.reason === 'user_blocked';
    return ok ? 0 : 1;
  } catch (error) {
    out(`demo failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await nc.drain();
  }
}
