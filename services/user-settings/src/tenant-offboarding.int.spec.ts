import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { Objm } from '@nats-io/obj';
import {
  EventSubjects,
  IMPORTS_BUCKET,
  parseEvent,
  Streams,
  Subjects,
  VoiceMessageBuckets,
  type ClientsCreateReply,
  type ErrorReply,
  type OathImportStatusReply,
  type TenantsDeleteReply,
  type TotpEnrollReply,
  type UsersGetReply,
} from '@mfa/contracts';
import { base32Decode, totp, userTag, type Keyring } from '@mfa/crypto';
import { connectNats, EventPublisher, requestJson, type NatsClients } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { ApiClientDirectory, runService, UserDataKeys, type RunningService } from '@mfa/service-kit';
import { createLogger, registry } from '@mfa/telemetry';
import { eventually, itWith, startNatsServer, testEnv, uniqueTenant, type NatsServerProcess } from '@mfa/testing';
import { AppModule } from './app.module.js';
import { loadUserSettingsConfig, userSettingsConsumers } from './config.js';
import { TenantOffboarding } from './application/tenant-offboarding.js';
import { ImportJobs, jobKey, type ImportJob } from './adapters/import-jobs.js';
import { ApiClientsService } from './application/api-clients.service.js';
import { IMPORT_BATCH, TENANT_DELETED } from './application/oath-import.service.js';
import { OathTokensService } from './application/oath-tokens.service.js';
import { UserSettingsService } from './application/user-settings.service.js';

/**
 * tenants.delete end to end in user-settings, as the platform operator sees it (MFA_AUTH=required):
 * the tenant unknown at once and its keys revoked, then the offboarding consumer erases its users,
 * hardware tokens, recordings and import files, and records TenantErased; another tenant keeps
 * everything; the id can be created again as a new, empty tenant. A nats-server of the test's own
 * (its streams' exact contents are checked) and a Redis database of its own (10).
 */
const DB = 10;
const PLATFORM_KEY = 'tenant-offboarding-platform-key-0123456789abcdef';
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
  const log = createLogger('tenant-offboarding-test', { level: 'error' });
  // The consumer options boot gives (the offboarding's concurrency, TENANT_OFFBOARDING_CONCURRENCY).
  service = await runService({ name: 'user-settings', module: AppModule.forRoot(config, log), config, log, consumers: userSettingsConsumers(config) });
  nats = await connectNats({ url: server.url, name: 'tenant-offboarding-int-test', connectTimeoutMs: 5_000 });
  redis = new Redis(testEnv.redisUrl, { db: DB });
});

after(async () => {
  await service?.stop();
  await nats?.nc.drain();
  await server?.stop();
  redis?.disconnect();
});

const ask = <T = Record<string, unknown>>(subject: string, body: unknown, key = PLATFORM_KEY) =>
  requestJson<T & ErrorReply>(nats.nc, subject, body, { timeoutMs: 15_000, headers: { Authorization: `Bearer ${key}` } });

async function expectCode(subject: string, body: unknown, code: string, key = PLATFORM_KEY): Promise<void> {
  const reply = await ask(subject, body, key);
  assert.equal(reply.error?.code, code, `${subject} ${JSON.stringify(body).slice(0, 120)} -> ${JSON.stringify(reply).slice(0, 300)}`);
}

/** The last event of each subject the filter matches. */
async function lastEvents(filter: string): Promise<Map<string, string>> {
  const info = await nats.jsm.streams.info(Streams.userSettings.name, { subjects_filter: filter });
  const out = new Map<string, string>();
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    const msg = await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: subject });
    out.set(subject, parseEvent(msg!.json()).type);
  }
  return out;
}

