import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { childServer, cleanUpOnExit, freePorts, pollUntil, type ChildServer } from './child-server.js';
import { answersPing, redisCommand, redisInfo, type RespValue } from './resp.js';

export interface RedisSentinelDataNode {
  port: number;
  /** `127.0.0.1:<port>`. */
  address: string;
  url: string;
  /** The current server's process id (a restart changes it). */
  readonly pid: number;
  /** Its configuration file, which sentinel rewrites (CONFIG REWRITE) when it reconfigures the node. */
  configFile: string;
  running(): boolean;
  /** What the server printed so far, over every run. */
  output(): string;
  /** Its role now, as the server itself says (INFO replication). */
  role(): Promise<'master' | 'replica'>;
  /** Kills the server by its process id (SIGKILL unless told otherwise: a crash) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts the server again on the same port from its configuration file, as a real deployment
   * would, and returns once it answers PING. It comes back EMPTY (nothing is persisted). A killed
   * master's file has no `replicaof` (sentinel could not rewrite a dead server), so it comes back
   * as a master (with no data, beside the real one) until sentinel notices and turns it into a
   * replica of the current master, which takes up to about 10 s (sentinel asks a replica for INFO
   * every 10 s). A replica's file names the master sentinel last gave it, so it comes back as its
   * replica. `asReplicaOf` starts it as a replica of that port instead (`--replicaof`).
   */
  restart(options?: { asReplicaOf?: number }): Promise<void>;
}

export interface RedisSentinelProcess {
  port: number;
  address: string;
  readonly pid: number;
  /** Its configuration file, which the sentinel rewrites with what it learns. */
  configFile: string;
  running(): boolean;
  output(): string;
  /** Kills the sentinel by its process id (SIGKILL unless told otherwise) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the sentinel again from its (rewritten) configuration file, on the same port. */
  restart(): Promise<void>;
}

export interface RedisSentinelSetup {
  /** Every sentinel, comma-separated `127.0.0.1:<port>`, as REDIS_SENTINELS takes them. */
  sentinels: string;
  /** The name the sentinels monitor the master under. */
  masterName: string;
  /** The data nodes: the first one is the master at start, the others its replicas. */
  servers: RedisSentinelDataNode[];
  sentinelProcesses: RedisSentinelProcess[];
  /** The data node on that port (throws for another port). */
  server(port: number): RedisSentinelDataNode;
  /** The master, as the first running sentinel that answers says (SENTINEL get-master-addr-by-name). */
  currentMaster(): Promise<RedisSentinelDataNode>;
  /**
   * Waits until every running sentinel names the same master, other than the one on `oldPort`, and
   * that node says it is a master; returns it.
   */
  waitForNewMaster(oldPort: number, timeoutMs?: number): Promise<RedisSentinelDataNode>;
  /**
   * Waits until the set-up is settled: every running sentinel names the same master, a running node
   * that says it is master; every other running data node is a linked replica of it; every running
   * sentinel sees those replicas and the other running sentinels, none of them down. Returns the
   * master.
   */
  waitUntilHealthy(timeoutMs?: number): Promise<RedisSentinelDataNode>;
  /** Stops every process (by its process id) and removes their directories. */
  stop(): Promise<void>;
}

/**
 * Redis with Sentinel, of a test's own: a master and `replicas` replicas (2 unless told otherwise)
 * on free ports of 127.0.0.1, and `sentinels` sentinels (3 unless told otherwise) monitoring the
 * master as `masterName` ('mymaster' unless told otherwise) with a quorum of a majority, declaring
 * it down after `downAfterMs` (1000 unless told otherwise), failover-timeout 5000, parallel-syncs 1.
 * Each process has a configuration file of its own in a new temporary directory, which sentinel
 * rewrites (a sentinel its own with what it learns, a data node's with CONFIG REWRITE when it makes
 * it a replica or a master). Nothing is persisted (no RDB, no AOF; the RDB a replica receives is
 * deleted once loaded), so a killed node comes back empty: a test can produce an empty old master
 * beside the new one. `REDIS_SERVER_BIN` names the binary (default: redis-server; a sentinel is
 * `redis-server <file> --sentinel`).
 */
