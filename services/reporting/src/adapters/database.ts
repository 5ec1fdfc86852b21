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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const codeOf = (error: unknown) => (error as { code?: unknown })?.code;

/**
 * Creates the database if missing, then brings its schema up to date. Safe to run from several
 * instances at once: a lost CREATE DATABASE race is fine, and migrations wait for node-pg-migrate's
 * advisory lock. Retries while Postgres is still starting (containers start in any order).
 */
export async function prepareDatabase(databaseUrl: string, log: Logger, options: { timeoutMs?: number } = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  // DATABASE_URL with several hosts: the schema is made on the one that accepts writes.
  if (hostUrls(databaseUrl).length > 1) {
    let primary = '';
    await retrying('find the primary', deadline, log, () => true, async () => void (primary = await locatePrimary(databaseUrl)));
    databaseUrl = primary;
  }
  await retrying('create database', deadline, log, isStarting, () => createDatabaseIfMissing(databaseUrl, log));
  await retrying('migrate', deadline, log, (e) => isStarting(e) || isLocked(e), () => migrate(databaseUrl, log));
}

async function retrying(what: string, deadline: number, log: Logger, retryable: (e: unknown) => boolean, fn: () => Promise<void>) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!retryable(error) || Date.now() >= deadline) throw new Error(`database ${what} failed`, { cause: error });
      log.debug(`database ${what}: retrying`, { attempt, error });
      await sleep(Math.min(1_000, 50 * 2 ** attempt));
    }
  }
}

/** Postgres not accepting connections yet. */
function isStarting(error: unknown): boolean {
  const code = codeOf(error);
  return code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === '57P03';
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

async function migrate(databaseUrl: string, log: Logger): Promise<void> {
  const applied = await runner({
    databaseUrl,
    dir: MIGRATIONS_DIR,
    migrationsTable: MIGRATIONS_TABLE,
    direction: 'up',
    // Every pending migration or none: a failed boot leaves the schema as it was.
    singleTransaction: true,
    checkOrder: true,
    logger: {
      debug: (msg) => log.debug(msg),
      info: (msg) => log.debug(msg),
      // A lost race for the lock also fails to release it; that is expected, not a warning.
      warn: (msg) => (/release migration lock/.test(msg) ? log.debug(msg) : log.warn(msg)),
      error: (msg) => log.error(msg),
    },
  });
  if (applied.length > 0) log.info('database migrated', { migrations: applied.map((m) => m.name) });
}

/**
 * The pool of a DATABASE_URL (its primary among several hosts, following a failover: PrimaryPool)
 * or of DATABASE_READ_URL (a replica).
 */
export async function createPool(databaseUrl: string, log: Logger): Promise<pg.Pool> {
  const config = {
    max: 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    // A report query or projection batch never needs this long; a stuck one must not hold a slot.
    statement_timeout: 30_000,
    application_name: 'mfa-reporting',
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
