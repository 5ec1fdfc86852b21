import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import type { HealthCheck } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { hostUrls, locatePrimary, PrimaryPool } from './primary-pool.js';

/** This service's migrations; each service keeps its own history table in the shared database. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
export const MIGRATIONS_TABLE = 'pgmigrations_reporting';

const DUPLICATE_DATABASE = '42P04';
const UNIQUE_VIOLATION = '23505';
const INVALID_CATALOG_NAME = '3D000';
const LOCK_NOT_AVAILABLE = '55P03';

/**
 * How long a migration's statement waits for a table lock before it gives up (and the whole
 * migration is rolled back and tried again). While an ALTER TABLE waits for its lock, every query
 * on that table queues behind it, so a migration stuck behind a long report query or a backup
 * would stall the projection and the reports for as long: with this it stalls them for at most
 * this long per attempt.
 */
export const MIGRATION_LOCK_TIMEOUT_MS = 1_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const codeOf = (error: unknown) => (error as { code?: unknown })?.code;

/**
 * Creates the database if missing, then brings its schema up to date. Safe to run from several
 * instances at once: a lost CREATE DATABASE race is fine, and migrations wait for node-pg-migrate's
 * advisory lock. Retries while Postgres is still starting (containers start in any order), and
 * while a migration cannot take a table's lock within `lockTimeoutMs` (another session holds the
 * table), until `timeoutMs` has passed.
 */
export async function prepareDatabase(databaseUrl: string, log: Logger, options: { timeoutMs?: number; lockTimeoutMs?: number } = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const lockTimeoutMs = options.lockTimeoutMs ?? MIGRATION_LOCK_TIMEOUT_MS;
  // DATABASE_URL with several hosts: the schema is made on the one that accepts writes.
  if (hostUrls(databaseUrl).length > 1) {
    let primary = '';
    await retrying('find the primary', deadline, log, () => true, async () => void (primary = await locatePrimary(databaseUrl)));
    databaseUrl = primary;
  }
  await retrying('create database', deadline, log, isStarting, () => createDatabaseIfMissing(databaseUrl, log));
  // node-pg-migrate's error lines of the attempt under way (the failed statement among them).
  const lines: string[] = [];
  await retrying(
    'migrate',
    deadline,
    log,
    (e) => isStarting(e) || isLocked(e) || isLockTimeout(e),
    () => migrate(databaseUrl, log, lockTimeoutMs, (lines.length = 0, lines)),
    () => lines,
  );
}

async function retrying(what: string, deadline: number, log: Logger, retryable: (e: unknown) => boolean, fn: () => Promise<void>, errorLines: () => readonly string[] = () => []) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!retryable(error) || Date.now() >= deadline) {
        for (const line of errorLines()) log.error(line);
        throw new Error(`database ${what} failed`, { cause: error });
      }
      // Waiting for Postgres to start or for another instance is normal at boot; a table held by
      // another session is something an operator may want to see (a long query, a backup).
      if (isLockTimeout(error)) {
        log.warn(`database ${what}: a table is held by another session; retrying`, { attempt, error: (error as Error).message, statement: failedStatement(errorLines()) });
      } else log.debug(`database ${what}: retrying`, { attempt, error });
      await sleep(Math.min(1_000, 50 * 2 ** attempt));
    }
  }
}

/** The first line of SQL in node-pg-migrate's "Error executing:" report (comments skipped). */
function failedStatement(lines: readonly string[]): string | undefined {
  for (const line of lines) {
    const [head, ...rest] = line.split('\n');
    if (!/^Error executing:/.test(head ?? '')) continue;
    const sql = rest.map((l) => l.trim()).find((l) => l.length > 0 && !l.startsWith('--'));
    if (sql) return sql.slice(0, 200);
  }
  return undefined;
}

/** Postgres not accepting connections yet. */
function isStarting(error: unknown): boolean {
  const code = codeOf(error);
  return code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === '57P03';
}

/**
 * A statement gave up waiting for a lock (lock_timeout). node-pg-migrate sometimes rethrows
 * Postgres's error and sometimes a new one quoting its stack, so the message is read too.
 */
function isLockTimeout(error: unknown): boolean {
  for (let e = error; e; e = (e as { cause?: unknown }).cause) {
    if (codeOf(e) === LOCK_NOT_AVAILABLE || /canceling statement due to lock timeout/.test(String((e as Error).message))) return true;
  }
  return false;
}

