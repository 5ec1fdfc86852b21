import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { Subjects, type ClientsCreateReply, type ClientsListReply, type ErrorReply, type OathImportStatusReply, type OathTokensListReply, type UsersGetReply } from '@mfa/contracts';
import { userTag, type Keyring } from '@mfa/crypto';
import { connectNats, requestJson, type NatsClients } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { runService, type RunningService } from '@mfa/service-kit';
import { createLogger, registry } from '@mfa/telemetry';
import { eventually, itWith, startNatsServer, testEnv, uniqueTenant, type NatsServerProcess } from '@mfa/testing';
import { AppModule } from './app.module.js';
import { loadUserSettingsConfig } from './config.js';

/**
 * Tenant isolation of the user-settings subjects that name an object by an id of its own (an API
 * client, an import job, a hardware token's serial, a user's token, app password or remembered
 * browser), as a caller sees it: MFA_AUTH=required, each tenant with its own admin key. Another
 * tenant's id, sent with one's own tenantId (which the key allows), must find nothing and change
 * nothing; the same user id in two tenants is two users. A nats-server of the test's own (the
 * service answers with MFA_AUTH=required, which the shared server's other instances do not) and a
 * Redis database of its own (11).
 */
const DB = 11;
const PLATFORM_KEY = 'tenant-isolation-platform-key-0123456789abcdef';
const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

let server: NatsServerProcess;
let service: RunningService;
let nats: NatsClients;
let redis: Redis;
let keyring: Keyring;

before(async () => {
  server = await startNatsServer();
  const config = loadUserSettingsConfig({
    ...process.env,
    HTTP_PORT: '0',
    NATS_URL: server.url,
    REDIS_URL: `${testEnv.redisUrl.replace(/\/\d*$/, '')}/${DB}`,
    MFA_AUTH: 'required',
    MFA_PLATFORM_API_KEY: PLATFORM_KEY,
  });
  keyring = config.keyring;
  const log = createLogger('tenant-isolation-test', { level: 'error' });
  service = await runService({ name: 'user-settings', module: AppModule.forRoot(config, log), config, log });
  nats = await connectNats({ url: server.url, name: 'tenant-isolation-int-test', connectTimeoutMs: 5_000 });
  redis = new Redis(testEnv.redisUrl, { db: DB });
});

after(async () => {
  await service?.stop();
  await nats?.nc.drain();
  await server?.stop();
  redis?.disconnect();
});

const ask = <T = Record<string, unknown> & ErrorReply>(subject: string, body: unknown, key: string) =>
  requestJson<T & ErrorReply>(nats.nc, subject, body, { timeoutMs: 15_000, headers: { Authorization: `Bearer ${key}` } });

async function expectCode(subject: string, body: unknown, key: string, code: string): Promise<void> {
  const reply = await ask(subject, body, key);
  assert.equal(reply.error?.code, code, `${subject} ${JSON.stringify(body).slice(0, 120)} -> ${JSON.stringify(reply).slice(0, 300)}`);
}

