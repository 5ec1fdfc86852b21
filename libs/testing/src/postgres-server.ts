import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { alive, childPids } from './child-server.js';
import { isReady, postgresBinDir, postgresUser } from './postgres-tools.js';
import { freePort } from './stack.js';

export interface PostgresServerProcess {
  port: number;
  /** The current postmaster's process id (a restart changes it). */
  readonly pid: number;
  dataDir: string;
  /** `postgres://postgres@127.0.0.1:<port>/<database>` (trust authentication). */
  url(database?: string): string;
  /** What the server printed so far, over every run. */
  output(): string;
  /**
   * Kills the postmaster by its process id (SIGKILL unless told otherwise: a crash) and waits until
   * it and every process it had started have exited, so restart() can take the data directory.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and data directory (crash recovery on a SIGKILL). */
  restart(): Promise<void>;
  /** Stops the server (fast shutdown) and removes its data directory. */
  stop(): Promise<void>;
}

/**
 * A Postgres cluster of a test's own: initdb into a new temporary directory (trust authentication
 * for `postgres`, 127.0.0.1 only, its socket in that directory), then the postmaster as a child
 * process on a free port, so a test can kill it by its process id and start it again. Run as root,
 * both run as the `postgres` user (initdb refuses root). The binaries come from `PG_BIN_DIR`, or
 * Debian's /usr/lib/postgresql/<newest>/bin, or the PATH. fsync is off: a killed process loses no
 * written data (the page cache survives it), and the test machine stays quiet.
 */
export async function startPostgresServer(options: { port?: number } = {}): Promise<PostgresServerProcess> {
  const bin = postgresBinDir();
  const port = options.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), 'mfa-pg-'));
  const dataDir = join(dir, 'data');
  const owner = process.getuid?.() === 0 ? postgresUser() : undefined;
  let output = '';
  let child: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  const running = () => child?.pid !== undefined && child.exitCode === null && child.signalCode === null;
  // If the test process dies without cleaning up, its cluster must not outlive it.
  const onExit = () => {
    if (running()) child!.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (!running()) return;
    const postmaster = child!.pid!;
    const children = childPids(postmaster);
    child!.kill(signal);
    await exited;
    // Its children notice the postmaster's death and exit; the shared memory is free once they have.
    const deadline = Date.now() + 10_000;
    while (children.some(alive)) {
      if (Date.now() > deadline) {
        for (const pid of children.filter(alive)) process.kill(pid, 'SIGKILL');
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const launch = async () => {
    const args = ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=off', '-c', 'max_connections=100'];
    child = spawn(join(bin, 'postgres'), args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], ...owner });
    let spawnError: Error | undefined;
    child.once('error', (error) => (spawnError = error));
    for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
    exited = once(child, 'exit');
    const deadline = Date.now() + 30_000;
    // Ready once it accepts connections: after crash recovery, on a restart.
    while (!(await isReady(bin, port))) {
      if (spawnError) throw new Error('cannot start postgres (PG_BIN_DIR)', { cause: spawnError });
      if (child.exitCode !== null) throw new Error(`postgres exited with ${child.exitCode}: ${output.trim().slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`postgres not ready on ${port}: ${output.trim().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const stop = async () => {
    await kill('SIGINT');
    process.removeListener('exit', onExit);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    if (owner) await chown(dir, owner.uid, owner.gid);
    await promisify(execFile)(join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { cwd: dir, ...owner });
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    port,
    get pid() {
      return child!.pid!;
    },
    dataDir,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    output: () => output,
    kill,
    async restart() {
      await kill('SIGKILL');
      try {
        await launch();
      } catch (error) {
        await kill('SIGKILL');
        throw error;
      }
    },
    stop,
  };
}
