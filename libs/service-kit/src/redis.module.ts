import { Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisClient } from '@mfa/projection';
import type { Logger } from '@mfa/telemetry';
import { ConfigError } from './config.js';
import type { HealthCheck } from './health.js';
import { describeRedis, type RedisConnection } from './redis-connection.js';
import { coalesceWrites } from './redis-writes.js';
import { ReplicatedWrites, type ReplicatedWritesOptions } from './replicated-writes.js';
import { REDIS } from './tokens.js';

interface RedisModuleOptions {
  /** REDIS_MODE and its variables, checked (redisConnectionOf). */
  connection: RedisConnection;
  /** Shown by CLIENT LIST: which service holds the connection. */
  connectionName: string;
  log: Logger;
  /** How long a cluster or sentinel set-up may take to answer at boot; default 30 s. */
  readyTimeoutMs?: number;
  /** REDIS_WAIT_REPLICAS and REDIS_WAIT_MS (replicatedWritesOf); none: decisions do not wait. */
  wait?: ReplicatedWritesOptions;
  /**
   * How long a command may wait for its answer before it fails (as an outage: the request answers
   * `unavailable`, a consumer retries). Default: REDIS_COMMAND_TIMEOUT_MS, plus REDIS_WAIT_MS when
   * decisions wait for replicas (WAIT holds its answer that long).
   */
  commandTimeoutMs?: number;
}

/**
 * A command's answer is awaited this long at most (REDIS_WAIT_MS added where decisions WAIT). Every
 * script is a few keys of one slot and answers in well under a millisecond, so only a server that
 * does not answer (hung, stopped, cut off by a partition, busy with a runaway script) takes this
 * long; without a bound its commands, and the requests and consumers awaiting them, waited forever.
 * Also, a command written on a connection that closes and connects again at once is never answered
 * (`autoResendUnfulfilledCommands: false` drops it without settling it): the bound fails it too.
 */
export const REDIS_COMMAND_TIMEOUT_MS = 2_000;
/**
 * In cluster mode ioredis follows a failover itself (a command meeting a dead master is sent again
 * until the slot has a master): a command is given the IdP's whole deadline (5 s) for that, and
 * only one that no master answered by then fails.
 */
export const REDIS_CLUSTER_COMMAND_TIMEOUT_MS = 5_000;
/**
 * For a service whose scripts take decisions its callers cannot safely ask for twice
 * (auth-challenge: a start sends an SMS or places a call, a verify counts an attempt): a command
 * that timed out may still run once Redis gets to it, so answering `unavailable` ("nothing was
 * decided, retry") could start a second challenge for the IdP's retry. Longer than the IdPs'
 * deadlines (5 s): a Redis that stalls is answered late, and the transport drops an answer past
 * its deadline, as it did with no timeout; only a server that never answers fails the command.
 */
export const REDIS_DECISION_COMMAND_TIMEOUT_MS = 10_000;

/** The command timeout of a connection (see REDIS_COMMAND_TIMEOUT_MS). */
export function redisCommandTimeoutMs(options: Pick<RedisModuleOptions, 'connection' | 'wait' | 'commandTimeoutMs'>): number {
  if (options.commandTimeoutMs !== undefined) return options.commandTimeoutMs;
  const base = options.connection.mode === 'cluster' ? REDIS_CLUSTER_COMMAND_TIMEOUT_MS : REDIS_COMMAND_TIMEOUT_MS;
  return base + (options.wait && options.wait.replicas > 0 ? options.wait.timeoutMs : 0);
}