/** A tenant with what an IdP and its operators leave: users with methods, an app password, API clients, a hardware token, a recording, an import file. */
async function populated(tenantId: string) {
  assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { appPasswords: { allowed: true } } })).error, undefined);
  const admin = await ask<ClientsCreateReply>(Subjects.clientsCreate, { tenantId, name: 'admin', scopes: ['admin', 'challenges'] });
  assert.equal(admin.error, undefined, JSON.stringify(admin));
  const users = ['anna@contoso.example', 'bertil@contoso.example', 'cecilia@contoso.example'];
  assert.equal((await ask(Subjects.usersRegister, { tenantId, userId: users[0], displayName: 'Anna Ek', phoneNumber: '+14155550171' }, admin.apiKey)).error, undefined);
  const enrolled = await ask<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId: users[0] }, admin.apiKey);
  assert.equal((await ask(Subjects.totpActivate, { tenantId, userId: users[0], tokenId: enrolled.tokenId, code: totp(base32Decode(enrolled.secret), Date.now()) }, admin.apiKey)).active, true);
  assert.equal((await ask(Subjects.usersRegister, { tenantId, userId: users[1] }, admin.apiKey)).error, undefined);
  assert.equal((await ask(Subjects.usersAppPasswordsCreate, { tenantId, userId: users[1], name: 'Outlook' }, admin.apiKey)).error, undefined);
  assert.equal((await ask(Subjects.usersRegister, { tenantId, userId: users[2], displayName: 'Cecilia' }, admin.apiKey)).error, undefined);
  // A hardware token, assigned to Cecilia.
  const csv = `upn,serial number,secret key,time interval,manufacturer,model\n,${tenantId}-HW1,${SECRET},30,Acme,K1\n`;
  const { jobId } = await ask<{ jobId: string }>(Subjects.oathImport, { tenantId, format: 'csv', content: csv }, admin.apiKey);
  await eventually(async () => ((await ask<OathImportStatusReply>(Subjects.oathImportStatus, { tenantId, jobId }, admin.apiKey)).state === 'completed' ? true : undefined), 30_000, 'the import');
  assert.equal((await ask(Subjects.oathTokensAssign, { tenantId, serialNumber: `${tenantId}-HW1`, userId: users[2] }, admin.apiKey)).error, undefined);
  // A recording (as dispatch stores it) and an upload waiting for an import.
  const objm = new Objm(nats.js);
  const recordings = await objm.create(VoiceMessageBuckets.messages).catch(() => objm.open(VoiceMessageBuckets.messages));
  await recordings.putBlob({ name: `${tenantId}/greeting/en` }, new Uint8Array([1, 2, 3]));
  const imports = await objm.open(IMPORTS_BUCKET);
  await imports.putBlob({ name: `${tenantId}/console-upload` }, new TextEncoder().encode(csv));
  return { admin, users };
}

