import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import type { JsMsg } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams } from '@mfa/contracts';
import { loadKeyring, totp, type Keyring } from '@mfa/crypto';
import { connectNats, ensureStream, EventPublisher, type Delivery, type NatsClients } from '@mfa/messaging';
import { RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { UserDataKeys } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { eventually, itWith, startNatsServer, testEnv, uniqueTenant, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { EventStore } from './adapters/event-store.js';
import { OathInventory } from './adapters/oath-inventory.js';
import { RememberedBrowsers } from './adapters/remembered-browsers.js';
import { SnapshotStore } from './adapters/snapshot-store.js';
import { SNAPSHOT_EVERY, USER_SNAPSHOT_VERSION } from './application/aggregate-loader.js';
import { OathTokensService } from './application/oath-tokens.service.js';
import { UserProjector } from './application/user-projector.js';
import { UserSettingsService } from './application/user-settings.service.js';
import { CLAIM_COMPLETES_WITHIN_MS, CLAIM_TAKEOVER_AFTER_MS, oathTokenDecider } from './domain/oath-token.js';

/**
 * Hardware tokens and what follows a user's loss of something (a token deleted, a reset, an
 * erasure), against a nats-server of the test's own (no durable projector runs there: the test
 * runs the projector's handling itself, so what the commands do and what the projector does are
 * told apart) and the real Redis, in a database of its own (12).
 */
const DB = 12;

let server: NatsServerProcess;
let nats: NatsClients;
let redis: Redis;
let keyring: Keyring;
let store: EventStore;
let keys: UserDataKeys;
let snapshots: SnapshotStore;
let writer: UserProjectionWriter;
let inventory: OathInventory;
let remembered: RememberedBrowsers;
const log = createLogger('hardware-tokens-test', { level: 'error' });

before(async () => {
  server = await startNatsServer();
  nats = await connectNats({ url: server.url, name: 'hardware-tokens-int-test', connectTimeoutMs: 5_000 });
  for (const stream of [Streams.userSettings, Streams.userKeys, Streams.state]) await ensureStream(nats.jsm, stream);
  redis = new Redis(testEnv.redisUrl, { db: DB });
  keyring = loadKeyring({}).keyring;
  writer = new UserProjectionWriter(redis, keyring);
  await writer.markStepsRestored();
  store = new EventStore(nats.jsm, new EventPublisher(nats.js), Streams.userSettings.name, log);
  keys = new UserDataKeys(nats, keyring);
  snapshots = new SnapshotStore(nats.js, nats.jsm);
  inventory = new OathInventory(redis);
  remembered = new RememberedBrowsers(redis);
});

after(async () => {
  await nats?.nc.drain();
  await server?.stop();
  redis?.disconnect();
});

/** A Redis projection that cannot be written (a replica promoted under the client, say). */
class BrokenWriter extends UserProjectionWriter {
  override async apply(): Promise<boolean> {
    throw new Error("READONLY You can't write against a read only replica.");
  }
}

/** Data keys that cannot be destroyed: an erasure stops right after its event. */
class UnerasableKeys extends UserDataKeys {
  override async erase(): Promise<void> {
    throw new Error('crashed before shredding');
  }
}

/**
 * A user-settings instance on the shared adapters. `tokens: false` leaves it without the hardware
 * token service (nothing returns tokens to the inventory for it), `remembered: false` without
 * remembered browsers: a command of it stops where the projector must take over.
 */
function instance(
  options: { projection?: UserProjectionWriter; keys?: UserDataKeys; tokens?: boolean; remembered?: boolean; users?: typeof UserSettingsService } = {},
): { users: UserSettingsService; tokens: OathTokensService } {
  const Users = options.users ?? UserSettingsService;
  const users = new Users({
    store,
    projection: options.projection ?? writer,
    keyring,
    keys: options.keys ?? keys,
    log,
    autoCreateTenants: true,
    totpIssuer: 'Open MFA',
    snapshots,
    ...(options.remembered === false ? {} : { remembered }),
  });
  const tokens = options.tokens === false ? ({} as OathTokensService) : new OathTokensService({ store, users, inventory, keyring, log });
  return { users, tokens };
}

/** A user-settings instance whose giveHardwareToken waits for `gate` (for the users named), or fails. */
function gatedInstance(hold: { users: string[]; gate?: Promise<void>; fail?: Error }) {
  class Gated extends UserSettingsService {
    override async giveHardwareToken(...args: Parameters<UserSettingsService['giveHardwareToken']>): Promise<void> {
      if (hold.users.includes(args[1])) {
        if (hold.fail) throw hold.fail;
        await hold.gate;
      }
      return super.giveHardwareToken(...args);
    }
  }
  return instance({ users: Gated });
}

/** The projector's handling of every event of the user's subject, as the durable consumer hands them over. */
async function project(projector: UserProjector, tenantId: string, userId: string): Promise<void> {
  const subject = EventSubjects.user(tenantId, userId);
  const last = await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: subject });
  const consumer = await nats.js.consumers.get(Streams.userSettings.name, { filter_subjects: subject });
  const deliveries: Delivery[] = [];
  const messages = await consumer.consume();
  for await (const msg of messages as AsyncIterable<JsMsg>) {
    deliveries.push({ event: parseEvent(msg.json()), msg });
    if (msg.seq >= last!.seq) break;
  }
  await messages.close();
  await projector.handle(deliveries);
}

