import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { startPostgresPrimaryWithReplica, type PostgresPrimaryWithReplica } from './postgres-replica.js';

async function query(url: string, sql: string, values: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return await client.query(sql, values);
  } finally {
    await client.end();
  }
}

// The harness against real postmasters of its own (never the shared Postgres on 5432).
describe('startPostgresPrimaryWithReplica', () => {
  let pair: PostgresPrimaryWithReplica;

  before(async () => {
    pair = await startPostgresPrimaryWithReplica();
  });

  after(async () => {
    await pair?.stop();
  });

  it('streams what the primary writes to a read-only replica on a port of its own', async () => {
    assert.notEqual(pair.primary.port, pair.replica.port);
    assert.ok(![pair.primary.port, pair.replica.port].includes(5432));
    assert.equal(await pair.primary.inRecovery(), false);
    assert.equal(await pair.replica.inRecovery(), true);
    await query(pair.primary.url(), 'CREATE TABLE notes (id int PRIMARY KEY, body text)');
    await query(pair.primary.url(), `INSERT INTO notes VALUES (1, 'written on the primary')`);
    await pair.waitForReplica(10_000);
    assert.equal(await pair.replicationLagBytes(), 0);
    const { rows } = await query(pair.replica.url(), 'SELECT body FROM notes WHERE id = 1');
    assert.deepEqual(rows, [{ body: 'written on the primary' }]);
    await assert.rejects(query(pair.replica.url(), `INSERT INTO notes VALUES (2, 'x')`), /read-only transaction/);
  });

  it('promotes the replica after the primary is killed; it takes writes, the old primary comes back alone', { timeout: 60_000 }, async () => {
    await query(pair.primary.url(), `INSERT INTO notes VALUES (3, 'before the crash')`);
    await pair.waitForReplica(10_000);
    const primaryPid = pair.primary.pid;
    await pair.primary.kill();
    assert.equal(pair.primary.running(), false);
    assert.throws(() => process.kill(primaryPid, 0), 'the postmaster is gone');

    const startedAt = Date.now();
    await pair.promoteReplica();
    const promoteMs = Date.now() - startedAt;
    assert.equal(await pair.replica.inRecovery(), false);
    await query(pair.replica.url(), `INSERT INTO notes VALUES (4, 'on the promoted replica')`);
    const { rows } = await query(pair.replica.url(), 'SELECT id FROM notes ORDER BY id');
    assert.deepEqual(rows.map((r) => r.id), [1, 3, 4]);

    // Restarted, the promoted replica stays a primary…
    await pair.replica.restart();
    assert.equal(await pair.replica.inRecovery(), false);
    // …and so does the old primary: two primaries that diverged after the kill.
    await pair.primary.restart();
    assert.notEqual(pair.primary.pid, primaryPid);
    assert.equal(await pair.primary.inRecovery(), false);
    const old = await query(pair.primary.url(), 'SELECT id FROM notes ORDER BY id');
    assert.deepEqual(old.rows.map((r) => r.id), [1, 3]);
    console.log(`primary killed: the replica was promoted and writable after ${promoteMs} ms`);
  });
});

describe('startPostgresPrimaryWithReplica({ synchronous: true })', () => {
  let pair: PostgresPrimaryWithReplica;

  before(async () => {
    pair = await startPostgresPrimaryWithReplica({ synchronous: true });
  });

  after(async () => {
    await pair?.stop();
  });

  it('commits on the primary only with the replica as its synchronous standby; the promoted replica waits for none', { timeout: 60_000 }, async () => {
    const standbys = await query(pair.primary.url(), 'SELECT sync_state FROM pg_stat_replication');
    assert.deepEqual(standbys.rows, [{ sync_state: 'sync' }]);
    await query(pair.primary.url(), 'CREATE TABLE notes (id int PRIMARY KEY)');
    await query(pair.primary.url(), 'INSERT INTO notes VALUES (1)');
    // Committed on the primary means the replica has it: no wait for replay before the crash.
    await pair.primary.kill();
    await pair.promoteReplica();
    const setting = await query(pair.replica.url(), 'SHOW synchronous_standby_names');
    assert.deepEqual(setting.rows, [{ synchronous_standby_names: '' }]);
    await query(pair.replica.url(), 'INSERT INTO notes VALUES (2)');
    const { rows } = await query(pair.replica.url(), 'SELECT id FROM notes ORDER BY id');
    assert.deepEqual(rows.map((r) => r.id), [1, 2]);
  });
});