describe('tenants.delete: offboarding a tenant (MFA_AUTH=required)', () => {
  const gone = uniqueTenant('offboard');
  const kept = uniqueTenant('kept');
  let goneOf: Awaited<ReturnType<typeof populated>>;
  let keptOf: Awaited<ReturnType<typeof populated>>;

  before(async () => {
    goneOf = await populated(gone);
    keptOf = await populated(kept);
  });

  itWith({ real: ['nats', 'redis'] }, "a tenant's own admin key cannot delete it; an unknown tenant is not_found", async () => {
    await expectCode(Subjects.tenantsDelete, { tenantId: gone }, 'forbidden', goneOf.admin.apiKey);
    await expectCode(Subjects.tenantsDelete, { tenantId: uniqueTenant('never') }, 'not_found');
    assert.equal((await ask(Subjects.tenantsGet, { tenantId: gone })).error, undefined, 'still there');
  });

  itWith({ real: ['nats', 'redis'] }, 'deleted: unknown at once, its keys revoked; then every user erased, its token, recording and import file gone, TenantErased; the other tenant keeps everything; the id is created again empty', async () => {
    const first = await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId: gone });
    assert.equal(first.error, undefined, JSON.stringify(first));
    assert.equal(first.tenantId, gone);
    assert.ok(['deleting', 'deleted'].includes(first.state));
    // At once: the tenant is unknown, its key is revoked (refused by every instance's directory).
    await expectCode(Subjects.tenantsGet, { tenantId: gone }, 'not_found');
    await expectCode(Subjects.usersGet, { tenantId: gone, userId: goneOf.users[0] }, 'not_found');
    assert.ok(service.app.get(ApiClientDirectory).get(goneOf.admin.clientId)?.revokedAt, 'the key is revoked');
    assert.equal((await ask(Subjects.usersGet, { tenantId: gone, userId: goneOf.users[0] }, goneOf.admin.apiKey)).error?.code, 'forbidden', 'the revoked key is refused');

    const done = await eventually(
      async () => {
        const reply = await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId: gone });
        return reply.state === 'deleted' ? reply : undefined;
      },
      30_000,
      'the offboarding to finish',
    );
    assert.deepEqual(done.erased, { users: 3, hardwareTokens: 1, recordings: 1, clients: 1 });
    assert.equal(done.deletedAt, first.deletedAt);
    assert.ok(done.erasedAt && done.erasedAt >= done.deletedAt);
    // The log: each user ends erased, the tenant with TenantErased, no token events left.
    const tenantToken = EventSubjects.tenant(gone).split('.').at(-1)!;
    assert.deepEqual([...(await lastEvents(`mfa.evt.user.${tenantToken}.*`)).values()], ['UserErased', 'UserErased', 'UserErased']);
    assert.deepEqual([...(await lastEvents(EventSubjects.tenant(gone))).values()], ['TenantErased']);
    assert.deepEqual([...(await lastEvents(`mfa.evt.oath.${tenantToken}.*`)).keys()], [], 'the hardware token events (its secret) purged');
    // Keys destroyed, projections reduced to tombstones, the inventory dropped, the objects gone.
    const keys = service.app.get(UserDataKeys);
    for (const userId of goneOf.users) {
      assert.equal(await keys.get(gone, userId, 1), 'erased', `${userId}'s data key`);
      assert.deepEqual(Object.keys(await redis.hgetall(RedisKeys.user(userTag(keyring, gone, userId)))), ['seq'], `${userId}'s projection is a tombstone`);
    }
    assert.deepEqual(await redis.keys(`mfa:{oath:${gone}}:*`), []);
    const objm = new Objm(nats.js);
    const names = async (bucket: string) => (await (await objm.open(bucket)).list()).filter((o) => !o.deleted).map((o) => o.name);
    assert.ok(!(await names(VoiceMessageBuckets.messages)).some((n) => n.startsWith(`${gone}/`)), 'the recording is gone');
    assert.ok(!(await names(IMPORTS_BUCKET)).some((n) => n.startsWith(`${gone}/`)), 'the import file is gone');

    // The other tenant: untouched.
    const anna = await ask<UsersGetReply>(Subjects.usersGet, { tenantId: kept, userId: keptOf.users[0] }, keptOf.admin.apiKey);
    assert.deepEqual([anna.error, anna.displayName, anna.methods], [undefined, 'Anna Ek', ['totp', 'sms', 'voice']]);
    assert.ok((await names(VoiceMessageBuckets.messages)).includes(`${kept}/greeting/en`));
    assert.ok((await names(IMPORTS_BUCKET)).includes(`${kept}/console-upload`));
    assert.equal((await ask(Subjects.oathTokensActivate, { tenantId: kept, serialNumber: `${kept}-HW1`, code: totp(base32Decode(SECRET), Date.now()) }, keptOf.admin.apiKey)).error, undefined);

    // Sent again: the same answer, nothing more done.
    assert.deepEqual(await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId: gone }), done);
    // Created again: a new tenant, with nothing of the old one; its old users register as new users.
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: gone, settings: {} })).error, undefined);
    await expectCode(Subjects.usersGet, { tenantId: gone, userId: goneOf.users[0] }, 'not_found');
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId: gone, userId: goneOf.users[0] }), { userId: goneOf.users[0], methods: [] });
    // The old TenantDeleted delivered again (a replay): the tenant is not being deleted, nothing is done.
    const offboarding = service.app.get(TenantOffboarding);
    assert.equal(await offboarding.offboard(gone, () => new Date(), () => undefined), undefined);
    assert.equal(await offboarding.offboard(uniqueTenant('never'), () => new Date(), () => undefined), undefined, 'nor for a tenant that never existed');
    assert.equal((await ask(Subjects.usersGet, { tenantId: gone, userId: goneOf.users[0] })).error, undefined, 'the new user stays');
  });
});