/** Another instance (or another service's migrations) holds node-pg-migrate's lock. */
function isLocked(error: unknown): boolean {
  return /Another migration is already running/.test(String((error as Error)?.message));
}

async function createDatabaseIfMissing(databaseUrl: string, log: Logger): Promise<void> {
  const target = new URL(databaseUrl);
  const name = decodeURIComponent(target.pathname.replace(/^\//, ''));
  if (!name) return; // no database named: the server's default for the user, which exists
  // Try the database itself first, so an existing one needs no access to the maintenance db.
  const probe = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5_000 });
  try {
    await probe.connect();
    return;
  } catch (error) {
    if (codeOf(error) !== INVALID_CATALOG_NAME) throw error;
  } finally {
    await probe.end().catch(() => undefined);
  }
  const maintenance = new URL(databaseUrl);
  maintenance.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: maintenance.toString(), connectionTimeoutMillis: 5_000 });
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    log.info('database created', { database: name });
  } catch (error) {
    // Two instances racing: the loser sees duplicate_database, or a unique violation on
    // pg_database when both passed the existence check at the same moment.
    const code = codeOf(error);
    if (code !== DUPLICATE_DATABASE && code !== UNIQUE_VIOLATION) throw error;
  } finally {
    await admin.end().catch(() => undefined);
  }
}

async function migrate(databaseUrl: string, log: Logger, lockTimeoutMs: number, errorLines: string[]): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5_000, application_name: 'mfa-reporting-migrate' });
  try {
    await client.connect();
    // Every statement of the migration, the ALTERs included, gives up on a lock after lockTimeoutMs.
    // A SET rather than a startup option: a DATABASE_URL's own `options` (or PGOPTIONS) would
    // override one silently, and PgBouncer refuses startup options it does not track.
    await client.query(`SET lock_timeout = ${Math.trunc(lockTimeoutMs)}`);
    const applied = await runner({
      dbClient: client,
      dir: MIGRATIONS_DIR,
      migrationsTable: MIGRATIONS_TABLE,
      direction: 'up',
      // Every pending migration or none: a failed boot leaves the schema as it was.
      singleTransaction: true,
      checkOrder: true,
      logger: {
        debug: (msg) => log.debug(msg),
        info: (msg) => log.debug(msg),
        // A lost race for the lock also fails to release it, and a failed attempt is rolled back;
        // both are expected, not warnings.
        warn: (msg) => (/release migration lock|Rolling back attempted migration/.test(msg) ? log.debug(msg) : log.warn(msg)),
        // The failed statement: retrying() names it when it retries and logs it when it gives up.
        error: (msg) => errorLines.push(msg),
      },
    });
    if (applied.length > 0) log.info('database migrated', { migrations: applied.map((m) => m.name) });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Connections of the report queries' own pool on the primary (DATABASE_READ_URL unset): slow
 * report queries wait for one of these, never for the projection's, so the projection keeps
 * writing however many reports are asked for at once.
 */
export const REPORT_CONNECTIONS_ON_PRIMARY = 4;

/**
 * The pool of a DATABASE_URL (its primary among several hosts, following a failover: PrimaryPool)
 * or of DATABASE_READ_URL (a replica): at most `max` connections (10 unless said), named
 * `applicationName` in pg_stat_activity.
 */
export async function createPool(databaseUrl: string, log: Logger, options: { max?: number; applicationName?: string } = {}): Promise<pg.Pool> {
  const config = {
    max: options.max ?? 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    // A report query or projection batch never needs this long; a stuck one must not hold a slot.
    statement_timeout: 30_000,
    application_name: options.applicationName ?? 'mfa-reporting',
  };
  // Several hosts: the one that accepts writes now (prepareDatabase has waited for one).
  const first = hostUrls(databaseUrl).length > 1 ? await locatePrimary(databaseUrl).catch(() => hostUrls(databaseUrl)[0]!) : databaseUrl;
  return new PrimaryPool(databaseUrl, config, log, first);
}

export class PostgresHealth implements HealthCheck {
  readonly name = 'postgres';
  constructor(private readonly pool: pg.Pool) {}
  async check(): Promise<void> {
    await this.pool.query('SELECT 1');
  }
}

/** Runs `work` in one transaction on a connection of `pool`: committed when it resolves, rolled back when it throws. */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
