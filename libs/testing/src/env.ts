import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';

/** The tests' database (TEST_DATABASE_URL); the others are named on its server (testDatabaseUrl). */
const baseDatabaseUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/mfa_test';

/**
 * A database on the tests' Postgres server (`mfa_e2e`, say). A test lane with a NATS and a Redis
 * of its own (scripts/test.mjs) sets MFA_TEST_DATABASE_SUFFIX, which every database name takes
 * (the tests' own too), so its stacks never project into the same tables as another lane's.
 */
export function testDatabaseUrl(name: string): string {
  const url = new URL(baseDatabaseUrl);
  url.pathname = `/${name}${process.env.MFA_TEST_DATABASE_SUFFIX ?? ''}`;
  return url.toString();
}

/**
 * Test support: the real NATS, Redis and Postgres of the machine (or of CI), addressed by the
 * same environment variables as the services. Tests isolate themselves by tenant, never by
 * replacing a server with a stand-in.
 */
export const testEnv = {
  natsUrl: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
  redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  /** Tests use their own database so they never touch a developer's `mfa` data. */
  databaseUrl: process.env.MFA_TEST_DATABASE_SUFFIX ? testDatabaseUrl(new URL(baseDatabaseUrl).pathname.slice(1)) : baseDatabaseUrl,
};

/** A tenant id no other test (or earlier run) uses. */
export function uniqueTenant(prefix = 't'): string {
  return `${prefix}-${randomUUID().slice(0, 13)}`;
}

export function uniqueUser(prefix = 'user'): string {
  return `${prefix}.${randomUUID().slice(0, 8)}@contoso.example`;
}

/** TOTP code from oathtool, an independent implementation (apt package oathtool). */
export function oathtoolTotp(base32Secret: string, options: { at?: Date; digits?: number; period?: number; algorithm?: 'SHA1' | 'SHA256' } = {}): string {
  const args = [options.algorithm === 'SHA256' ? '--totp=sha256' : '--totp', '--base32', `--digits=${options.digits ?? 6}`, `--time-step-size=${options.period ?? 30}s`];
  if (options.at) args.push(`--now=${options.at.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`);
  args.push(base32Secret);
  return execFileSync('oathtool', args, { encoding: 'utf8' }).trim();
}

export function hasOathtool(): boolean {
  try {
    execFileSync('oathtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
}