describe('tenants.delete: an offboarding resumed after an attempt that failed midway', () => {
  /** What mfa_tenant_offboarding_erased_total counted so far, by `what`. */
  const erasedTotals = async (): Promise<Record<string, number>> =>
    Object.fromEntries(((await registry.getSingleMetric('mfa_tenant_offboarding_erased_total')?.get())?.values ?? []).map((v) => [String(v.labels.what), v.value]));

  itWith({ real: ['nats', 'redis'] }, 'TenantErased and the metric count the hardware token and the recording the failed attempt purged', async () => {
    const tenantId = uniqueTenant('resumed');
    await populated(tenantId);
    const tenantToken = EventSubjects.tenant(tenantId).split('.').at(-1)!;
    const recordingsOf = async () => (await (await new Objm(nats.js).open(VoiceMessageBuckets.messages)).list()).filter((o) => !o.deleted && o.name.startsWith(`${tenantId}/`));
    // The import file, deleted by the last step, is refused until the test lets it go: the first
    // attempt fails there, after it purged the token's events and the recording.
    const jobs = service.app.get(ImportJobs);
    const deleteObject = jobs.deleteObject.bind(jobs);
    let failing = true;
    let refused = 0;
    jobs.deleteObject = async (name: string) => {
      if (failing && name.startsWith(`${tenantId}/`)) {
        refused++;
        return false;
      }
      return deleteObject(name);
    };
    const before = await erasedTotals();
    try {
      assert.equal((await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId })).error, undefined);
      await eventually(async () => (refused > 0 ? true : undefined), 30_000, 'the first attempt to fail at its last step');
      assert.deepEqual([...(await lastEvents(`mfa.evt.oath.${tenantToken}.*`)).keys()], [], 'the failed attempt purged the token’s events');
      assert.deepEqual(await recordingsOf(), [], 'and deleted the recording');
      assert.equal((await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId })).state, 'deleting');
    } finally {
      failing = false;
      jobs.deleteObject = deleteObject;
    }
    const done = await eventually(
      async () => {
        const reply = await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId });
        return reply.state === 'deleted' ? reply : undefined;
      },
      30_000,
      'the resumed offboarding to finish',
    );
    assert.ok(refused >= 1);
    assert.deepEqual(done.erased, { users: 3, hardwareTokens: 1, recordings: 1, clients: 1 });
    const after = await erasedTotals();
    const added = Object.fromEntries(['users', 'hardwareTokens', 'recordings', 'clients'].map((what) => [what, (after[what] ?? 0) - (before[what] ?? 0)]));
    assert.deepEqual(added, { users: 3, hardwareTokens: 1, recordings: 1, clients: 1 }, 'the metric counts the same');
    const census = await nats.jsm.streams.getMessage(Streams.state.name, { last_by_subj: `mfa.state.offboarding.${tenantToken}` }).catch(() => null);
    assert.equal(census, null, 'the census is removed once TenantErased holds the counts');
  });
});

describe('tenants.delete: the clients an offboarding counts', () => {
  itWith({ real: ['nats', 'redis'] }, 'a client tenants.delete revoked first is counted also by an instance whose directory had not folded that revocation in yet', async () => {
    const tenantId = uniqueTenant('raced-revoke');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} })).error, undefined);
    const client = await ask<ClientsCreateReply>(Subjects.clientsCreate, { tenantId, name: 'idp', scopes: ['challenges'] });
    assert.equal(client.error, undefined, JSON.stringify(client));
    const directory = service.app.get(ApiClientDirectory);
    const before = directory.get(client.clientId)!;
    const deletedAt = new Date().toISOString();
    // tenants.delete's own revocation (another instance's): appended, and folded in here.
    await service.app.get(ApiClientsService).revoke({ tenantId, clientId: client.clientId }, new Date());
    assert.ok(directory.get(client.clientId)?.revokedAt);
    // The offboarding's instance: its directory still shows the client as it was before, until it
    // is asked to catch up (a directory a moment behind the log).
    let behind = true;
    const lagging = new Proxy(directory, {
      get(target, prop) {
        const stale = <T>(fresh: T): T | typeof before => (behind ? before : fresh);
        if (prop === 'get') return (id: string) => (id === client.clientId ? stale(target.get(id)) : target.get(id));
        if (prop === 'find') return async (id: string) => (id === client.clientId ? stale(await target.find(id)) : target.find(id));
        if (prop === 'list') return (tenant: string) => target.list(tenant).map((c) => (c.clientId === client.clientId ? stale(c) : c));
        if (prop === 'caughtUpTo')
          return async (seq: number) => {
            behind = false;
            await target.caughtUpTo(seq);
          };
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const clients = new ApiClientsService({
      publisher: service.app.get(EventPublisher),
      directory: lagging,
      keyring,
      log: createLogger('tenant-offboarding-test', { level: 'error' }),
      requireTenant: async () => undefined,
    });
    assert.equal(await clients.revokeAllOf(tenantId, deletedAt, new Date()), 1, 'the revocation tenants.delete made is counted');
  });
});