export async function startRedisSentinel(
  options: { replicas?: number; sentinels?: number; masterName?: string; quorum?: number; downAfterMs?: number; failoverTimeoutMs?: number } = {},
): Promise<RedisSentinelSetup> {
  const replicaCount = options.replicas ?? 2;
  const sentinelCount = options.sentinels ?? 3;
  const masterName = options.masterName ?? 'mymaster';
  const quorum = options.quorum ?? Math.floor(sentinelCount / 2) + 1;
  const dir = await mkdtemp(join(tmpdir(), 'mfa-redis-sentinel-'));
  const processes: ChildServer[] = [];
  const unregister = cleanUpOnExit(() => processes, dir);
  const ports = await freePorts(1 + replicaCount + sentinelCount);
  const bin = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  const masterPort = ports[0]!;
  const servers: RedisSentinelDataNode[] = [];
  const sentinelProcesses: RedisSentinelProcess[] = [];

  for (const [i, port] of ports.slice(0, 1 + replicaCount).entries()) {
    const nodeDir = join(dir, String(port));
    const configFile = join(nodeDir, 'redis.conf');
    await mkdir(nodeDir);
    await writeFile(
      configFile,
      [
        'bind 127.0.0.1',
        `port ${port}`,
        `dir ${JSON.stringify(nodeDir)}`,
        'save ""',
        'appendonly no',
        // A replica's full sync leaves an RDB behind, which a restart would load: delete it.
        'rdb-del-sync-files yes',
        // A master waits 5 s for more replicas before a diskless sync unless told otherwise.
        'repl-diskless-sync-delay 0',
        // On SIGTERM a master waits up to 10 s for its replicas to catch up unless told otherwise;
        // stop() ends them all at once.
        'shutdown-timeout 0',
        ...(i === 0 ? [] : [`replicaof 127.0.0.1 ${masterPort}`]),
        '',
      ].join('\n'),
    );
    const proc = childServer({
      label: `redis-server 127.0.0.1:${port}`,
      command: bin,
      binEnv: 'REDIS_SERVER_BIN',
      args: [configFile],
      cwd: nodeDir,
      ready: () => answersPing(port),
    });
    processes.push(proc);
    servers.push({
      port,
      address: `127.0.0.1:${port}`,
      url: `redis://127.0.0.1:${port}`,
      get pid() {
        return proc.pid;
      },
      configFile,
      running: proc.running,
      output: proc.output,
      async role() {
        return (await redisInfo(port, 'replication')).role === 'master' ? 'master' : 'replica';
      },
      kill: proc.kill,
      async restart(restartOptions = {}) {
        await proc.kill('SIGKILL');
        await proc.launch(restartOptions.asReplicaOf ? ['--replicaof', '127.0.0.1', String(restartOptions.asReplicaOf)] : []);
      },
    });
  }

  for (const port of ports.slice(1 + replicaCount)) {
    const sentinelDir = join(dir, `sentinel-${port}`);
    const configFile = join(sentinelDir, 'sentinel.conf');
    await mkdir(sentinelDir);
    await writeFile(
      configFile,
      [
        'bind 127.0.0.1',
        `port ${port}`,
        `dir ${JSON.stringify(sentinelDir)}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${quorum}`,
        `sentinel down-after-milliseconds ${masterName} ${options.downAfterMs ?? 1_000}`,
        `sentinel failover-timeout ${masterName} ${options.failoverTimeoutMs ?? 5_000}`,
        `sentinel parallel-syncs ${masterName} 1`,
        '',
      ].join('\n'),
    );
    const proc = childServer({
      label: `redis sentinel 127.0.0.1:${port}`,
      command: bin,
      binEnv: 'REDIS_SERVER_BIN',
      args: [configFile, '--sentinel'],
      cwd: sentinelDir,
      ready: () => answersPing(port),
    });
    processes.push(proc);
    sentinelProcesses.push({
      port,
      address: `127.0.0.1:${port}`,
      get pid() {
        return proc.pid;
      },
      configFile,
      running: proc.running,
      output: proc.output,
      kill: proc.kill,
      async restart() {
        await proc.kill('SIGKILL');
        await proc.launch();
      },
    });
  }

  const server = (port: number) => {
    const found = servers.find((s) => s.port === port);
    if (!found) throw new Error(`no data node on port ${port} (${servers.map((s) => s.port).join(', ')})`);
    return found;
  };
  const runningSentinels = () => sentinelProcesses.filter((s) => s.running());
  const masterPortOf = async (sentinel: RedisSentinelProcess) => {
    const reply = await redisCommand(sentinel.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName]);
    if (!Array.isArray(reply)) throw new Error(`sentinel ${sentinel.address} does not know master ${masterName}`);
    return Number(reply[1]);
  };
  const describeAll = () =>
    [...servers.map((s) => `${s.address}${s.running() ? '' : ' (down)'}`), ...sentinelProcesses.map((s) => `sentinel ${s.address}${s.running() ? '' : ' (down)'}`)].join(', ');

  /** The master every running sentinel names, if they agree and it says it is a master. */
  const agreedMaster = async (): Promise<[RedisSentinelDataNode | undefined, string]> => {
    const live = runningSentinels();
    if (live.length === 0) return [undefined, 'no sentinel is running'];
    const named = await Promise.all(live.map((s) => masterPortOf(s).catch(() => undefined)));
    if (named.some((p) => p !== named[0]) || named[0] === undefined) return [undefined, `the sentinels name ${named.join(', ')}`];
    const master = server(named[0]);
    if (!master.running()) return [undefined, `the sentinels name ${master.address}, which is not running`];
    const role = await master.role().catch((e: Error) => e.message);
    if (role !== 'master') return [undefined, `the sentinels name ${master.address}, which is ${role}`];
    return [master, ''];
  };

  let lastSeen = '';
  const unhealthy = async (): Promise<[RedisSentinelDataNode | undefined, string]> => {
    const [master, why] = await agreedMaster();
    if (!master) return [undefined, why];
    const replicas = servers.filter((s) => s !== master && s.running());
    for (const replica of replicas) {
      const info = await redisInfo(replica.port, 'replication');
      if (info.role !== 'slave' || Number(info.master_port) !== master.port || info.master_link_status !== 'up') {
        return [undefined, `${replica.address}: role ${info.role}, master ${info.master_port ?? '-'}, link ${info.master_link_status ?? '-'}`];
      }
    }
    for (const sentinel of runningSentinels()) {
      const seenReplicas = fieldsOf(await redisCommand(sentinel.port, ['SENTINEL', 'REPLICAS', masterName]));
      for (const replica of replicas) {
        const seen = seenReplicas.find((r) => Number(r.port) === replica.port);
        if (seen?.flags !== 'slave') return [undefined, `sentinel ${sentinel.address} sees ${replica.address} as ${seen?.flags ?? 'unknown'}`];
      }
      const seenSentinels = fieldsOf(await redisCommand(sentinel.port, ['SENTINEL', 'SENTINELS', masterName]));
      for (const other of runningSentinels().filter((s) => s !== sentinel)) {
        const seen = seenSentinels.find((s) => Number(s.port) === other.port);
        if (seen?.flags !== 'sentinel') return [undefined, `sentinel ${sentinel.address} sees sentinel ${other.address} as ${seen?.flags ?? 'unknown'}`];
      }
    }
    return [master, ''];
  };
  const waitUntilHealthy = (timeoutMs = 30_000) =>
    pollUntil(
      `the Redis set-up monitored as ${masterName} to settle (${describeAll()})`,
      async () => {
        const [master, why] = await unhealthy().catch((error: Error) => [undefined, error.message] as const);
        lastSeen = why;
        return master;
      },
      timeoutMs,
      () => lastSeen,
    );

  const stop = async () => {
    await Promise.all(processes.map((p) => p.kill('SIGTERM')));
    unregister();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // The master first: replicas and sentinels connect to it.
    await processes[0]!.launch();
    await Promise.all(processes.slice(1).map((p) => p.launch()));
    await waitUntilHealthy();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    sentinels: sentinelProcesses.map((s) => s.address).join(','),
    masterName,
    servers,
    sentinelProcesses,
    server,
    async currentMaster() {
      let lastError: unknown;
      for (const sentinel of runningSentinels()) {
        try {
          return server(await masterPortOf(sentinel));
        } catch (error) {
          lastError = error;
        }
      }
      throw new Error(`no running sentinel names the master of ${masterName}`, { cause: lastError });
    },
    waitForNewMaster(oldPort, timeoutMs = 30_000) {
      return pollUntil(
        `the sentinels to agree on a master of ${masterName} other than 127.0.0.1:${oldPort} (${describeAll()})`,
        async () => {
          const [master, why] = await agreedMaster();
          lastSeen = why || `the sentinels still name ${master?.address}`;
          return master && master.port !== oldPort ? master : undefined;
        },
        timeoutMs,
        () => lastSeen,
      );
    },
    waitUntilHealthy,
    stop,
  };
}

/** SENTINEL REPLICAS / SENTINELS answer a list of flat field-value lists. */
function fieldsOf(reply: RespValue): Record<string, string>[] {
  if (!Array.isArray(reply)) return [];
  return reply.filter(Array.isArray).map((flat) => {
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = String(flat[i + 1]);
    return fields;
  });
}