/**
 * The Redis client of a service, in the mode REDIS_MODE names. The commands of one event-loop turn
 * leave in one write per connection (`coalesceWrites`; in cluster mode one write per node), which
 * is what the hot path's one-script-per-request relies on: ioredis's auto-pipelining did the same
 * at a cost in garbage collection that this does not have. A command fails after
 * a few reconnect attempts instead of queueing for long: the request answers `unavailable`, a
 * consumer naks and retries.
 *
 * A command already written when the connection dropped is not sent again by the connection
 * (`autoResendUnfulfilledCommands: false`): Redis may have run it, and the state-changing scripts
 * (a verify counting an attempt, a start drawing a challenge) must not run twice for one request.
 * Commands not yet written (the offline queue) are sent once the connection is back.
 *
 * Cluster: the seeds of REDIS_NODES find the others (CLUSTER SLOTS); reads and writes go to the
 * masters only (a replica may lag); a command that meets a failover (CLUSTERDOWN, TRYAGAIN, a
 * closed connection) is tried again every 100 ms, and MOVED follows the promoted replica.
 * Sentinel: the master's address comes from the sentinels, and the connection checks the role on
 * every connect (an old master that comes back is not written to); a master demoted under an open
 * connection answers READONLY, on which the connection asks the sentinels again. A master that
 * does not answer at all (hung, or cut off by a partition) keeps its socket open: a connection
 * that receives nothing for the command timeout while commands wait (`socketTimeout`) is dropped
 * and made again through the sentinels, which name the replica they promoted (until then the
 * commands fail fast, as an outage, instead of waiting for the old master to come back and
 * answer them as a demoted master whose writes are lost). (ioredis's failoverDetector is not used:
 * its sentinel subscriptions outlive disconnect() and keep reconnecting.)
 *
 * Every command fails after the command timeout (redisCommandTimeoutMs) without an answer.
 */
export function createRedis(options: Omit<RedisModuleOptions, 'readyTimeoutMs'>): RedisClient {
  const { connection } = options;
  const commandTimeout = redisCommandTimeoutMs(options);
  const common: RedisOptions = {
    connectionName: options.connectionName,
    maxRetriesPerRequest: 2,
    commandTimeout,
    autoResendUnfulfilledCommands: false,
    ...(connection.password ? { password: connection.password } : {}),
  };
  let redis: RedisClient;
  switch (connection.mode) {
    case 'standalone':
      redis = new Redis(connection.url, common);
      coalesceWrites(redis);
      break;
    case 'cluster': {
      const cluster = new Cluster(connection.nodes, {
        scaleReads: 'master',
        redisOptions: common,
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        retryDelayOnTryAgain: 100,
        retryDelayOnMoved: 50,
        slotsRefreshTimeout: 2_000,
        // ioredis's own periodic refresh re-arms its timer when a refresh that was in flight at
        // disconnect() ends, and that timer keeps a closed client's process alive: the same
        // refresh every 2 s runs here instead, on a timer that does not hold the process.
        slotsRefreshInterval: 0,
        clusterRetryStrategy: (times) => Math.min(100 * times, 1_000),
      });
      const refresh = setInterval(() => {
        if (cluster.status === 'ready') cluster.refreshSlotsCache();
      }, 2_000);
      refresh.unref();
      cluster.once('end', () => clearInterval(refresh));
      // A connection to each master, made as the slots are learned (before it connects).
      cluster.on('+node', (node: Redis) => coalesceWrites(node));
      redis = cluster;
      break;
    }
    case 'sentinel':
      redis = new Redis({
        ...common,
        sentinels: connection.sentinels,
        name: connection.name,
        role: 'master',
        ...(connection.sentinelPassword ? { sentinelPassword: connection.sentinelPassword } : {}),
        sentinelRetryStrategy: (times) => Math.min(100 * times, 1_000),
        // A master that stopped answering: drop the connection and ask the sentinels again.
        socketTimeout: commandTimeout,
        connectTimeout: commandTimeout,
        // A master demoted while we are connected (a manual failover, or sentinel turning an old
        // master that came back into a replica) refuses writes with READONLY: reconnect, which
        // asks the sentinels again, and send the command anew (Redis refused it before running it).
        reconnectOnError: (error) => (/^READONLY/.test(error.message) ? 2 : false),
        retryStrategy: (times) => Math.min(50 * times, 500),
      });
      coalesceWrites(redis);
      break;
  }
  let lastLogged = 0;
  redis.on('error', (error: Error) => {
    // ioredis emits one error per reconnect attempt; one line every 10 s is enough.
    if (Date.now() - lastLogged < 10_000) return;
    lastLogged = Date.now();
    options.log.warn('redis connection error', { error });
  });
  return redis;
}

