import pg from 'pg';
import { isTransientDependencyError } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';

/**
 * `DATABASE_URL` may name several hosts, as libpq does (`postgres://user@pg1:5432,pg2:5432/mfa`):
 * a primary and the standbys that may be promoted in its place. Returns one single-host URL per
 * host, in order; a URL with one host comes back as it is.
 */
export function hostUrls(databaseUrl: string): string[] {
  const match = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/.exec(databaseUrl);
  if (!match) return [databaseUrl];
  const hosts = match[3]!.split(',').map((h) => h.trim()).filter(Boolean);
  if (hosts.length <= 1) return [databaseUrl];
  return hosts.map((host) => `${match[1]}${match[2] ?? ''}${host}${match[4]}`);
}

/** The same server's `postgres` database (a single-host URL). */
function maintenanceUrl(url: string): string {
  const parsed = new URL(url);
  parsed.pathname = '/postgres';
  return parsed.toString();
}

/**
 * A DATABASE_URL as a log line or an error may show it: the hosts, their ports and the database,
 * nothing else. Built from the parts rather than by masking, since a password can hide in more
 * places than `user:password@` (libpq and pg take `?password=` too, and any query parameter may
 * carry one: `sslpassword`, a key file's path); the user name goes as well, as it helps no one
 * reading the line about a host. A URL that does not parse shows as a placeholder, never as it is.
 */
export function shown(url: string): string {
  // Userinfo ends at the last '@' before the path: a password's own '@', if not escaped, goes with it.
  const match = /^(postgres(?:ql)?:\/\/)(?:[^/?#]*@)?([^/?#]*)(\/[^?#]*)?/.exec(url);
  const hosts = match?.[2] ?? '';
  const database = match?.[3] ?? '';
  // Anything but host names, addresses, ports and a plain database name: not shown at all.
  if (!match || !/^[\w.\-[\]:,%]*$/.test(hosts) || !/^(\/[\w.\-%$]*)?$/.test(database)) return '(DATABASE_URL not shown: it does not parse)';
  return `${match[1]}${hosts}${database}`;
}

/**
 * The first host of `databaseUrl` that accepts writes (`pg_is_in_recovery()` false: a primary, or
 * a standby promoted since), as a single-host URL. Throws when none does.
 */
export async function locatePrimary(databaseUrl: string): Promise<string> {
  const urls = hostUrls(databaseUrl);
  if (urls.length === 1) return urls[0]!;
  const problems: string[] = [];
  for (const url of urls) {
    // The maintenance database: the service's own may not exist yet (prepareDatabase creates it).
    const client = new pg.Client({ connectionString: maintenanceUrl(url), connectionTimeoutMillis: 3_000 });
    try {
      await client.connect();
      const { rows } = await client.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby');
      if (!rows[0]!.standby) return url;
      problems.push(`${shown(url)}: a standby`);
    } catch (error) {
      problems.push(`${shown(url)}: ${(error as Error).message}`);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  throw Object.assign(new Error(`DATABASE_URL: no host accepts writes (${problems.join('; ')})`), { code: '08006' });
}

/** SQLSTATE 25006 read_only_sql_transaction: the host became (or still is) a standby. */
const isReadOnly = (error: unknown) => (error as { code?: unknown })?.code === '25006';

/**
 * A pg.Pool on the primary among DATABASE_URL's hosts that follows a failover: when a query meets
 * a connection failure or a read-only host, the hosts are probed again (at most every 500 ms) and
 * the pool moves to the one that now accepts writes. The query that failed still fails (the
 * projection's consumer retries its batch, which is idempotent); the next one goes to the new
 * primary. With one host it is a plain pg.Pool on it: a restarted primary is reconnected to.
 */
export class PrimaryPool extends pg.Pool {
  private current: pg.Pool;
  private currentUrl: string;
  private relocating: Promise<void> | undefined;
  private lastRelocation = 0;

  constructor(
    private readonly databaseUrl: string,
    private readonly poolConfig: Omit<pg.PoolConfig, 'connectionString'>,
    // Not `log`: pg.Pool calls its own `this.log(...)` (a debug function), in end() among others.
    private readonly logger: Logger,
    firstUrl: string,
  ) {
    super({ ...poolConfig, max: 0 });
    this.currentUrl = firstUrl;
    this.current = this.open(firstUrl);
  }

  private open(url: string): pg.Pool {
    const pool = new pg.Pool({ ...this.poolConfig, connectionString: url });
    // An idle client losing its connection must not crash the process; the pool replaces it.
    pool.on('error', (error) => this.logger.warn('idle database connection lost', { error }));
    return pool;
  }

  private failed(error: unknown): void {
    if (hostUrls(this.databaseUrl).length === 1 || !(isReadOnly(error) || isTransientDependencyError(error))) return;
    if (this.relocating || Date.now() - this.lastRelocation < 500) return;
    this.lastRelocation = Date.now();
    this.relocating = locatePrimary(this.databaseUrl)
      .then((url) => {
        if (url === this.currentUrl) return;
        const old = this.current;
        this.current = this.open(url);
        this.currentUrl = url;
        this.logger.warn('database primary moved: writing to the new one', { primary: shown(url) });
        void old.end().catch(() => undefined);
      })
      .catch((e: unknown) => this.logger.warn('no database primary found yet', { error: e }))
      .finally(() => (this.relocating = undefined));
  }

  // pg.Pool's overloads (callback and promise forms): the project uses the promise forms only.
  override query(...args: unknown[]): never {
    const result = (this.current.query as (...a: unknown[]) => Promise<unknown>)(...args);
    return result.catch((error: unknown) => {
      this.failed(error);
      throw error;
    }) as never;
  }

  override connect(): never {
    return this.current.connect().then((client) => {
      // For this checkout only: the pool keeps its clients, so a listener left on at release would
      // pile up, one more per transaction (erasures, fraud batches) for as long as the client lives.
      const onError = (error: Error) => this.failed(error);
      client.on('error', onError);
      const release = client.release;
      client.release = (destroy?: Error | boolean) => {
        client.off('error', onError);
        release(destroy);
      };
      return client;
    }, (error: unknown) => {
      this.failed(error);
      throw error;
    }) as never;
  }

  override async end(): Promise<void> {
    await this.relocating;
    await Promise.all([this.current.end().catch(() => undefined), super.end().catch(() => undefined)]);
  }
}
