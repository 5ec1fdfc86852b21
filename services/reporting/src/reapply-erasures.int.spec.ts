import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { EventSubjects, Streams } from '@mfa/contracts';
import { generateDataKey, loadKeyring, userTag } from '@mfa/crypto';
import { connectNats, createEvent, ensureStream, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, testEnv, uniqueTenant } from '@mfa/testing';
import { prepareDatabase } from './adapters/database.js';
import { ErasureReapply, type ReapplyReport } from './application/erasure-reapply.js';
import { formatReapplyReport } from './reapply-erasures.js';

/**
 * reapply-erasures over a log and a key store restored from different moments (docs/operations.md,
 * "Backup and restore"): each user's events and data key record are written as user-settings
 * writes them, and the pass sorts the users it cannot erase again by what their key store holds.
 */
describe('reapply-erasures: users the event log and MFA_USER_KEYS disagree on (real NATS and Postgres)', () => {
  const { keyring } = loadKeyring(process.env);
  const log = createLogger('reapply-erasures-test', { level: 'error' });
  let nats: NatsClients;
  let db: pg.Pool;

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-reapply-erasures-test' });
    await ensureStream(nats.jsm, Streams.userSettings);
    await ensureStream(nats.jsm, Streams.userKeys);
    await prepareDatabase(testEnv.databaseUrl, log);
    db = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 });
  });

  after(async () => {
    await db?.end();
    await nats?.nc.close();
  });

  /** The user's events, in order: registered (`r`) or erased at a generation (a number). */
  const logOf = async (tenantId: string, userId: string, events: Array<'r' | number>) => {
    for (const event of events) {
      const body =
        event === 'r'
          ? createEvent('UserRegistered', 1, { tenantId, aggregateId: userId, now: new Date(), data: { userId } })
          : createEvent('UserErased', 1, { tenantId, aggregateId: userId, now: new Date(), data: { userId, gen: event } });
      await nats.js.publish(EventSubjects.user(tenantId, userId), JSON.stringify(body));
    }
  };
  /** The user's data key records, the last one current: a key of a generation, or an erasure's tombstone. */
  const keysOf = async (tenantId: string, userId: string, records: Array<{ key: number } | { tombstone: number }>) => {
    for (const record of records) {
      const body =
        'key' in record
          ? { gen: record.key, wrappedKey: generateDataKey(keyring, tenantId, userId, record.key).wrapped }
          : { gen: record.tombstone, erasedAt: new Date().toISOString() };
      await nats.js.publish(EventSubjects.userDataKey(userTag(keyring, tenantId, userId)), JSON.stringify(body));
    }
  };
  const reapply = async (tenantId: string) => {
    const erased: string[] = [];
    const report = await new ErasureReapply(nats, keyring, db, {
      dryRun: false,
      log,
      erase: async (user) => {
        if (user.tenantId === tenantId) erased.push(user.userId);
        return {};
      },
    }).run();
    const ours = <U extends { tenantId: string; userId: string }>(users: U[]) => users.filter((u) => u.tenantId === tenantId).sort((a, b) => a.userId.localeCompare(b.userId));
    return { report, erased, withoutKey: ours(report.withoutKey), keyErasedOnly: ours(report.keyErasedOnly) };
  };

  itWith({ real: ['nats', 'postgres'] }, 'a user erased and registered again whose key store holds only the erasure’s tombstone lacks a data key: not listed as erased by the key store', async () => {
    const tenantId = uniqueTenant('reapply-gone');
    // Erased at generation 1 and registered again (generation 2) before the log's backup; the key
    // store's copy is from between the two: it holds the tombstone of 1 and no key of 2. The
    // tombstone is the log's own erasure, not one the log misses; what is missing is key 2.
    await logOf(tenantId, 'rut', ['r', 1, 'r']);
    await keysOf(tenantId, 'rut', [{ key: 1 }, { tombstone: 1 }]);
    const { withoutKey, keyErasedOnly, erased } = await reapply(tenantId);
    assert.deepEqual(keyErasedOnly, [], 'not a user the key store erased after the log’s backup');
    assert.deepEqual(withoutKey, [{ tenantId, userId: 'rut' }]);
    assert.deepEqual(erased, [], 'nobody erased');
  });

  itWith({ real: ['nats', 'postgres'] }, 'users whose key store destroyed a key the log never erased are listed with the tombstone’s generation, and nothing is erased', async () => {
    const tenantId = uniqueTenant('reapply-keyerased');
    // Bertil: erased after the log's backup. Erik: erased before it, registered again, and erased
    // again after it (the log records the erasure of 1, not of 2).
    await logOf(tenantId, 'bertil', ['r']);
    await keysOf(tenantId, 'bertil', [{ key: 1 }, { tombstone: 1 }]);
    await logOf(tenantId, 'erik', ['r', 1, 'r']);
    await keysOf(tenantId, 'erik', [{ key: 1 }, { tombstone: 1 }, { key: 2 }, { tombstone: 2 }]);
    const { report, withoutKey, keyErasedOnly, erased } = await reapply(tenantId);
    assert.deepEqual(keyErasedOnly, [
      { tenantId, userId: 'bertil', gen: 1 },
      { tenantId, userId: 'erik', gen: 2 },
    ]);
    assert.deepEqual(withoutKey, []);
    assert.deepEqual(erased, [], 'the pass records no erasure for them (see docs/operations.md)');
    const text = formatReapplyReport({ ...report, keyErasedOnly } satisfies ReapplyReport);
    assert.match(text, new RegExp(`  ${tenantId} erik \\(key generation 2\\)`));
  });
});
