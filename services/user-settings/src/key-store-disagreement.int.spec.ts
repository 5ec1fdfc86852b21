import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { EventSubjects, Streams, type AnyEvent } from '@mfa/contracts';
import { dataKeyGeneration, loadKeyring, userTag, type Keyring } from '@mfa/crypto';
import { connectNats, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { UserDataKeys } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, testEnv, uniqueTenant, uniqueUser, type NatsServerProcess } from '@mfa/testing';
import { EventStore } from './adapters/event-store.js';
import { SnapshotStore } from './adapters/snapshot-store.js';
import { SNAPSHOT_EVERY, USER_SNAPSHOT_VERSION } from './application/aggregate-loader.js';
import { UserSettingsService } from './application/user-settings.service.js';

/**
 * A restore that took MFA_USER_KEYS and MFA_USER_SETTINGS at different moments, made by writing
 * the key stream directly: a user erased between the two copies (a tombstone, no UserErased), and
 * one registered between them (events sealed under a key the stream does not hold). Against a
 * nats-server of the test's own (the key stream's exact contents matter) and the real Redis, in
 * a database of its own (9). Each step runs on a fresh instance, with no data key cached.
 */
const DB = 9;

let server: NatsServerProcess;
let nats: NatsClients;
let redis: Redis;
let keyring: Keyring;
let store: EventStore;
let writer: UserProjectionWriter;
const log = createLogger('key-store-disagreement-test', { level: 'error' });

before(async () => {
  server = await startNatsServer();
  nats = await connectNats({ url: server.url, name: 'key-store-disagreement-int-test', connectTimeoutMs: 5_000 });
  for (const stream of [Streams.userSettings, Streams.userKeys, Streams.state]) await ensureStream(nats.jsm, stream);
  redis = new Redis(testEnv.redisUrl, { db: DB });
  keyring = loadKeyring({}).keyring;
  writer = new UserProjectionWriter(redis, keyring);
  await writer.markStepsRestored();
  store = new EventStore(nats.jsm, new EventPublisher(nats.js), Streams.userSettings.name, log);
});

after(async () => {
  await nats?.nc.drain();
  await server?.stop();
  redis?.disconnect();
});

/** A user-settings instance of its own (its own data-key cache), on the shared streams. */
function instance(options: { store?: EventStore } = {}): UserSettingsService {
  return new UserSettingsService({
    store: options.store ?? store,
    projection: writer,
    keyring,
    keys: new UserDataKeys(nats, keyring),
    log,
    autoCreateTenants: true,
    totpIssuer: 'Open MFA',
    snapshots: new SnapshotStore(nats.js, nats.jsm),
  });
}

const keysOf = () => new UserDataKeys(nats, keyring);
const eventsOf = async (tenantId: string, userId: string): Promise<AnyEvent[]> => (await store.load(EventSubjects.user(tenantId, userId))).events;
const typesOf = async (tenantId: string, userId: string) => (await eventsOf(tenantId, userId)).map((e) => e.type);
const erasedGens = async (tenantId: string, userId: string) =>
  (await eventsOf(tenantId, userId)).flatMap((e) => (e.type === 'UserErased' ? [e.data.gen] : []));
const methodsInRedis = (tenantId: string, userId: string) => redis.hget(RedisKeys.user(userTag(keyring, tenantId, userId)), 'methods');

/** What the restore left of the user's key: nothing (the key's message removed from the stream). */
async function loseKey(tenantId: string, userId: string): Promise<void> {
  const msg = await nats.jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: EventSubjects.userDataKey(userTag(keyring, tenantId, userId)) });
  assert.ok(msg, 'the user has a key to lose');
  assert.ok(await nats.jsm.streams.deleteMessage(Streams.userKeys.name, msg.seq, true));
}

/** A user registered with personal data (sealed under data key generation 1), projected. */
async function registered(tenantId: string, name: string): Promise<string> {
  const userId = uniqueUser(name);
  assert.deepEqual(await instance().register({ tenantId, userId, displayName: 'Helga Nordin', phoneNumber: '+46701234567' }, new Date()), {
    userId,
    methods: ['sms', 'voice'],
  });
  assert.equal(await methodsInRedis(tenantId, userId), 'sms,voice');
  return userId;
}

/** The error a call rejects with. */
async function rejection(call: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await call;
  } catch (error) {
    return error as { code?: string; message: string };
  }
  assert.fail('expected the call to fail');
}