describe('tenant isolation of object ids (MFA_AUTH=required)', () => {
  const tenantA = uniqueTenant('iso-a');
  const tenantB = uniqueTenant('iso-b');
  /** The same user id in both tenants: two users that share nothing. */
  const alice = 'alice@contoso.example';
  const keys: Record<string, string> = {};
  let clientOfA: ClientsCreateReply & ErrorReply;

  before(async () => {
    for (const tenantId of [tenantA, tenantB]) {
      assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { appPasswords: { allowed: true } } }, PLATFORM_KEY)).error, undefined);
      const admin = await ask<ClientsCreateReply>(Subjects.clientsCreate, { tenantId, name: 'admin', scopes: ['admin', 'challenges'] }, PLATFORM_KEY);
      assert.equal(admin.error, undefined, JSON.stringify(admin));
      keys[tenantId] = admin.apiKey;
      assert.equal((await ask(Subjects.usersRegister, { tenantId, userId: alice, phoneNumber: '+14155550170' }, keys[tenantId]!)).error, undefined);
    }
    clientOfA = await ask<ClientsCreateReply>(Subjects.clientsCreate, { tenantId: tenantA, name: 'users of A', scopes: ['users'] }, keys[tenantA]!);
    assert.equal(clientOfA.error, undefined);
  });

  itWith({ real: ['nats', 'redis'] }, "clients.revoke of another tenant's client: not_found, and the client stays good", async () => {
    await expectCode(Subjects.clientsRevoke, { tenantId: tenantB, clientId: clientOfA.clientId }, keys[tenantB]!, 'not_found');
    // Named with its own tenant, B's key is refused before anything is looked up.
    await expectCode(Subjects.clientsRevoke, { tenantId: tenantA, clientId: clientOfA.clientId }, keys[tenantB]!, 'forbidden');
    // A client id is a subject token of the event log: wildcards name no client, and are not even
    // looked up (no read of `mfa.evt.client.>`, no share of the lookup budget all tenants use).
    const lookups = async () => ((await registry.getSingleMetric('mfa_api_client_lookups_total')?.get())?.values ?? []).reduce((sum, v) => sum + v.value, 0);
    const before = await lookups();
    for (const clientId of ['>', '*', `${clientOfA.clientId}.x`, 'a.b.c.d.e.f.g.h.', '*'.repeat(16)]) await expectCode(Subjects.clientsRevoke, { tenantId: tenantB, clientId }, keys[tenantB]!, 'not_found');
    assert.equal(await lookups(), before, 'no lookup for an id no key could carry');
    const listed = await ask<ClientsListReply>(Subjects.clientsList, { tenantId: tenantA }, keys[tenantA]!);
    assert.equal(listed.items.find((c) => c.clientId === clientOfA.clientId)?.revokedAt, undefined, 'not revoked');
    assert.ok(!(await ask<ClientsListReply>(Subjects.clientsList, { tenantId: tenantB }, keys[tenantB]!)).items.some((c) => c.clientId === clientOfA.clientId), 'not listed in B');
    // The key still works for its own tenant.
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantA, userId: alice }, clientOfA.apiKey)).error, undefined);
  });

  itWith({ real: ['nats', 'redis'] }, "users.tokens.delete with another tenant's token id of the same user id: not_found, the token stays", async () => {
    const enrolled = await ask<{ tokenId: string }>(Subjects.totpEnroll, { tenantId: tenantA, userId: alice }, keys[tenantA]!);
    assert.equal(enrolled.error, undefined);
    await expectCode(Subjects.usersTokensDelete, { tenantId: tenantB, userId: alice, tokenId: enrolled.tokenId }, keys[tenantB]!, 'not_found');
    await expectCode(Subjects.totpActivate, { tenantId: tenantB, userId: alice, tokenId: enrolled.tokenId, code: '123456' }, keys[tenantB]!, 'not_found');
    const a = await ask<UsersGetReply>(Subjects.usersGet, { tenantId: tenantA, userId: alice }, keys[tenantA]!);
    assert.ok(a.tokens.some((t) => t.tokenId === enrolled.tokenId), "A's token is still there");
    const b = await ask<UsersGetReply>(Subjects.usersGet, { tenantId: tenantB, userId: alice }, keys[tenantB]!);
    assert.deepEqual(b.tokens, [], "B's alice has no token");
  });

  itWith({ real: ['nats', 'redis'] }, "users.apppasswords.delete with another tenant's app password id: not_found, the password stays", async () => {
    const created = await ask<{ appPasswordId: string; password: string }>(Subjects.usersAppPasswordsCreate, { tenantId: tenantA, userId: alice }, keys[tenantA]!);
    assert.equal(created.error, undefined, JSON.stringify(created));
    await expectCode(Subjects.usersAppPasswordsDelete, { tenantId: tenantB, userId: alice, appPasswordId: created.appPasswordId }, keys[tenantB]!, 'not_found');
    // B's alice deleting all of hers deletes none of A's alice's.
    assert.equal((await ask<{ deleted: number }>(Subjects.usersAppPasswordsDelete, { tenantId: tenantB, userId: alice }, keys[tenantB]!)).deleted, 0);
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId: tenantB, userId: alice, password: created.password }, keys[tenantB]!), { valid: false });
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId: tenantA, userId: alice, password: created.password }, keys[tenantA]!), { valid: true });
  });

  itWith({ real: ['nats', 'redis'] }, "users.remembered.revoke with another tenant's remember id: not_found, the browser stays remembered", async () => {
    // As auth-challenge records an approval that asked to remember the browser.
    const key = RedisKeys.remembered(userTag(keyring, tenantA, alice));
    const now = Date.now();
    await redis.hset(key, 'remembered-in-a', `${now + 86_400_000}:${now}`);
    await expectCode(Subjects.usersRememberedRevoke, { tenantId: tenantB, userId: alice, rememberId: 'remembered-in-a' }, keys[tenantB]!, 'not_found');
    assert.deepEqual(await ask(Subjects.usersRememberedRevoke, { tenantId: tenantB, userId: alice }, keys[tenantB]!), { userId: alice, revoked: 0 });
    assert.ok(await redis.hexists(key, 'remembered-in-a'), 'still remembered in A');
    const a = await ask<UsersGetReply>(Subjects.usersGet, { tenantId: tenantA, userId: alice }, keys[tenantA]!);
    assert.deepEqual(a.rememberedBrowsers.map((b) => b.rememberId), ['remembered-in-a']);
  });

  itWith({ real: ['nats', 'redis'] }, "oath: another tenant's job id, serial number and upload find nothing; the inventory and cursor are the tenant's own", async () => {
    const csv = `upn,serial number,secret key,time interval,manufacturer,model\n,ISO-1,${SECRET},30,Acme,K1\n,ISO-2,${SECRET},30,Acme,K1\n,ISO-3,${SECRET},30,Acme,K1\n`;
    const { jobId } = await ask<{ jobId: string }>(Subjects.oathImport, { tenantId: tenantA, format: 'csv', content: csv }, keys[tenantA]!);
    assert.ok(jobId);
    await eventually(async () => {
      const status = await ask<OathImportStatusReply>(Subjects.oathImportStatus, { tenantId: tenantA, jobId }, keys[tenantA]!);
      return status.state === 'completed' ? status : undefined;
    }, 30_000, "A's import job to complete");
    await expectCode(Subjects.oathImportStatus, { tenantId: tenantB, jobId }, keys[tenantB]!, 'not_found');
    await expectCode(Subjects.oathTokensAssign, { tenantId: tenantB, serialNumber: 'ISO-1', userId: alice }, keys[tenantB]!, 'not_found');
    await expectCode(Subjects.oathTokensActivate, { tenantId: tenantB, serialNumber: 'ISO-1', code: '123456' }, keys[tenantB]!, 'not_found');
    // An upload of A's (its name under A's prefix) is no file of B's.
    await expectCode(Subjects.oathImport, { tenantId: tenantB, format: 'csv', object: `${tenantA}/console-00000000-0000-4000-8000-000000000000` }, keys[tenantB]!, 'invalid_request');
    const listedB = await ask<OathTokensListReply>(Subjects.oathTokensList, { tenantId: tenantB }, keys[tenantB]!);
    assert.deepEqual(listedB.items, [], 'B sees none of A’s tokens');
    const pageA = await ask<OathTokensListReply>(Subjects.oathTokensList, { tenantId: tenantA, limit: 1 }, keys[tenantA]!);
    assert.equal(pageA.items[0]?.state, 'unassigned', "A's token is unassigned still");
    assert.ok(pageA.nextCursor);
    await expectCode(Subjects.oathTokensList, { tenantId: tenantB, limit: 1, cursor: pageA.nextCursor }, keys[tenantB]!, 'invalid_request');
  });

  itWith({ real: ['nats', 'redis'] }, "users.list: another tenant's users and cursors are not the tenant's", async () => {
    for (const n of [1, 2]) assert.equal((await ask(Subjects.usersRegister, { tenantId: tenantA, userId: `listed-${n}@contoso.example` }, keys[tenantA]!)).error, undefined);
    const pageA = await eventually(async () => {
      const page = await ask<{ items: Array<{ userId: string }>; nextCursor?: string }>(Subjects.usersList, { tenantId: tenantA, limit: 1 }, keys[tenantA]!);
      return page.nextCursor ? page : undefined;
    }, 15_000, "a page of A's users with a next cursor");
    await expectCode(Subjects.usersList, { tenantId: tenantB, limit: 1, cursor: pageA.nextCursor }, keys[tenantB]!, 'invalid_request');
    const listedB = await ask<{ items: Array<{ userId: string }> }>(Subjects.usersList, { tenantId: tenantB, limit: 100 }, keys[tenantB]!);
    assert.deepEqual(listedB.items.map((u) => u.userId), [alice], "B lists only its own alice");
  });
});