const typesOf = async (subject: string) => (await store.load(subject)).events.map((e) => e.type);

async function tokenState(tenantId: string, serialNumber: string) {
  const { events } = await store.load(EventSubjects.oathToken(tenantId, serialNumber));
  let state = oathTokenDecider.initialState();
  for (const event of events) if (oathTokenDecider.accepts(event)) state = oathTokenDecider.evolve(state, event);
  return state;
}

const secretOf = (serialNumber: string) => Buffer.from(`secret-of-${serialNumber}`.padEnd(20, '.').slice(0, 20));
const row = (serialNumber: string, userId?: string) => ({
  row: 1,
  serialNumber,
  secret: secretOf(serialNumber),
  algorithm: 'SHA1' as const,
  digits: 6 as const,
  period: 30 as const,
  ...(userId !== undefined ? { userId } : {}),
});

describe('what follows a user’s loss, when the command stops half-way', () => {
  const tenantId = uniqueTenant('loss');
  const healthy = () => instance();
  let projector: UserProjector;

  before(async () => {
    const { users } = healthy();
    await users.configureTenant({ tenantId, settings: {} }, new Date(), { mayCreateTenant: true });
    projector = new UserProjector(store, writer, keyring, keys, snapshots);
    projector.onRemovals((t, u, o, now) => users.completeRemovals(t, u, o, now));
  });

  /** A registered user holding hardware token `serial`, with a remembered browser and a last MFA. */
  async function userWithToken(name: string, serials: string[]) {
    const userId = uniqueUser(name);
    const { users, tokens } = healthy();
    await users.register({ tenantId, userId, phoneNumber: '+14155550123' }, new Date());
    for (const serial of serials) assert.deepEqual(await tokens.importToken({ tenantId, jobId: `job-${serial}`, replace: false }, row(serial, userId), new Date()), { imported: true });
    const tag = writer.tagOf(tenantId, userId);
    await redis.hset(RedisKeys.remembered(tag), 'thief-browser', `${Date.now() + 86_400_000}:${Date.now()}`);
    await redis.set(RedisKeys.lastMfa(tag), String(Date.now()));
    return { userId, tag };
  }
  const browsersOf = (tag: string) => redis.exists(RedisKeys.remembered(tag), RedisKeys.lastMfa(tag));

  itWith({ real: ['nats', 'redis'] }, 'a reset whose projection write fails has forgotten the remembered browsers and returned the tokens; a retry completes it', async () => {
    const serial = `SN-R-${Date.now()}`;
    const { userId, tag } = await userWithToken('reset', [serial]);
    const broken = instance({ projection: new BrokenWriter(redis, keyring) });
    await assert.rejects(broken.users.reset({ tenantId, userId }, new Date()), { code: 'unavailable' });
    assert.equal(await browsersOf(tag), 0, 'no browser of the user skips MFA any more');
    assert.equal((await tokenState(tenantId, serial)).userId, undefined, 'the token is back in the inventory');
    assert.equal(await redis.hget(RedisKeys.user(tag), 'methods'), 'sms,voice', 'not projected yet');
    // The retry records nothing new and writes the projection.
    assert.deepEqual(await healthy().users.reset({ tenantId, userId }, new Date()), { userId, reset: true });
    assert.deepEqual((await typesOf(EventSubjects.user(tenantId, userId))).filter((t) => t === 'UserMfaReset'), ['UserMfaReset']);
    assert.equal(await redis.hget(RedisKeys.user(tag), 'methods'), null);
  });

  itWith({ real: ['nats', 'redis'] }, 'a retry that records nothing new (users.tokens.delete finds the token gone; users.reset finds nothing to clear) completes what the first try left', async () => {
    const [first, second] = [`SN-D1-${Date.now()}`, `SN-D2-${Date.now()}`];
    const { userId, tag } = await userWithToken('retry', [first, second]);
    const { tokenId } = await tokenState(tenantId, first);
    // Stopped right after its event: neither the projection, the inventory nor the browsers heard of it.
    const cut = instance({ projection: new BrokenWriter(redis, keyring), tokens: false, remembered: false });
    await assert.rejects(cut.users.deleteToken({ tenantId, userId, tokenId: tokenId! }, new Date()), { code: 'unavailable' });
    assert.equal((await tokenState(tenantId, first)).userId, userId);
    await assert.rejects(healthy().users.deleteToken({ tenantId, userId, tokenId: tokenId! }, new Date()), { code: 'not_found' });
    assert.equal((await tokenState(tenantId, first)).userId, undefined);

    await assert.rejects(cut.users.reset({ tenantId, userId }, new Date()), { code: 'unavailable' });
    assert.deepEqual([(await tokenState(tenantId, second)).userId, await browsersOf(tag)], [userId, 2]);
    assert.deepEqual(await healthy().users.reset({ tenantId, userId }, new Date()), { userId, reset: true });
    assert.deepEqual([(await tokenState(tenantId, second)).userId, await browsersOf(tag)], [undefined, 0]);
    assert.deepEqual((await typesOf(EventSubjects.user(tenantId, userId))).filter((t) => t === 'UserMfaReset'), ['UserMfaReset'], 'the retry recorded nothing');
  });

  itWith({ real: ['nats', 'redis'] }, 'the projector completes a token deletion and a reset their commands stopped after recording', async () => {
    const [first, second] = [`SN-P1-${Date.now()}`, `SN-P2-${Date.now()}`];
    const { userId, tag } = await userWithToken('projector', [first, second]);
    const cut = instance({ projection: new BrokenWriter(redis, keyring), tokens: false, remembered: false });
    const { tokenId } = await tokenState(tenantId, first);
    await assert.rejects(cut.users.deleteToken({ tenantId, userId, tokenId: tokenId! }, new Date()), { code: 'unavailable' });
    await project(projector, tenantId, userId);
    assert.equal((await tokenState(tenantId, first)).userId, undefined, 'the deleted token is back');
    assert.equal((await tokenState(tenantId, second)).userId, userId, 'the other one stays');

    await assert.rejects(cut.users.reset({ tenantId, userId }, new Date()), { code: 'unavailable' });
    assert.equal(await browsersOf(tag), 2, 'the command stopped before forgetting them');
    await project(projector, tenantId, userId);
    assert.equal(await browsersOf(tag), 0, 'forgotten by the projector');
    assert.equal((await tokenState(tenantId, second)).userId, undefined);
    assert.equal(await redis.hget(RedisKeys.user(tag), 'methods'), null, 'the reset projected');
  });

  itWith({ real: ['nats', 'redis'] }, 'the projector, handling a reset long after it (a replay), forgets only the browsers of then, not those remembered since', async () => {
    const { userId, tag } = await userWithToken('replayed', []);
    await redis.del(RedisKeys.remembered(tag));
    const hourAgo = Date.now() - 3_600_000;
    await healthy().users.reset({ tenantId, userId }, new Date(hourAgo));
    // Remembered before the reset, and long after it (registered again, signed in since).
    await redis.hset(RedisKeys.remembered(tag), 'before', `${Date.now() + 86_400_000}:${hourAgo - 60_000}`, 'since', `${Date.now() + 86_400_000}:${Date.now()}`);
    await redis.set(RedisKeys.lastMfa(tag), String(Date.now()));
    await project(projector, tenantId, userId);
    assert.deepEqual(Object.keys(await redis.hgetall(RedisKeys.remembered(tag))), ['since']);
    assert.equal(await redis.exists(RedisKeys.lastMfa(tag)), 1, 'an MFA completed since stays');
  });

  itWith({ real: ['nats', 'redis'] }, 'an erasure removes the user’s snapshot and returns their tokens, also when the projector completes it', async () => {
    for (const completedBy of ['command', 'projector'] as const) {
      const serial = `SN-E-${completedBy}-${Date.now()}`;
      const { userId } = await userWithToken(`erase-${completedBy}`, [serial]);
      const { users } = healthy();
      for (let i = 0; i <= SNAPSHOT_EVERY; i++) await users.register({ tenantId, userId, displayName: `Name ${i}` }, new Date());
      const subject = EventSubjects.user(tenantId, userId);
      assert.ok(await snapshots.get(subject, USER_SNAPSHOT_VERSION), 'a snapshot was written');
      if (completedBy === 'command') {
        assert.deepEqual(await users.delete({ tenantId, userId }, new Date()), { userId, deleted: true });
      } else {
        const cut = instance({ keys: new UnerasableKeys(nats, keyring), tokens: false });
        await assert.rejects(cut.users.delete({ tenantId, userId }, new Date()), { code: 'unavailable' });
        assert.ok(await snapshots.get(subject, USER_SNAPSHOT_VERSION), 'still there after the cut-short command');
        assert.equal((await tokenState(tenantId, serial)).userId, userId);
        await project(projector, tenantId, userId);
      }
      assert.equal(await snapshots.get(subject, USER_SNAPSHOT_VERSION), undefined, `snapshot removed (${completedBy})`);
      assert.equal((await tokenState(tenantId, serial)).userId, undefined, `token returned (${completedBy})`);
      assert.equal((await keys.current(tenantId, userId))?.kind, 'erased');
    }
  });

  itWith({ real: ['nats', 'redis'] }, 'after an erasure, purging the user’s events before UserErased (docs/security.md) leaves the id registrable', async () => {
    const userId = uniqueUser('purged');
    const { users } = healthy();
    await users.register({ tenantId, userId, displayName: 'Old Name' }, new Date());
    await users.delete({ tenantId, userId }, new Date());
    const subject = EventSubjects.user(tenantId, userId);
    const erasure = await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: subject });
    await nats.jsm.streams.purge(Streams.userSettings.name, { filter: subject, seq: erasure!.seq });
    assert.deepEqual(await typesOf(subject), ['UserErased']);
    assert.deepEqual(await users.register({ tenantId, userId, displayName: 'New User' }, new Date()), { userId, methods: [] });
    // The whole subject purged, UserErased with it: the id can never be registered again.
    const other = uniqueUser('purged-all');
    await users.register({ tenantId, userId: other }, new Date());
    await users.delete({ tenantId, userId: other }, new Date());
    await nats.jsm.streams.purge(Streams.userSettings.name, { filter: EventSubjects.user(tenantId, other) });
    await assert.rejects(users.register({ tenantId, userId: other }, new Date()), { code: 'unavailable' });
  });
});