describe('a user erased in MFA_USER_KEYS whom the log never erased (keys newer than events)', () => {
  const tenantId = uniqueTenant('kn');

  itWith({ real: ['nats', 'redis'] }, 'users.get answers not_found; users.delete records the erasure with the tombstone’s generation; the user registers again as generation 2', async () => {
    const userId = await registered(tenantId, 'erased-only-in-keys');
    await keysOf().erase(tenantId, userId, 1, new Date());

    const got = await rejection(instance().get({ tenantId, userId }, new Date()));
    assert.equal(got.code, 'not_found', got.message);
    assert.match(got.message, /data key is destroyed.*users\.delete/);

    assert.deepEqual(await instance().delete({ tenantId, userId }, new Date()), { userId, deleted: true });
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased']);
    assert.deepEqual(await erasedGens(tenantId, userId), [1]);
    assert.equal(await methodsInRedis(tenantId, userId), null, 'the projection is erased');
    assert.deepEqual(await rejection(instance().get({ tenantId, userId }, new Date())).then((e) => [e.code, e.message]), ['not_found', 'unknown user']);
    // Deleting again answers the same and records nothing more.
    assert.deepEqual(await instance().delete({ tenantId, userId }, new Date()), { userId, deleted: true });
    assert.deepEqual(await erasedGens(tenantId, userId), [1]);

    assert.deepEqual(await instance().register({ tenantId, userId, email: 'helga@example.com' }, new Date()), { userId, methods: [] });
    const user = await instance().get({ tenantId, userId }, new Date());
    assert.deepEqual([user.displayName, user.email, user.phoneNumber], [null, 'helga@example.com', null], 'nothing of the erased user comes back');
    const entry = await keysOf().current(tenantId, userId);
    assert.deepEqual([entry?.kind, entry?.gen], ['key', 2]);
  });

  itWith({ real: ['nats', 'redis'] }, 'users.register completes the erasure first, then registers a new user', async () => {
    const userId = await registered(tenantId, 'register-after-key-erased');
    await keysOf().erase(tenantId, userId, 1, new Date());

    assert.deepEqual(await instance().register({ tenantId, userId, displayName: 'Someone Else' }, new Date()), { userId, methods: [] });
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased', 'UserRegistered']);
    assert.deepEqual(await erasedGens(tenantId, userId), [1]);
    const last = (await eventsOf(tenantId, userId)).at(-1)!;
    assert.ok(last.type === 'UserRegistered' && last.version === 2 && last.data.pii);
    assert.equal(dataKeyGeneration(last.data.pii), 2, 'sealed under a new generation');
    const user = await instance().get({ tenantId, userId }, new Date());
    assert.deepEqual([user.displayName, user.phoneNumber, user.methods], ['Someone Else', null, []]);
  });

  itWith({ real: ['nats', 'redis'] }, 'two registers racing: the one that completes the erasure second finds it recorded and undoes nothing of the other', async () => {
    const userId = await registered(tenantId, 'two-registers');
    await keysOf().erase(tenantId, userId, 1, new Date());
    // The second instance found the disagreement; before its erasure loads the user, the first
    // completes the erasure and registers the user again, under generation 2.
    let firstAudited = 0;
    class Second extends UserSettingsService {
      protected override async completeKeyErasure(...args: [string, string, number, Date]) {
        await instance().register({ tenantId, userId, displayName: 'Registered First', email: 'first@example.com' }, new Date(), { erasureCompleted: async () => void firstAudited++ });
        return super.completeKeyErasure(...args);
      }
    }
    const second = new Second({ store, projection: writer, keyring, keys: new UserDataKeys(nats, keyring), log, autoCreateTenants: true, totpIssuer: 'Open MFA', snapshots: new SnapshotStore(nats.js, nats.jsm) });
    let secondAudited = 0;
    assert.deepEqual(await second.register({ tenantId, userId, displayName: 'Registered Second' }, new Date(), { erasureCompleted: async () => void secondAudited++ }), { userId, methods: [] });
    assert.deepEqual([firstAudited, secondAudited], [1, 0], 'the erasure is audited by the register that recorded it, once');
    assert.deepEqual(await erasedGens(tenantId, userId), [1], 'the erasure is recorded once');
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased', 'UserRegistered', 'UserProfileChanged']);
    const user = await instance().get({ tenantId, userId }, new Date());
    assert.deepEqual([user.displayName, user.email], ['Registered Second', 'first@example.com'], 'the second register applies to the user the first registered');
  });

  itWith({ real: ['nats', 'redis'] }, 'a user without personal data in the log: users.register completes the erasure before sealing any under a new key', async () => {
    const userId = uniqueUser('no-pii');
    await instance().register({ tenantId, userId, language: 'sv' }, new Date());
    await keysOf().erase(tenantId, userId, 1, new Date());

    assert.deepEqual(await instance().register({ tenantId, userId, displayName: 'Helga Nordin' }, new Date()), { userId, methods: [] });
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased', 'UserRegistered']);
    assert.deepEqual(await erasedGens(tenantId, userId), [1]);
    assert.equal((await instance().get({ tenantId, userId }, new Date())).language, null, 'the old registration is gone');
  });

  itWith({ real: ['nats', 'redis'] }, 'an erasure racing the load is no disagreement: the erasure stands once, and a register after it is a new user', async () => {
    const userId = await registered(tenantId, 'raced');
    // The racing instance reads the events, then the erasure (event, then key destroyed) happens,
    // then it reads the key: the tombstone, with the log read before the erasure.
    let race: (() => Promise<unknown>) | undefined;
    class RacedStore extends EventStore {
      override async load(subject: string, afterSeq?: number) {
        const loaded = await super.load(subject, afterSeq);
        const go = race;
        race = undefined;
        await go?.();
        return loaded;
      }
    }
    const raced = instance({ store: new RacedStore(nats.jsm, new EventPublisher(nats.js), Streams.userSettings.name, log) });

    race = () => instance().delete({ tenantId, userId }, new Date());
    assert.deepEqual(await rejection(raced.get({ tenantId, userId }, new Date())).then((e) => [e.code, e.message]), ['not_found', 'unknown user']);
    assert.equal(race, undefined, 'the race ran');

    const again = await registered(tenantId, 'raced-register');
    race = () => instance().delete({ tenantId, userId: again }, new Date());
    assert.deepEqual(await raced.register({ tenantId, userId: again, displayName: 'Helga Nordin' }, new Date()), { userId: again, methods: [] });
    assert.deepEqual(await typesOf(tenantId, again), ['UserRegistered', 'UserErased', 'UserRegistered']);
    assert.deepEqual(await erasedGens(tenantId, again), [1]);
  });
});

