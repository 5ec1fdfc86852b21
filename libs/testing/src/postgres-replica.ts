import { execFile } from 'node:child_process';
import { appendFile, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { childServer, cleanUpOnExit, freePorts, pollUntil, type ChildServer } from './child-server.js';
import { isReady, postgresBinDir, postgresUser, psql } from './postgres-tools.js';

export interface PostgresNode {
  port: number;
  /** The current postmaster's process id (a restart changes it). */
  readonly pid: number;
  dataDir: string;
  /** `postgres://postgres@127.0.0.1:<port>/<database>` (trust authentication). */
  url(database?: string): string;
  running(): boolean;
  /** What the server printed so far, over every run. */
  output(): string;
  /** Whether the server is a standby now (`pg_is_in_recovery()`). */
  inRecovery(): Promise<boolean>;
  /**
   * Kills the postmaster by its process id (SIGKILL unless told otherwise: a crash) and waits until
   * it and every process it had started have exited, so restart() can take the data directory.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts the server again on the same port and data directory (crash recovery after a SIGKILL)
   * and waits until it accepts connections. It comes back as what its data directory says: the
   * replica as a standby of the primary until it was promoted, the primary as a primary, even when
   * the replica was promoted meanwhile (then there are two primaries, on diverged timelines: nothing
   * here rewinds it).
   */
  restart(): Promise<void>;
}

export interface PostgresPrimaryWithReplica {
  primary: PostgresNode;
  /** A streaming hot standby of the primary (read-only until promoted). */
  replica: PostgresNode;
  /**
   * Promotes the replica to a primary (`pg_ctl promote`, which waits for it) and waits until
   * `pg_is_in_recovery()` is false there. The primary, dead or alive, is not told.
   */
  promoteReplica(timeoutMs?: number): Promise<void>;
  /** WAL bytes the primary has written that the replica has not replayed yet (both must answer). */
  replicationLagBytes(): Promise<number>;
  /** Waits until the replica has replayed everything the primary had written when called. */
  waitForReplica(timeoutMs?: number): Promise<void>;
  /** Stops both (fast shutdown) and removes their data directories. */
  stop(): Promise<void>;
}

/**
 * A Postgres primary and a streaming replica of a test's own, for failover tests: the primary as
 * startPostgresServer makes one (initdb into a new temporary directory, trust authentication for
 * `postgres`, 127.0.0.1 only, fsync off, run as the `postgres` user when root) with WAL for a
 * replica (wal_level=replica, max_wal_senders, a `replication` entry in pg_hba.conf for 127.0.0.1),
 * then the replica made from it with `pg_basebackup -R` (standby.signal, primary_conninfo) on a
 * replication slot, so the primary keeps the WAL the replica has not received, on a free port of
 * its own with hot_standby on. Both are postmasters this process started: a test kills either by
 * its process id and promotes the replica. Binaries as for startPostgresServer (`PG_BIN_DIR`).
 *
 * `synchronous`: the primary's commits wait until the replica has the WAL
 * (`synchronous_standby_names = '*'`, set on the primary after the base backup, so a promoted
 * replica waits for no standby), as docs/operations.md asks of a deployment whose report must
 * keep every row across a failover. Do not kill the replica of such a pair while the primary
 * takes writes: they wait for it.
 */
export async function startPostgresPrimaryWithReplica(options: { slotName?: string; synchronous?: boolean } = {}): Promise<PostgresPrimaryWithReplica> {
  const bin = postgresBinDir();
  const [primaryPort, replicaPort] = await freePorts(2);
  const dir = await mkdtemp(join(tmpdir(), 'mfa-pg-replica-'));
  const owner = process.getuid?.() === 0 ? postgresUser() : undefined;
  const slot = options.slotName ?? 'mfa_test_replica';
  const run = (command: string, args: string[]) =>
    promisify(execFile)(join(bin, command), args, { cwd: dir, timeout: 60_000, ...owner }).catch((error: Error & { stderr?: string }) => {
      throw new Error(`${command} failed: ${error.stderr?.trim() || error.message}`, { cause: error });
    });
  const settings = (port: number) =>
    [
      ...[`port=${port}`, 'listen_addresses=127.0.0.1', `unix_socket_directories=${dir}`, 'fsync=off', 'max_connections=100'],
      ...['wal_level=replica', 'max_wal_senders=10', 'max_replication_slots=10', 'hot_standby=on'],
    ].flatMap((s) => ['-c', s]);
  const processes: ChildServer[] = [];
  const unregister = cleanUpOnExit(() => processes, dir);

  const node = (name: 'primary' | 'replica', port: number): PostgresNode => {
    const dataDir = join(dir, name);
    const proc = childServer({
      label: `postgres ${name} (port ${port})`,
      command: join(bin, 'postgres'),
      binEnv: 'PG_BIN_DIR',
      args: ['-D', dataDir, ...settings(port)],
      cwd: dir,
      owner,
      // Ready once it accepts connections: after crash recovery, on a restart; a standby once it
      // has reached a consistent state.
      ready: () => isReady(bin, port),
      readyTimeoutMs: 30_000,
      waitForChildren: true,
    });
    processes.push(proc);
    return {
      port,
      get pid() {
        return proc.pid;
      },
      dataDir,
      url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
      running: proc.running,
      output: proc.output,
      inRecovery: async () => (await psql(bin, port, 'SELECT pg_is_in_recovery()')) === 't',
      kill: proc.kill,
      async restart() {
        await proc.kill('SIGKILL');
        await proc.launch();
      },
    };
  };
  const primary = node('primary', primaryPort!);
  const replica = node('replica', replicaPort!);

  const replicationLagBytes = async () => {
    const replayed = await psql(bin, replica.port, 'SELECT pg_last_wal_replay_lsn()');
    if (!replayed) throw new Error('the replica has replayed no WAL (is it a standby?)');
    return Number(await psql(bin, primary.port, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${replayed}')`));
  };

  const stop = async () => {
    // The replica first: the primary's fast shutdown would wait for its WAL sender otherwise.
    for (const proc of [...processes].reverse()) await proc.kill('SIGINT');
    unregister();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    if (owner) await chown(dir, owner.uid, owner.gid);
    await run('initdb', ['-D', primary.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
    // initdb -A trust writes such an entry already; stated here, the replica does not depend on its template.
    await appendFile(join(primary.dataDir, 'pg_hba.conf'), '\n# the replica (postgres-replica.ts)\nhost replication postgres 127.0.0.1/32 trust\n');
    await processes[0]!.launch();
    await run('pg_basebackup', ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', replica.dataDir, '-R', '-X', 'stream', '-C', '-S', slot, '--no-sync']);
    await processes[1]!.launch();
    await pollUntil(
      'the replica to stream from the primary',
      async () => ((await psql(bin, primary.port, `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'`)) === '1' ? true : undefined),
      30_000,
      () => replica.output().trim().split('\n').slice(-3).join(' | '),
    );
    if (options.synchronous) {
      await psql(bin, primary.port, `ALTER SYSTEM SET synchronous_standby_names = '*'`);
      await psql(bin, primary.port, 'SELECT pg_reload_conf()');
      await pollUntil(
        'the replica to become the synchronous standby',
        async () => ((await psql(bin, primary.port, `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'`)) === '1' ? true : undefined),
        30_000,
      );
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    primary,
    replica,
    async promoteReplica(timeoutMs = 30_000) {
      if (!replica.running()) throw new Error('the replica is not running: restart it before promoting it');
      await run('pg_ctl', ['promote', '-D', replica.dataDir, '-w', '-t', String(Math.ceil(timeoutMs / 1000))]);
      await pollUntil('the promoted replica to leave recovery', async () => ((await replica.inRecovery()) ? undefined : true), timeoutMs);
    },
    replicationLagBytes,
    async waitForReplica(timeoutMs = 30_000) {
      const target = await psql(bin, primary.port, 'SELECT pg_current_wal_lsn()');
      let seen = '';
      await pollUntil(
        `the replica to replay the primary's WAL up to ${target}`,
        async () => {
          seen = await psql(bin, replica.port, `SELECT pg_last_wal_replay_lsn() >= '${target}'::pg_lsn, pg_last_wal_replay_lsn()`);
          return seen.startsWith('t|') ? true : undefined;
        },
        timeoutMs,
        () => `replayed ${seen.split('|')[1] ?? '?'}`,
        50,
      );
    },
    stop,
  };
}