describe('tenants.delete: several tenants offboarded at once', () => {
  /** A tenant with an admin client and `count` users (registered a few dozen at a time). */
  async function tenantWithUsers(tenantId: string, count: number): Promise<void> {
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} })).error, undefined);
    const admin = await ask<ClientsCreateReply>(Subjects.clientsCreate, { tenantId, name: 'admin', scopes: ['admin'] });
    assert.equal(admin.error, undefined, JSON.stringify(admin));
    const userIds = Array.from({ length: count }, (_, i) => `user-${i}@${tenantId}.example`);
    for (let i = 0; i < userIds.length; i += 50) {
      const replies = await Promise.all(userIds.slice(i, i + 50).map((userId) => ask(Subjects.usersRegister, { tenantId, userId }, admin.apiKey)));
      assert.deepEqual(replies.filter((r) => r.error), []);
    }
  }

  /** The stream sequence of the tenant's last event, which must be TenantErased. */
  async function erasedAt(tenantId: string): Promise<number> {
    const msg = await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) });
    assert.equal(parseEvent(msg!.json()).type, 'TenantErased', tenantId);
    return msg!.seq;
  }

  const deleted = (tenantId: string) =>
    eventually(
      async () => {
        const reply = await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId });
        return reply.state === 'deleted' ? reply : undefined;
      },
      60_000,
      `the offboarding of ${tenantId}`,
    );

  itWith({ real: ['nats', 'redis'] }, 'a small tenant deleted right after a large one is erased while the large one’s offboarding runs: its TenantErased comes first in the log', async () => {
    const large = uniqueTenant('large');
    const small = uniqueTenant('small');
    await tenantWithUsers(large, 200);
    await tenantWithUsers(small, 1);
    // The large tenant's offboarding outlasts the small one's whatever the machine's speed: each of
    // its erasures waits until the small tenant's TenantErased is recorded, or 20 s at most (one
    // offboarding at a time: the small tenant's waits behind, and the test fails instead of hanging).
    const users = service.app.get(UserSettingsService);
    const { eraseOffboarded, recordTenantErased } = users;
    let smallErased!: () => void;
    const smallDone = new Promise<void>((resolve) => (smallErased = resolve));
    const held = new Promise<void>((resolve) => setTimeout(resolve, 20_000).unref());
    users.eraseOffboarded = async (tenantId, userId, now) => {
      if (tenantId === large) await Promise.race([smallDone, held]);
      return eraseOffboarded.call(users, tenantId, userId, now);
    };
    users.recordTenantErased = async (tenantId, erased, now) => {
      const reply = await recordTenantErased.call(users, tenantId, erased, now);
      if (tenantId === small) smallErased();
      return reply;
    };
    try {
      assert.equal((await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId: large })).error, undefined);
      assert.equal((await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId: small })).error, undefined);
      const [largeDone, smallReply] = await Promise.all([deleted(large), deleted(small)]);
      assert.equal(largeDone.erased?.users, 200);
      assert.equal(smallReply.erased?.users, 1);
    } finally {
      users.eraseOffboarded = eraseOffboarded;
      users.recordTenantErased = recordTenantErased;
    }
    const [smallSeq, largeSeq] = [await erasedAt(small), await erasedAt(large)];
    assert.ok(smallSeq < largeSeq, `the small tenant’s TenantErased (seq ${smallSeq}) is recorded before the large one’s (seq ${largeSeq})`);
  });

  itWith({ real: ['nats', 'redis'] }, 'a second offboarding of the same tenant on an instance waits for the one running, then finds it done', async () => {
    const tenantId = uniqueTenant('once');
    await tenantWithUsers(tenantId, 2);
    const users = service.app.get(UserSettingsService);
    const { tenantDeletion, eraseOffboarded, recordTenantErased } = users;
    const calls: string[] = [];
    let erasing!: () => void;
    const started = new Promise<void>((resolve) => (erasing = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    users.tenantDeletion = (id, now) => {
      if (id === tenantId) calls.push('tenantDeletion');
      return tenantDeletion.call(users, id, now);
    };
    // The consumer's run is held at its erasures until the second offboarding has been called.
    users.eraseOffboarded = async (id, userId, now) => {
      if (id === tenantId) {
        calls.push('eraseOffboarded');
        erasing();
        await released;
      }
      return eraseOffboarded.call(users, id, userId, now);
    };
    users.recordTenantErased = async (id, erased, now) => {
      const reply = await recordTenantErased.call(users, id, erased, now);
      if (id === tenantId) calls.push('recordTenantErased');
      return reply;
    };
    try {
      assert.equal((await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId })).error, undefined);
      await started;
      const second = service.app.get(TenantOffboarding).offboard(tenantId, () => new Date(), () => undefined);
      release();
      assert.deepEqual(await second, { users: 2, hardwareTokens: 0, recordings: 0, clients: 1 }, 'the counts TenantErased holds');
    } finally {
      users.tenantDeletion = tenantDeletion;
      users.eraseOffboarded = eraseOffboarded;
      users.recordTenantErased = recordTenantErased;
    }
    assert.deepEqual(calls, ['tenantDeletion', 'eraseOffboarded', 'eraseOffboarded', 'recordTenantErased', 'tenantDeletion'], 'the second read the deletion only once the first had recorded TenantErased');
  });
});