describe('users.delete with onlyIfKeyErased: completing an erasure the key store made (reapply-erasures)', () => {
  const tenantId = uniqueTenant('kc');
  const completing = (userId: string, onlyIfKeyErased: number) => instance().delete({ tenantId, userId, onlyIfKeyErased }, new Date());

  itWith({ real: ['nats', 'redis'] }, 'records the erasure at the tombstone’s generation and carries it out; sent again after the user registered again, it answers deleted and undoes nothing', async () => {
    const userId = await registered(tenantId, 'complete');
    await keysOf().erase(tenantId, userId, 1, new Date());

    assert.deepEqual(await completing(userId, 1), { userId, deleted: true });
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased']);
    assert.deepEqual(await erasedGens(tenantId, userId), [1]);
    assert.equal(await methodsInRedis(tenantId, userId), null, 'the projection is erased');
    const tombstone = await keysOf().current(tenantId, userId);
    assert.deepEqual([tombstone?.kind, tombstone?.gen], ['erased', 1]);

    // The reply was lost, the user registered again, and the request is sent again.
    await instance().register({ tenantId, userId, displayName: 'Registered Again' }, new Date());
    assert.deepEqual(await completing(userId, 1), { userId, deleted: true });
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased', 'UserRegistered'], 'nothing recorded');
    assert.equal((await instance().get({ tenantId, userId }, new Date())).displayName, 'Registered Again');
    const entry = await keysOf().current(tenantId, userId);
    assert.deepEqual([entry?.kind, entry?.gen], ['key', 2]);
  });

  itWith({ real: ['nats', 'redis'] }, 'a tombstone of a later generation than the log erased (erased, registered again, erased again after the backup): recorded at that generation; a later generation asked for is refused', async () => {
    const userId = await registered(tenantId, 'complete-later');
    await instance().delete({ tenantId, userId }, new Date());
    await instance().register({ tenantId, userId, displayName: 'Helga Nordin' }, new Date());
    await keysOf().erase(tenantId, userId, 2, new Date());

    const beyond = await rejection(completing(userId, 3));
    assert.equal(beyond.code, 'conflict', beyond.message);
    assert.match(beyond.message, /erased generation 2 only/);
    assert.deepEqual(await erasedGens(tenantId, userId), [1], 'nothing recorded');
    assert.deepEqual(await completing(userId, 2), { userId, deleted: true });
    assert.deepEqual(await erasedGens(tenantId, userId), [1, 2]);
    assert.equal(await methodsInRedis(tenantId, userId), null);
  });

  itWith({ real: ['nats', 'redis'] }, 'a live key, or no key at all: conflict, and nothing is written', async () => {
    const live = await registered(tenantId, 'live');
    const refused = await rejection(completing(live, 1));
    assert.equal(refused.code, 'conflict', refused.message);
    assert.match(refused.message, /data key \(generation 1\) is live.*nothing erased/);
    assert.deepEqual(await typesOf(tenantId, live), ['UserRegistered'], 'nothing recorded');
    assert.equal(await methodsInRedis(tenantId, live), 'sms,voice', 'the projection is untouched');
    const key = await keysOf().current(tenantId, live);
    assert.deepEqual([key?.kind, key?.gen], ['key', 1], 'the key is untouched');
    assert.equal((await instance().get({ tenantId, userId: live }, new Date())).displayName, 'Helga Nordin');

    // A key the restore lost is no erasure to complete either (that is the operator's users.delete).
    const keyless = await registered(tenantId, 'keyless');
    await loseKey(tenantId, keyless);
    const lost = await rejection(completing(keyless, 1));
    assert.equal(lost.code, 'conflict', lost.message);
    assert.match(lost.message, /holds no data key/);
    assert.deepEqual(await typesOf(tenantId, keyless), ['UserRegistered']);
    assert.equal(await keysOf().current(tenantId, keyless), undefined, 'no tombstone written');
  });

  for (const when of ['before the erasure loads the user', 'between its read of the log and its read of the key', 'between its read of the key and its append'] as const) {
    itWith({ real: ['nats', 'redis'] }, `an IdP’s users.register racing it (${when}) completes the erasure and registers the user again: answered deleted, and the new registration stands`, async () => {
      const userId = await registered(tenantId, 'raced');
      await keysOf().erase(tenantId, userId, 1, new Date());
      const register = () => instance().register({ tenantId, userId, displayName: 'Registered Again', email: 'again@example.com', phoneNumber: '+46701234568' }, new Date());
      let race: (() => Promise<unknown>) | undefined = register;
      const go = async () => {
        const run = race;
        race = undefined;
        await run?.();
      };
      class RacedKeys extends UserDataKeys {
        override async current(...args: Parameters<UserDataKeys['current']>) {
          if (when === 'between its read of the log and its read of the key') await go();
          const entry = await super.current(...args);
          if (when === 'between its read of the key and its append') await go();
          return entry;
        }
      }
      if (when === 'before the erasure loads the user') await go();
      const raced = new UserSettingsService({ store, projection: writer, keyring, keys: new RacedKeys(nats, keyring), log, autoCreateTenants: true, totpIssuer: 'Open MFA', snapshots: new SnapshotStore(nats.js, nats.jsm) });

      assert.deepEqual(await raced.delete({ tenantId, userId, onlyIfKeyErased: 1 }, new Date()), { userId, deleted: true });
      assert.equal(race, undefined, 'the race ran');
      assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered', 'UserErased', 'UserRegistered'], 'the register’s erasure, once, and its registration');
      assert.deepEqual(await erasedGens(tenantId, userId), [1]);
      const user = await instance().get({ tenantId, userId }, new Date());
      assert.deepEqual([user.displayName, user.email, user.phoneNumber], ['Registered Again', 'again@example.com', '+46701234568'], 'the new registration is untouched');
      const entry = await keysOf().current(tenantId, userId);
      assert.deepEqual([entry?.kind, entry?.gen], ['key', 2]);
      assert.equal(await methodsInRedis(tenantId, userId), 'sms,voice', 'the new registration stays projected');
    });
  }
});

