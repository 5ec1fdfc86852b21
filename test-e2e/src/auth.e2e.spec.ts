import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import {
  SCOPES,
  Streams,
  Subjects,
  SubjectScopes,
  type ApiSubject,
  type AuditItem,
  type ClientItem,
  type Scope,
} from '@mfa/contracts';
import { requestJson } from '@mfa/messaging';
import { eventually, itWith, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';
import { runDemo } from './demo.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/**
 * Callers, keys and scopes with MFA_AUTH=required, two instances of each service that answers the
 * public API: every subject of the contract refuses every kind of bad caller, and changes nothing.
 */
describe('end to end: API keys, scopes and tenants (MFA_AUTH=required)', () => {
  const platformKey = randomBytes(36).toString('base64url');
  let stack: Stack;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const logLines: string[] = [];
  const tenantA = uniqueTenant('auth-a');
  const tenantB = uniqueTenant('auth-b');
  const userA = uniqueUser('alice');
  /** Keys of tenant A by scope set; `all` has every scope. */
  const keys: Record<string, string> = {};
  let revokedKey = '';
  let otherTenantKey = '';
  let challengeId = '';
  let clientOfA = '';

  const ask = (subject: string, body: unknown, key?: string) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, ...(key ? { headers: { Authorization: `Bearer ${key}` } } : {}) });
  const asPlatform = (subject: string, body: unknown) => ask(subject, body, platformKey);
  const createClient = async (tenantId: string, scopes: Scope[], key = platformKey) => {
    const reply = await ask(Subjects.clientsCreate, { tenantId, name: `e2e ${scopes.join('+')}`, scopes }, key);
    assert.equal(reply.error, undefined, JSON.stringify(reply.error));
    return reply as { clientId: string; apiKey: string };
  };

  before(async () => {
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'reporting', 'fraud', 'dispatch'],
      instances: 2,
      env: {
        NODE_ENV: 'test',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        MFA_CLIENT_USAGE_FLUSH_SECONDS: '1',
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
      },
      onLine: (service, line) => {
        logLines.push(line);
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connect({ servers: testEnv.natsUrl, name: 'e2e-auth' });
    jsm = await jetstreamManager(nc);

    // Only the platform key creates tenants.
    for (const tenantId of [tenantA, tenantB]) {
      const created = await asPlatform(Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: 300 } });
      assert.equal(created.error, undefined, JSON.stringify(created.error));
    }
    for (const scopes of [['challenges'], ['users'], ['reports'], ['admin'], [...SCOPES]] as Scope[][]) {
      keys[scopes.length === SCOPES.length ? 'all' : scopes[0]!] = (await createClient(tenantA, scopes)).apiKey;
    }
    // Keys that lack exactly one scope, for the "missing scope" column of the matrix.
    for (const missing of SCOPES) {
      const scopes = SCOPES.filter((s) => s !== missing && !(missing === 'users' && s === 'admin'));
      keys[`no-${missing}`] = (await createClient(tenantA, scopes)).apiKey;
    }
    const revoked = await createClient(tenantA, [...SCOPES]);
    revokedKey = revoked.apiKey;
    assert.equal((await asPlatform(Subjects.clientsRevoke, { tenantId: tenantA, clientId: revoked.clientId })).error, undefined);
    otherTenantKey = (await createClient(tenantB, [...SCOPES])).apiKey;

    const registered = await ask(Subjects.usersRegister, { tenantId: tenantA, userId: userA, phoneNumber: '+14155550100' }, keys.users);
    assert.deepEqual(registered, { userId: userA, methods: ['sms', 'voice'] });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenantA, userId: userA }, keys.users);
    assert.equal(enrolled.error, undefined);
    const started = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'sms' }, keys.challenges);
    assert.equal(started.status, 'pending');
    challengeId = String(started.challengeId);
    clientOfA = (await createClient(tenantA, ['reports'])).clientId;
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
  });

  /** A body each subject would accept from tenant A's admin: what the matrix sends with bad keys. */
  function validBody(subject: ApiSubject): Record<string, unknown> {
    const tenantId = tenantA;
    switch (subject) {
      case Subjects.usersRegister:
        return { tenantId, userId: userA, displayName: 'Changed By Attacker', phoneNumber: '+14155550199' };
      case Subjects.totpEnroll:
        return { tenantId, userId: userA };
      case Subjects.usersTokensDelete:
        return { tenantId, userId: userA, tokenId: 'tok' };
      case Subjects.usersPinSet:
        return { tenantId, userId: userA, pin: '2468' };
      case Subjects.usersMethodsDefault:
        return { tenantId, userId: userA, method: 'sms' };
      case Subjects.usersAppPasswordsCreate:
      case Subjects.usersAppPasswordsDelete:
        return { tenantId, userId: userA };
      case Subjects.appPasswordsVerify:
        return { tenantId, userId: userA, password: 'abcdabcdabcdabcdabcdabcd' };
      case Subjects.totpActivate:
        return { tenantId, userId: userA, tokenId: 'tok', code: '123456' };
      case Subjects.usersBlock:
      case Subjects.usersUnblock:
        return { tenantId, userId: userA, reason: 'matrix' };
      case Subjects.usersDelete:
      case Subjects.usersGet:
      case Subjects.usersReset:
      case Subjects.usersRememberedRevoke:
        return { tenantId, userId: userA };
      case Subjects.challengeStart:
        return { tenantId, userId: userA };
      case Subjects.challengeVerify:
        return { tenantId, challengeId, code: '000000' };
      case Subjects.challengeStatus:
      case Subjects.challengeResend:
        return { tenantId, challengeId };
      case Subjects.fraudReport:
        return { tenantId, userId: userA, challengeId, source: 'idp' };
      case Subjects.fraudIpsUnlock:
        return { tenantId, ip: '198.51.100.7', reason: 'matrix' };
      case Subjects.reportsUsageQuery:
        return { tenantId, from: '2026-11-01T00:00:00Z', to: '2026-12-01T00:00:00Z', granularity: 'day' };
      case Subjects.usersList:
      case Subjects.reportsSigninsQuery:
      case Subjects.reportsAuditQuery:
      case Subjects.reportsFraudQuery:
      case Subjects.reportsBlockedQuery:
      case Subjects.fraudIpsList:
      case Subjects.tenantsGet:
      case Subjects.tenantsDelete:
      case Subjects.clientsList:
        return { tenantId };
      case Subjects.tenantsConfigure:
        return { tenantId, settings: { maxAttempts: 1 } };
      case Subjects.clientsCreate:
        return { tenantId, name: 'intruder', scopes: ['admin'] };
      case Subjects.clientsRevoke:
        return { tenantId, clientId: clientOfA };
      case Subjects.voiceMessagesUpload:
        return { tenantId, type: 'greetingStandard', language: 'en', object: `${tenantId}/matrix.wav` };
      case Subjects.voiceMessagesList:
        return { tenantId };
      case Subjects.usersPushEnroll:
        return { tenantId, userId: userA };
      case Subjects.usersDevicesDelete:
        return { tenantId, userId: userA, deviceId: 'device' };
      case Subjects.voiceMessagesDelete:
        return { tenantId, type: 'greetingStandard', language: 'en' };
      case Subjects.oathImport:
        return { tenantId, format: 'csv', content: `upn,serial number,secret key,time interval,manufacturer,model\n${userA},M-1,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30,Acme,K1\n` };
      case Subjects.oathImportStatus:
        return { tenantId, jobId: 'job' };
      case Subjects.oathTokensList:
        return { tenantId };
      case Subjects.oathTokensAssign:
        return { tenantId, serialNumber: 'M-1', userId: userA };
      case Subjects.oathTokensActivate:
        return { tenantId, serialNumber: 'M-1', code: '123456' };
    }
  }

  /** Messages in the event streams that a request could have changed, per stream. */
  async function eventCounts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const stream of [Streams.userSettings.name, Streams.challenges.name, Streams.userKeys.name]) {
      const { messages, last_seq } = (await jsm.streams.info(stream)).state;
      out[stream] = messages;
      // A data key erased and replaced by a tombstone leaves the count as it was, not the sequence.
      out[`${stream} last`] = last_seq;
    }
    return out;
  }

  itWith({ real: wholeStack }, 'refuses every subject × every bad caller with forbidden, revealing nothing and changing nothing', async () => {
    const subjects = Object.values(Subjects) as ApiSubject[];
    const unknownKey = `mfak.${randomBytes(12).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
    const cases: Array<[string, (subject: ApiSubject) => string | undefined]> = [
      ['no key', () => undefined],
      ['unknown key', () => unknownKey],
      ['revoked key', () => revokedKey],
      ['missing scope', (subject) => keys[`no-${SubjectScopes[subject]}`]],
      ["another tenant's key", () => otherTenantKey],
      ['platform key mistyped', () => `${platformKey}x`],
    ];
    const before = await eventCounts();
    const auditBefore = await auditCount();
    let refused = 0;
    for (const subject of subjects) {
      for (const [name, keyOf] of cases) {
        const body = validBody(subject);
        const reply = await ask(subject, body, keyOf(subject));
        assert.equal(reply.error?.code, 'forbidden', `${subject} with ${name}: ${JSON.stringify(reply)}`);
        // The message never names the tenant or user, nor says whether they exist.
        assert.ok(!reply.error!.message.includes(tenantA) && !reply.error!.message.includes(userA), reply.error!.message);
        refused++;
      }
    }
    assert.equal(refused, subjects.length * cases.length);
    process.stdout.write(`cross-tenant matrix: ${subjects.length} subjects × ${cases.length} cases = ${refused} refused\n`);
    // Nothing changed: no event in the user-settings or challenge logs.
    assert.deepEqual(await eventCounts(), before);
    const settings = (await asPlatform(Subjects.tenantsGet, { tenantId: tenantA })) as { settings: { maxAttempts: number; codeLifetimeSeconds: number } };
    assert.equal(settings.settings.maxAttempts, 5);
    assert.equal(settings.settings.codeLifetimeSeconds, 300);
    const clients = (await asPlatform(Subjects.clientsList, { tenantId: tenantA })) as { items: ClientItem[] };
    assert.ok(!clients.items.some((c) => c.name === 'intruder'));
    assert.equal(clients.items.find((c) => c.clientId === clientOfA)?.revokedAt, undefined);
    // Admin subjects refused for lack of scope are in the audit trail (the caller was identified).
    const adminSubjects = subjects.filter((s) => SubjectScopes[s] === 'admin').length;
    await eventually(async () => ((await auditCount()) >= auditBefore + adminSubjects ? true : undefined), 10_000, 'refusals audited');
  });

  async function auditCount(): Promise<number> {
    let n = 0;
    let cursor: string | undefined;
    do {
      const page = (await ask(Subjects.reportsAuditQuery, { tenantId: tenantA, limit: 500, ...(cursor ? { cursor } : {}) }, keys.reports)) as {
        items: AuditItem[];
        nextCursor?: string;
      };
      n += page.items.length;
      cursor = page.nextCursor;
    } while (cursor);
    return n;
  }

  itWith({ real: wholeStack }, 'grants each scope its subjects, and admin everything users may do', async () => {
    const user = uniqueUser('scoped');
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId: tenantA, userId: user }, keys.users), { userId: user, methods: [] });
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId: tenantA, userId: user }, keys.admin), { userId: user, methods: [] });
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenantA, userId: user }, keys.challenges)).status, 'registration_required');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenantA, userId: user }, keys.admin)).error?.code, 'forbidden');
    assert.ok(Array.isArray((await ask(Subjects.reportsSigninsQuery, { tenantId: tenantA }, keys.reports)).items));
    assert.equal((await ask(Subjects.tenantsGet, { tenantId: tenantA }, keys.admin)).tenantId, tenantA);
    assert.equal((await ask(Subjects.tenantsGet, { tenantId: tenantA }, keys.users)).error?.code, 'forbidden');
  });

  itWith({ real: wholeStack }, 'lets only the platform key create tenants; register no longer creates them', async () => {
    const fresh = uniqueTenant('auth-new');
    const byTenantAdmin = await ask(Subjects.tenantsConfigure, { tenantId: fresh, settings: {} }, keys.admin);
    assert.equal(byTenantAdmin.error?.code, 'forbidden');
    const byRegister = await asPlatform(Subjects.usersRegister, { tenantId: fresh, userId: 'u' });
    assert.equal(byRegister.error?.code, 'not_found');
    assert.equal((await asPlatform(Subjects.tenantsConfigure, { tenantId: fresh, settings: {} })).tenantId, fresh);
    assert.deepEqual(await asPlatform(Subjects.usersRegister, { tenantId: fresh, userId: 'u' }), { userId: 'u', methods: [] });
  });

  itWith({ real: wholeStack }, 'refuses a revoked key on every instance within 1 s, and lists clients with their last use', async () => {
    const { clientId, apiKey } = await createClient(tenantA, ['challenges', 'reports'], keys.admin);
    assert.equal((await ask(Subjects.reportsSigninsQuery, { tenantId: tenantA }, apiKey)).error, undefined);
    const status = await ask(Subjects.challengeStatus, { tenantId: tenantA, challengeId }, apiKey);
    assert.equal(status.status, 'pending');
    const revokedAt = Date.now();
    const revoked = await ask(Subjects.clientsRevoke, { tenantId: tenantA, clientId }, keys.admin);
    assert.equal(revoked.clientId, clientId);
    // Requests spread over both auth-challenge instances (queue group): poll until 20 in a row are refused.
    let streak = 0;
    let refusedAfterMs = 0;
    while (streak < 20) {
      const reply = await ask(Subjects.challengeStatus, { tenantId: tenantA, challengeId }, apiKey);
      streak = reply.error?.code === 'forbidden' ? streak + 1 : 0;
      if (streak === 1) refusedAfterMs = Date.now() - revokedAt;
      assert.ok(Date.now() - revokedAt < 5_000, 'revocation never took effect');
    }
    process.stdout.write(`revoked key refused by every instance ${refusedAfterMs} ms after clients.revoke answered\n`);
    await sleep(Math.max(0, 1_000 - (Date.now() - revokedAt)));
    for (let i = 0; i < 20; i++) {
      assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenantA, challengeId }, apiKey)).error?.code, 'forbidden');
    }
    assert.ok(refusedAfterMs <= 1_000, `refused after ${refusedAfterMs} ms`);
    const listed = await eventually(async () => {
      const list = (await ask(Subjects.clientsList, { tenantId: tenantA }, keys.admin)) as { items: ClientItem[] };
      const item = list.items.find((c) => c.clientId === clientId);
      return item?.lastUsedAt ? item : undefined;
    }, 10_000, 'lastUsedAt written');
    assert.deepEqual(listed.scopes, ['challenges', 'reports']);
    assert.ok(listed.revokedAt);
    assert.ok(Date.parse(listed.lastUsedAt!) <= revokedAt + 1_000);
    // Keys are shown once: the list never carries them, nor their hashes.
    assert.ok(!JSON.stringify(listed).includes(apiKey.split('.')[2]!));
  });

  itWith({ real: wholeStack }, 'records every admin action with the acting client and the target user', async () => {
    const { clientId, apiKey } = await createClient(tenantA, ['admin'], keys.admin);
    await ask(Subjects.tenantsConfigure, { tenantId: tenantA, settings: { lockout: { threshold: 7 } } }, apiKey);
    await ask(Subjects.usersBlock, { tenantId: tenantA, userId: userA, reason: 'called the help desk' }, apiKey);
    await ask(Subjects.usersUnblock, { tenantId: tenantA, userId: userA, reason: 'identity confirmed' }, apiKey);
    const items = await eventually(async () => {
      const page = (await ask(Subjects.reportsAuditQuery, { tenantId: tenantA, clientId }, keys.reports)) as { items: AuditItem[] };
      return page.items.length >= 3 ? page.items : undefined;
    }, 10_000, 'audit rows');
    assert.deepEqual(
      items.map((i) => [i.subject, i.clientId, i.userId, i.outcome]),
      [
        [Subjects.usersUnblock, clientId, userA, 'ok'],
        [Subjects.usersBlock, clientId, userA, 'ok'],
        [Subjects.tenantsConfigure, clientId, undefined, 'ok'],
      ],
    );
    // Tenant B sees none of tenant A's trail.
    const other = (await ask(Subjects.reportsAuditQuery, { tenantId: tenantB }, otherTenantKey)) as { items: AuditItem[] };
    assert.ok(other.items.every((i) => i.clientId !== clientId));
    // A cursor is only good for its own query.
    assert.equal((await ask(Subjects.reportsAuditQuery, { tenantId: tenantA, cursor: 'bm90LWEtY3Vyc29y' }, keys.reports)).error?.code, 'invalid_request');
  });

  itWith({ real: wholeStack }, 'runs the demo with auth on: the platform key creates the tenant and the IdP key', async () => {
    const lines: string[] = [];
    const code = await runDemo({ out: (l) => lines.push(l), natsUrl: testEnv.natsUrl, tenantId: uniqueTenant('demo-auth'), platformKey });
    assert.equal(code, 0, lines.join('\n'));
    assert.ok(lines.some((l) => l.includes('mfa.v1.clients.create')));
    assert.ok(lines.some((l) => /MFA successfully completed/.test(l)), lines.join('\n'));
  });

  itWith({ real: wholeStack }, 'answers forbidden to garbage, repeated, oversized and non-ASCII Authorization headers, and keeps serving', async () => {
    const body = JSON.stringify({ tenantId: tenantA, challengeId });
    const variants: Array<Array<[string, string]>> = [
      [['Authorization', 'Basic dXNlcjpwYXNz']],
      [['Authorization', 'Bearer']],
      [['Authorization', `Bearer ${'x'.repeat(8_000)}`]],
      [['Authorization', `Bearer ${keys.all}`], ['Authorization', `Bearer ${keys.all}`]],
      [['Authorization', `Bearer ${keys.all!.slice(0, -1)}é`]],
      [['Authorization', `bearer  ${keys.all}`]],
      [['Authorization', `Bearer ${keys.all}\u0000`]],
    ];
    for (const variant of variants) {
      const h = natsHeaders();
      for (const [k, v] of variant) h.append(k, v);
      let reply: Reply;
      try {
        reply = (await nc.request(Subjects.challengeStatus, body, { timeout: 10_000, headers: h })).json<Reply>();
      } catch (error) {
        // nats.js itself refuses some header values (e.g. NUL): nothing reached a service.
        assert.match(String(error), /header|invalid/i);
        continue;
      }
      assert.equal(reply.error?.code, 'forbidden', JSON.stringify(variant).slice(0, 120));
    }
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenantA, challengeId }, keys.all)).status, 'pending');
    // Scopes spelled wrong in clients.create are refused by name.
    const misspelled = await ask(Subjects.clientsCreate, { tenantId: tenantA, name: 'x', scopes: ['challenge'] }, keys.admin);
    assert.equal(misspelled.error?.code, 'invalid_request');
    assert.match(misspelled.error!.message, /scopes/);
    // No key, secret or key hash ever reaches a log line.
    const secrets = [platformKey, ...Object.values(keys).map((k) => k.split('.')[2]!)];
    for (const line of logLines) for (const secret of secrets) assert.ok(!line.includes(secret), 'a key reached the logs');
  });
});