describe('assigning a hardware token: one holder at a time', () => {
  const tenantId = uniqueTenant('claim');

  before(async () => {
    await instance().users.configureTenant({ tenantId, settings: {} }, new Date(), { mayCreateTenant: true });
  });

  async function setUp(name: string) {
    const serialNumber = `SN-${name}-${Date.now()}`;
    const [alice, bob] = [uniqueUser(`${name}-alice`), uniqueUser(`${name}-bob`)];
    const { users, tokens } = instance();
    for (const userId of [alice, bob]) await users.register({ tenantId, userId }, new Date());
    assert.deepEqual(await tokens.importToken({ tenantId, jobId: `job-${serialNumber}`, replace: false }, row(serialNumber), new Date()), { imported: true });
    const holders = async () => {
      const { tokenId } = await tokenState(tenantId, serialNumber);
      const held: string[] = [];
      for (const userId of [alice, bob]) if (await users.holdsToken(tenantId, userId, tokenId!, new Date())) held.push(userId);
      return held;
    };
    const claimedBy = (userId: string) => async () => ((await tokenState(tenantId, serialNumber)).userId === userId ? true : undefined);
    return { serialNumber, alice, bob, tokens, holders, claimedBy };
  }

  itWith({ real: ['nats', 'redis'] }, 'refuses a second assignment while the first one’s claim is being completed', async () => {
    const { serialNumber, alice, bob, tokens, holders, claimedBy } = await setUp('race');
    let open!: () => void;
    const gated = gatedInstance({ users: [alice], gate: new Promise<void>((resolve) => (open = resolve)) });
    const now = new Date();
    const first = gated.tokens.assign({ tenantId, serialNumber, userId: alice }, now);
    await eventually(claimedBy(alice), 10_000, 'alice’s claim');
    // Alice's record does not have the token yet: that is no reason to give it to Bob.
    await assert.rejects(tokens.assign({ tenantId, serialNumber, userId: bob }, now), { code: 'conflict', message: /being assigned to another user/ });
    open();
    assert.equal((await first).userId, alice);
    assert.deepEqual(await holders(), [alice]);
  });

  itWith({ real: ['nats', 'redis'] }, 'takes over a claim too old to be completed, which then gives nothing', async () => {
    const { serialNumber, alice, bob, tokens, holders, claimedBy } = await setUp('stalled');
    let open!: () => void;
    const gated = gatedInstance({ users: [alice], gate: new Promise<void>((resolve) => (open = resolve)) });
    const now = new Date();
    const stalled = gated.tokens.assign({ tenantId, serialNumber, userId: alice }, now);
    await eventually(claimedBy(alice), 10_000, 'alice’s claim');
    const later = new Date(now.getTime() + CLAIM_TAKEOVER_AFTER_MS);
    assert.equal((await tokens.assign({ tenantId, serialNumber, userId: bob }, later)).userId, bob);
    open();
    await assert.rejects(stalled, { code: 'conflict', message: /assigned again or taken back meanwhile/ });
    assert.deepEqual(await holders(), [bob]);
    assert.equal((await tokenState(tenantId, serialNumber)).userId, bob, 'the stalled assignment undid nothing of Bob’s');
  });

  itWith({ real: ['nats', 'redis'] }, 'an activation completes an assignment cut short only under its recent claim; an assignment again does', async () => {
    const { serialNumber, alice, tokens, holders } = await setUp('activate');
    const cut = gatedInstance({ users: [alice], fail: new Error('crashed before giving') });
    const now = new Date();
    await assert.rejects(cut.tokens.assign({ tenantId, serialNumber, userId: alice }, now), /crashed before giving/);
    assert.equal((await tokenState(tenantId, serialNumber)).userId, alice);
    const late = new Date(now.getTime() + CLAIM_COMPLETES_WITHIN_MS);
    const code = totp(secretOf(serialNumber), late.getTime());
    await assert.rejects(tokens.activate({ tenantId, serialNumber, code }, late), { code: 'conflict', message: /assign it again/ });
    assert.deepEqual(await holders(), []);
    assert.equal((await tokens.assign({ tenantId, serialNumber, userId: alice }, late)).userId, alice);
    assert.deepEqual(await holders(), [alice]);
    assert.deepEqual(await tokens.activate({ tenantId, serialNumber, code }, late), { serialNumber, tokenId: (await tokenState(tenantId, serialNumber)).tokenId, userId: alice, active: true });
  });

  itWith({ real: ['nats', 'redis'] }, 'an activation does not give a token back to the user who deleted it before the inventory heard of it', async () => {
    const { serialNumber, alice, tokens, holders } = await setUp('given-back');
    const now = new Date();
    await tokens.assign({ tenantId, serialNumber, userId: alice }, now);
    const { tokenId } = await tokenState(tenantId, serialNumber);
    // Deleted by an instance whose inventory release did not happen: the inventory still names Alice.
    await instance({ tokens: false }).users.deleteToken({ tenantId, userId: alice, tokenId: tokenId! }, now);
    assert.equal((await tokenState(tenantId, serialNumber)).userId, alice);
    const code = totp(secretOf(serialNumber), now.getTime());
    await assert.rejects(tokens.activate({ tenantId, serialNumber, code }, now), { code: 'conflict', message: /taken from the user after it was assigned/ });
    assert.deepEqual(await holders(), []);
  });
});

describe('a resumed import', () => {
  itWith({ real: ['nats', 'redis'] }, 'does not count against the user the token the same job gave them already', async () => {
    const tenantId = uniqueTenant('resume');
    const userId = uniqueUser('five');
    const { users, tokens } = instance();
    await users.register({ tenantId, userId }, new Date());
    for (let i = 0; i < 4; i++) await users.enrollTotp({ tenantId, userId, label: `app ${i}` }, new Date());
    const job = { tenantId, jobId: 'job-resumed', replace: false };
    const serialNumber = `SN-5-${Date.now()}`;
    assert.deepEqual(await tokens.importToken(job, row(serialNumber, userId), new Date()), { imported: true });
    // The job crashed before its checkpoint: the row is done again, and is done.
    assert.deepEqual(await tokens.importToken(job, row(serialNumber, userId), new Date()), { imported: true });
    // Another token for this user is still refused.
    const refused = await tokens.importToken(job, row(`${serialNumber}-6`, userId), new Date());
    assert.equal(refused.imported, false);
  });
});
