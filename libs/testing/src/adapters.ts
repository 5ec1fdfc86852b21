import { it } from 'node:test';
import { testEnv } from './env.js';

// The clients are imported when a probe runs, not here: unit tests import @mfa/testing (for its
// factories) and must not load NATS, Redis and Postgres clients they never use.

/** The servers an integration test talks to for real. */
type RealAdapter = 'nats' | 'redis' | 'postgres';

interface Adapters {
  real: readonly RealAdapter[];
  /** Outside paid APIs replaced by a fake that speaks the vendor's wire protocol, e.g. 'twilio'. */
  fake?: readonly string[];
}

const reachable = new Map<RealAdapter, Promise<void>>();

/** Fails with a clear message when a server the test declares is not there (instead of a timeout deep inside). */
function ensureReachable(adapter: RealAdapter): Promise<void> {
  let probe = reachable.get(adapter);
  if (!probe) {
    probe = (async () => {
      try {
        if (adapter === 'nats') {
          const { connect } = await import('@nats-io/transport-node');
          await (await connect({ servers: testEnv.natsUrl, timeout: 2_000 })).close();
        }
        if (adapter === 'redis') {
          const { Redis } = await import('ioredis');
          const redis = new Redis(testEnv.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
          try {
            await redis.connect();
            await redis.ping();
          } finally {
            redis.disconnect();
          }
        }
        if (adapter === 'postgres') {
          const { default: pg } = await import('pg');
          const client = new pg.Client({ connectionString: new URL('/postgres', testEnv.databaseUrl).toString(), connectionTimeoutMillis: 2_000 });
          try {
            await client.connect();
          } finally {
            await client.end().catch(() => undefined);
          }
        }
      } catch (error) {
        throw new Error(`this test needs a real ${adapter} and cannot reach it`, { cause: error });
      }
    })();
    reachable.set(adapter, probe);
  }
  return probe;
}

const describeAdapters = (adapters: Adapters) =>
  `[real: ${adapters.real.join(', ') || 'none'}${adapters.fake?.length ? ` · fake: ${adapters.fake.join(', ')}` : ''}]`;

/**
 * An integration test that says which adapters are real: the title names them (so the test
 * report shows what each test exercised), and each declared server is checked before the test.
 * Everything not declared real is either not used by the test or a wire-protocol fake.
 */
export function itWith(adapters: Adapters, title: string, fn: () => Promise<void>, options: { timeout?: number } = {}): void {
  it(`${title} ${describeAdapters(adapters)}`, options, async () => {
    await Promise.all(adapters.real.map(ensureReachable));
    await fn();
  });
}
