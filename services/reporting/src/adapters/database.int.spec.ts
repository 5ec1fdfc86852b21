import { readdirSync } from 'node:fs';
import { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { itWith, testEnv } from '@mfa/testing';
import { createLogger } from '@mfa/telemetry';
import { MIGRATIONS_DIR, MIGRATIONS_TABLE, prepareDatabase } from './database.js';

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

describe('prepareDatabase (real Postgres)', () => {
  const scratch = `mfa_reporting_boot_${randomUUID().slice(0, 8)}`;

  after(async () => {
    await withClient(databaseUrl('postgres'), (c) => c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(scratch)} WITH (FORCE)`));
  });

  itWith({ real: ['postgres'] }, 'creates a missing database and migrates it when two instances boot at once', async () => {
    await Promise.all([prepareDatabase(databaseUrl(scratch), log), prepareDatabase(databaseUrl(scratch), log)]);
    await withClient(databaseUrl(scratch), async (c) => {
      const tables = await c.query<{ table_name: string }>(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
      );
      assert.deepEqual(
        tables.rows.map((r) => r.table_name),
        ['audit_log', 'block_history', 'deliveries', 'erased_users', 'fraud_alerts', 'fraud_notifications', MIGRATIONS_TABLE, 'signins', 'tenants', 'user_lifetimes'],
      );
      const applied = await c.query(`SELECT name FROM ${MIGRATIONS_TABLE}`);
      assert.equal(applied.rowCount, readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).length, 'each migration recorded once');
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
    assert.equal(count.rows[0].n, readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).length);
  });
});
