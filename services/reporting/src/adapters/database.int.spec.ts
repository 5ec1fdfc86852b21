import { readdirSync } from 'node:fs';
import { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import { itWith, testEnv } from '@mfa/testing';
import { createLogger } from '@mfa/telemetry';
import { createPool, inTransaction, MIGRATIONS_DIR, MIGRATIONS_TABLE, prepareDatabase } from './database.js';

const log = createLogger('reporting-test');

/** The test server with another database name. */
function databaseUrl(name: string): string {
  const url = new URL(testEnv.databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const migrationNames = () =>
  readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort();

describe('prepareDatabase (real Postgres)', () => {
  const scratch = `mfa_reporting_boot_${randomUUID().slice(0, 8)}`;
  const held = `mfa_reporting_held_${randomUUID().slice(0, 8)}`;

  after(async () => {
    for (const name of [scratch, held]) {
      await withClient(databaseUrl('postgres'), (c) => c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`));
    }
  });

  itWith({ real: ['postgres'] }, 'creates a missing database and migrates it when two instances boot at once', async () => {
    await Promise.all([prepareDatabase(databaseUrl(scratch), log), prepareDatabase(databaseUrl(scratch), log)]);
    await withClient(databaseUrl(scratch), async (c) => {
      const tables = await c.query<{ table_name: string }>(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
      );
      assert.deepEqual(
        tables.rows.map((r) => r.table_name),
        ['audit_log', 'block_history', 'deliveries', 'erased_users', 'fraud_alerts', 'fraud_notifications', MIGRATIONS_TABLE, 'signins', 'tenants', 'user_erasures', 'user_lifetimes'],
      );
      const applied = await c.query(`SELECT name FROM ${MIGRATIONS_TABLE}`);
      assert.equal(applied.rowCount, migrationNames().length, 'each migration recorded once');
      const indexes = await c.query<{ indexname: string }>(
        `SELECT indexname FROM pg_indexes WHERE tablename = 'signins' ORDER BY indexname`,
      );
      assert.deepEqual(
        indexes.rows.map((r) => r.indexname),
        ['signins_by_time', 'signins_by_user', 'signins_pkey'],
      );
    });
  });

  itWith({ real: ['postgres'] }, 'is a no-op on an up-to-date database, also concurrently (the test database)', async () => {
    await Promise.all([prepareDatabase(testEnv.databaseUrl, log), prepareDatabase(testEnv.databaseUrl, log)]);
    await prepareDatabase(testEnv.databaseUrl, log);
    const count = await withClient(testEnv.databaseUrl, (c) => c.query(`SELECT count(*)::int AS n FROM ${MIGRATIONS_TABLE}`));
    assert.equal(count.rows[0].n, migrationNames().length);
  });

  itWith({ real: ['postgres'] }, 'a migration that cannot lock its table gives up within the lock timeout and retries, so queries on the table are not stalled behind it', async () => {
    const url = databaseUrl(held);
    await prepareDatabase(url, log);
    // Make 1765497600000_signin-via (ALTER TABLE signins) pending again, with the ones after it.
    const names = migrationNames();
    const from = names.indexOf('1765497600000_signin-via');
    assert.ok(from >= 0);
    const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
    await runner({ databaseUrl: url, dir: MIGRATIONS_DIR, migrationsTable: MIGRATIONS_TABLE, direction: 'down', count: names.length - from, singleTransaction: true, logger: quiet });
    const viaColumn = (c: pg.Client) => c.query(`SELECT 1 FROM information_schema.columns WHERE table_name = 'signins' AND column_name = 'via'`);
    await withClient(url, async (c) => assert.equal((await viaColumn(c)).rowCount, 0));

    // A long report query (or a backup) holds signins.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM signins LIMIT 1');

      // While it does, the boot gives up at its deadline with the lock timeout as the cause, and
      // leaves the schema as it was.
      await assert.rejects(prepareDatabase(url, log, { lockTimeoutMs: 200, timeoutMs: 1_500 }), (error: Error) => {
        assert.match(error.message, /database migrate failed/);
        assert.match(String((error.cause as Error)?.message ?? ''), /lock timeout/);
        return true;
      });
      await withClient(url, async (c) => assert.equal((await viaColumn(c)).rowCount, 0));

      // A boot with time to spare waits on; each time its ALTER is queued for the lock, a query
      // on signins queued behind it still runs (without a lock timeout it would wait for the
      // holder: the ALTER's place in the queue comes first).
      let migrated = false;
      const migrating = prepareDatabase(url, log, { lockTimeoutMs: 200, timeoutMs: 60_000 }).then(() => void (migrated = true));
      await withClient(url, async (c) => {
        const waiting = `SELECT count(*)::int AS n FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'signins'::regclass AND NOT granted`;
        for (let i = 0; (await c.query(waiting)).rows[0].n === 0; i++) {
          assert.ok(i < 1_000, 'the migration never waited for the lock on signins');
          await sleep(10);
        }
      });
      const reader = withClient(url, (c) => c.query('SELECT count(*) FROM signins')).then(() => 'read' as const);
      assert.equal(await Promise.race([reader, sleep(10_000, 'stalled' as const)]), 'read', 'a query on signins ran while the migration waited for its lock');
      assert.equal(migrated, false, 'the migration waits for the holder');

      await holder.query('COMMIT');
      await migrating;
    } finally {
      await holder.end();
    }
    await withClient(url, async (c) => {
      assert.equal((await viaColumn(c)).rowCount, 1);
      const applied = await c.query(`SELECT name FROM ${MIGRATIONS_TABLE}`);
      assert.equal(applied.rowCount, names.length);
    });
  });
});

describe('the projection pool (real Postgres)', () => {
  itWith({ real: ['postgres'] }, 'leaves no listener behind on a client it lends for a transaction, and ends', async () => {
    const pool = await createPool(testEnv.databaseUrl, log, { max: 1 });
    let listeners: number;
    try {
      // One client, lent again and again, as a long-running instance's erasures and fraud batches do.
      for (let i = 0; i < 30; i++) await inTransaction(pool, (client) => client.query('SELECT 1'));
      listeners = await inTransaction(pool, async (client) => client.listenerCount('error'));
    } finally {
      await assert.doesNotReject(pool.end(), 'the pool ends');
    }
    assert.ok(listeners <= 2, `error listeners on a client lent 31 times: ${listeners}`);
  });
});