/**
 * A cluster or a sentinel set-up must answer at boot: a service never starts half-configured on
 * seeds or sentinels that are wrong. Standalone keeps its lazy connect (a service may start
 * before Redis, as under compose; its commands wait in the offline queue).
 */
export async function whenRedisReady(redis: RedisClient, connection: RedisConnection, timeoutMs: number): Promise<void> {
  if (connection.mode === 'standalone' || redis.status === 'ready') return;
  const variable = connection.mode === 'cluster' ? 'REDIS_NODES' : 'REDIS_SENTINELS';
  await new Promise<void>((resolve, reject) => {
    let lastError: unknown;
    const onError = (error: unknown) => (lastError = error);
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      redis.off('error', onError);
      redis.disconnect();
      const cause = lastError instanceof Error ? `: ${lastError.message}` : '';
      reject(new ConfigError(`${variable}: Redis (${describeRedis(connection)}) not ready within ${timeoutMs / 1000} s${cause}`, { cause: lastError }));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      redis.off('error', onError);
      resolve();
    };
    redis.once('ready', onReady);
    redis.on('error', onError);
  });
}

/**
 * Eviction policies under which Redis may drop keys that have no TTL: the user projection has
 * none, and a user evicted would look absent. `noeviction` and the `volatile-*` policies (which
 * evict only keys with a TTL: challenges, counters) are safe.
 */
const UNSAFE_EVICTION = /^allkeys-/;

/** Redis answers PING, and its eviction policy cannot drop projected users (docs/operations.md, Redis). */
@Injectable()
export class RedisHealth implements HealthCheck {
  readonly name = 'redis';
  constructor(@Inject(REDIS) private readonly redis: RedisClient) {}
  async check(): Promise<void> {
    // In a cluster, every master: each holds a share of the users.
    const nodes = this.redis instanceof Cluster ? this.redis.nodes('master') : [this.redis];
    if (nodes.length === 0) throw new Error('no master known');
    for (const node of nodes) {
      const answer = await node.ping();
      if (answer !== 'PONG') throw new Error(`unexpected PING answer ${answer}`);
      // INFO rather than CONFIG GET: managed Redis services often disable CONFIG.
      const policy = /^maxmemory_policy:(\S+)/m.exec(await node.info('memory'))?.[1];
      if (policy && UNSAFE_EVICTION.test(policy)) {
        throw new Error(`maxmemory-policy ${policy} may evict projected users; use noeviction or a volatile-* policy`);
      }
    }
  }
}

/** Closes the connection after the transport stopped taking requests and events. */
@Injectable()
class RedisLifecycle implements OnApplicationShutdown {
  constructor(
    @Inject(REDIS) private readonly redis: RedisClient,
    private readonly writes: ReplicatedWrites,
  ) {}
  async onApplicationShutdown(): Promise<void> {
    await this.writes.stop();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/** Redis for the services that use it: the client under REDIS, its health check, its close. */
@Global()
@Module({})
export class RedisModule {
  static forRoot(options: RedisModuleOptions): DynamicModule {
    return {
      module: RedisModule,
      providers: [
        {
          provide: REDIS,
          useFactory: async () => {
            const redis = createRedis(options);
            await whenRedisReady(redis, options.connection, options.readyTimeoutMs ?? 30_000);
            options.log.info('redis', { mode: options.connection.mode, at: describeRedis(options.connection) });
            return redis;
          },
        },
        {
          provide: ReplicatedWrites,
          useFactory: async (redis: RedisClient) => {
            const wait = options.wait ?? { replicas: 0, timeoutMs: 100 };
            if (wait.replicas === 0) return new ReplicatedWrites(redis, wait, options.log, false);
            // A connection of its own: WAIT blocks the connection it is sent on.
            const own = createRedis({ ...options, connectionName: `${options.connectionName}-decisions` });
            await whenRedisReady(own, options.connection, options.readyTimeoutMs ?? 30_000);
            return new ReplicatedWrites(own, wait, options.log, true);
          },
          inject: [REDIS],
        },
        RedisHealth,
        RedisLifecycle,
      ],
      exports: [REDIS, RedisHealth, ReplicatedWrites],
    };
  }
}