describe('tenants.delete: an import job running when its tenant is deleted', () => {
  itWith({ real: ['nats', 'redis'] }, 'the offboarding ends the job (the tenant was deleted) and waits for its batch under way: no token event of the tenant is left, its file and its job’s record are gone, its tokens are counted once', async () => {
    const tenantId = uniqueTenant('importing');
    const tenantToken = EventSubjects.tenant(tenantId).split('.').at(-1)!;
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} })).error, undefined);
    const admin = await ask<ClientsCreateReply>(Subjects.clientsCreate, { tenantId, name: 'admin', scopes: ['admin'] });
    assert.equal(admin.error, undefined, JSON.stringify(admin));
    // Two batches; the second is held in the middle of its rows until the deletion is under way.
    const csv = ['upn,serial number,secret key,time interval', ...Array.from({ length: IMPORT_BATCH + 100 }, (_, i) => `,${tenantId}-HW${i},${SECRET},30`)].join('\n') + '\n';
    const tokens = service.app.get(OathTokensService);
    const { importToken } = tokens;
    let calls = 0;
    let imported = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    tokens.importToken = async (job, parsed, now) => {
      if (job.tenantId !== tenantId) return importToken.call(tokens, job, parsed, now);
      if (++calls > IMPORT_BATCH) await released;
      const outcome = await importToken.call(tokens, job, parsed, now);
      if (outcome.imported) imported++;
      return outcome;
    };
    const jobs = service.app.get(ImportJobs);
    // Every version of every job record, as written (undefined: removed), to read this job's history.
    const written: Array<[string, ImportJob | undefined]> = [];
    const following = await jobs.follow((key, stored) => written.push([key, stored?.job]));
    try {
      const { jobId } = await ask<{ jobId: string }>(Subjects.oathImport, { tenantId, format: 'csv', content: csv }, admin.apiKey);
      assert.ok(jobId);
      await eventually(async () => (calls > IMPORT_BATCH ? true : undefined), 30_000, 'the second batch to start');
      assert.equal((await ask(Subjects.tenantsDelete, { tenantId })).error, undefined);
      // The held rows go on once the offboarding has ended the job (or, were it not to, once it is done).
      await eventually(
        async () => {
          if ((await jobs.get(tenantId, jobId))?.job.state === 'failed') return true;
          return (await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId })).state === 'deleted' ? true : undefined;
        },
        30_000,
        'the offboarding to end the job',
      );
      release();
      const done = await eventually(
        async () => {
          const reply = await ask<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId });
          return reply.state === 'deleted' ? reply : undefined;
        },
        60_000,
        'the offboarding to finish',
      );
      assert.deepEqual([...(await lastEvents(`mfa.evt.oath.${tenantToken}.*`)).keys()], [], 'no hardware token event (no sealed secret) of the tenant is left');
      // The record's last version, then its removal (the offboarding's step 4): ended, its worker
      // having said it stopped, no key material.
      const history = await eventually(
        async () => {
          const ofJob = written.filter(([key]) => key === jobKey(tenantId, jobId)).map(([, job]) => job);
          return ofJob.at(-1) === undefined && ofJob.length >= 2 ? ofJob : undefined;
        },
        30_000,
        'the job’s record to be removed',
      );
      const job = history.at(-2)!;
      assert.deepEqual([job.state, job.error], ['failed', TENANT_DELETED]);
      assert.equal(job.lease, undefined, 'its worker said it stopped');
      assert.equal(job.sealedKeys, undefined);
      assert.equal(await jobs.get(tenantId, jobId), undefined, 'its record is gone');
      assert.deepEqual(await jobs.ofTenant(tenantId), [], 'no job record of the tenant is left');
      assert.ok(imported > IMPORT_BATCH, `${imported} tokens imported: the held rows were written after the deletion`);
      assert.equal(done.erased?.hardwareTokens, imported, 'every token imported counted once');
      const files = (await (await new Objm(nats.js).open(IMPORTS_BUCKET)).list()).filter((o) => !o.deleted && o.name.startsWith(`${tenantId}/`));
      assert.deepEqual(files, [], 'its file is gone');
    } finally {
      following.stop();
      release();
      tokens.importToken = importToken;
    }
  });
});