describe('a user whose data key MFA_USER_KEYS does not hold (keys older than events)', () => {
  const tenantId = uniqueTenant('ko');

  itWith({ real: ['nats', 'redis'] }, 'users.get and users.register answer conflict naming users.delete, and create no key; users.delete erases the user, who registers again as generation 2', async () => {
    const userId = await registered(tenantId, 'keyless');
    await loseKey(tenantId, userId);

    const got = await rejection(instance().get({ tenantId, userId }, new Date()));
    assert.equal(got.code, 'conflict', got.message);
    assert.match(got.message, /data key is missing.*users\.delete/);
    const refused = await rejection(instance().register({ tenantId, userId, displayName: 'Helga Nordin' }, new Date()));
    assert.equal(refused.code, 'conflict', refused.message);
    assert.match(refused.message, /users\.delete/);
    assert.equal(await keysOf().current(tenantId, userId), undefined, 'no key was made for the old generation');
    assert.deepEqual(await typesOf(tenantId, userId), ['UserRegistered'], 'nothing recorded');

    assert.deepEqual(await instance().delete({ tenantId, userId }, new Date()), { userId, deleted: true });
    assert.deepEqual(await erasedGens(tenantId, userId), [1], 'the generation the events are sealed under');
    const tombstone = await keysOf().current(tenantId, userId);
    assert.deepEqual([tombstone?.kind, tombstone?.gen], ['erased', 1]);
    assert.equal(await methodsInRedis(tenantId, userId), null, 'the projection is erased');

    assert.deepEqual(await instance().register({ tenantId, userId, phoneNumber: '+46701234568' }, new Date()), { userId, methods: ['sms', 'voice'] });
    const user = await instance().get({ tenantId, userId }, new Date());
    assert.deepEqual([user.displayName, user.phoneNumber], [null, '+46701234568']);
    const entry = await keysOf().current(tenantId, userId);
    assert.deepEqual([entry?.kind, entry?.gen], ['key', 2]);
  });

  itWith({ real: ['nats', 'redis'] }, 'a user read from a snapshot (its personal data sealed under the lost key): users.delete erases them from it, and the snapshot goes', async () => {
    const userId = await registered(tenantId, 'keyless-snapshot');
    for (let i = 0; i < SNAPSHOT_EVERY; i++) await instance().register({ tenantId, userId, displayName: `Helga ${i}` }, new Date());
    // A command that read that many events leaves a snapshot.
    await instance().get({ tenantId, userId }, new Date());
    const snapshots = new SnapshotStore(nats.js, nats.jsm);
    assert.ok((await snapshots.read(EventSubjects.user(tenantId, userId), USER_SNAPSHOT_VERSION)).snapshot, 'a snapshot');
    await loseKey(tenantId, userId);

    assert.equal((await rejection(instance().get({ tenantId, userId }, new Date()))).code, 'conflict');
    assert.deepEqual(await instance().delete({ tenantId, userId }, new Date()), { userId, deleted: true });
    assert.deepEqual(await erasedGens(tenantId, userId), [1]);
    const after = await snapshots.read(EventSubjects.user(tenantId, userId), USER_SNAPSHOT_VERSION);
    assert.ok(after.snapshot === undefined && after.erasedSeq !== undefined, 'the erasure’s tombstone replaced the snapshot');
    assert.deepEqual(await instance().register({ tenantId, userId, displayName: 'Helga Nordin' }, new Date()), { userId, methods: [] });
    assert.equal((await keysOf().current(tenantId, userId))?.gen, 2);
  });

  itWith({ real: ['nats', 'redis'] }, 'after an erasure and a registration again (generation 2) whose key is lost: users.delete records generation 2 over the old tombstone', async () => {
    const userId = await registered(tenantId, 'keyless-again');
    await instance().delete({ tenantId, userId }, new Date());
    await instance().register({ tenantId, userId, displayName: 'Helga Nordin' }, new Date());
    // The key stream copied between the erasure and the registration: generation 1's tombstone.
    await loseKey(tenantId, userId);
    await keysOf().erase(tenantId, userId, 1, new Date());

    assert.equal((await rejection(instance().get({ tenantId, userId }, new Date()))).code, 'conflict');
    assert.deepEqual(await instance().delete({ tenantId, userId }, new Date()), { userId, deleted: true });
    assert.deepEqual(await erasedGens(tenantId, userId), [1, 2]);
    const tombstone = await keysOf().current(tenantId, userId);
    assert.deepEqual([tombstone?.kind, tombstone?.gen], ['erased', 2]);
    await instance().register({ tenantId, userId, displayName: 'Helga Nordin' }, new Date());
    assert.equal((await instance().get({ tenantId, userId }, new Date())).displayName, 'Helga Nordin');
    assert.equal((await keysOf().current(tenantId, userId))?.gen, 3);
  });
});
