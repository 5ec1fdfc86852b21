import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

// The Postgres binaries and user the Postgres harnesses (postgres-server, postgres-replica) share.
// Internal: the package's entry point does not export it.

export function postgresBinDir(): string {
  if (process.env.PG_BIN_DIR) return process.env.PG_BIN_DIR;
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => existsSync(join(debian, v, 'bin', 'postgres')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(debian, versions[0], 'bin');
  }
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('no Postgres binaries found: set PG_BIN_DIR');
  }
}

export function postgresUser(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** pg_isready, without blocking the event loop (a test may drive load meanwhile). */
export async function isReady(bin: string, port: number): Promise<boolean> {
  try {
    await promisify(execFile)(join(bin, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port), '-t', '2']);
    return true;
  } catch {
    return false;
  }
}

/**
 * One SQL statement through psql as `postgres` (trust authentication), its first row's columns
 * separated by `|`: what a harness asks a server without loading a Postgres client.
 */
export async function psql(bin: string, port: number, sql: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(join(bin, 'psql'), ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', sql], {
      timeout: 10_000,
    });
    return stdout.trim();
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`psql on port ${port} failed for ${sql}${stderr ? `: ${stderr}` : ''}`, { cause: error });
  }
}
