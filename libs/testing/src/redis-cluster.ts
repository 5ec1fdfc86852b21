import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import calculateSlot from 'cluster-key-slot';
import { childServer, cleanUpOnExit, freePorts, pollUntil, type ChildServer } from './child-server.js';
import { answersPing, redisCommand, redisInfo } from './resp.js';

export interface RedisClusterNode {
  port: number;
  /** The cluster bus port (`cluster-port`), where the nodes gossip. */
  busPort: number;
  /** `127.0.0.1:<port>`. */
  address: string;
  url: string;
  /** The current server's process id (a restart changes it). */
  readonly pid: number;
  running(): boolean;
  /** What the server printed so far, over every run. */
  output(): string;
  /** Its role now, as the server itself says (INFO replication). */
  role(): Promise<'master' | 'replica'>;
  /**
   * Kills the server by its process id (SIGKILL unless told otherwise: a crash) and waits for it to
   * exit. Just before, it asks the node which hash slots it serves (giving up after 0.5 s), for
   * waitForFailover.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts the server again on the same ports and returns once it answers PING. It keeps its
   * nodes.conf, so it rejoins the cluster as the same node (as a replica, if it was a master that
   * was failed over meanwhile), but it comes back with no data: nothing is persisted. A replica gets
   * its data again from its master; a master that was not failed over stays empty. Call
   * waitUntilHealthy() to wait until it has rejoined.
   */
  restart(): Promise<void>;
}

export interface RedisCluster {
  /** The seeds, comma-separated `127.0.0.1:<port>` of every node, as REDIS_NODES takes them. */
  nodes: string;
  servers: RedisClusterNode[];
  /** The node on that port (throws for another port). */
  server(port: number): RedisClusterNode;
  /** The nodes that serve hash slots now, according to the cluster's configuration (CLUSTER NODES). */
  masters(): Promise<RedisClusterNode[]>;
  /**
   * The node whose slots hold `key` now, according to the cluster's configuration: right after a
   * master is killed, that is still the dead master until the cluster has failed it over.
   */
  masterOf(key: string): Promise<RedisClusterNode>;
  /**
   * Waits until the cluster is whole for its running nodes: each says cluster_state:ok with every
   * slot served, every slot is served by a running master that all running nodes agree on, no
   * running node is flagged failing, and every running replica is linked to its master.
   */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
  /**
   * After a master was killed: waits until one of its replicas serves its slots and the cluster is
   * healthy again (waitUntilHealthy), and returns that new master.
   */
  waitForFailover(killed: RedisClusterNode, timeoutMs?: number): Promise<RedisClusterNode>;
  /** Stops every node (by its process id) and removes their directories. */
  stop(): Promise<void>;
}

const SLOTS = 16_384;

/**
 * A Redis Cluster of a test's own: `masters` × (1 + `replicasPerMaster`) redis-server processes
 * (3 × 2 unless told otherwise) on free ports of 127.0.0.1, each with its own cluster bus port
 * (`cluster-port`, since port + 10000 may be taken or past 65535) and directory, joined with
 * `redis-cli --cluster create`. Nothing is persisted (no RDB, no AOF; the RDB a replica receives
 * is deleted once loaded), so a killed node comes back empty. `nodeTimeoutMs` (2000 unless told
 * otherwise) is cluster-node-timeout: a killed master is failed over a few seconds after it.
 * Masters send their data to a new replica at once (no diskless-sync delay). `REDIS_SERVER_BIN`
 * and `REDIS_CLI_BIN` name the binaries (default: redis-server, redis-cli).
 */
export async function startRedisCluster(options: { masters?: number; replicasPerMaster?: number; nodeTimeoutMs?: number } = {}): Promise<RedisCluster> {
  const masterCount = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 1;
  // redis-cli --cluster create refuses fewer than 3 masters.
  if (masterCount < 3) throw new Error(`a Redis Cluster needs at least 3 masters, not ${masterCount}`);
  const count = masterCount * (1 + replicasPerMaster);
  const dir = await mkdtemp(join(tmpdir(), 'mfa-redis-cluster-'));
  const processes: ChildServer[] = [];
  const unregister = cleanUpOnExit(() => processes, dir);
  const ports = await freePorts(count * 2);
  const servers: RedisClusterNode[] = [];
  // The slots each node served when it was last killed (see kill()).
  const slotsAtKill = new Map<number, number[]>();

  const server = (port: number) => {
    const found = servers.find((s) => s.port === port);
    if (!found) throw new Error(`no node on port ${port} in this Redis Cluster (${servers.map((s) => s.port).join(', ')})`);
    return found;
  };
  const running = () => servers.filter((s) => s.running());
  /** The cluster's configuration as the first running node that answers sees it. */
  const view = async () => {
    let lastError: unknown;
    for (const s of running()) {
      try {
        return parseClusterNodes(String(await redisCommand(s.port, ['CLUSTER', 'NODES'])));
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error('no running node of the Redis Cluster answers CLUSTER NODES', { cause: lastError });
  };
  const ownerOf = (nodes: ClusterNodeLine[], slot: number) => nodes.find((n) => n.flags.includes('master') && n.slots.some(([from, to]) => slot >= from && slot <= to));

  let lastSeen = '';
  const unhealthy = async (): Promise<string | undefined> => {
    const live = running();
    if (live.length === 0) return 'no node is running';
    let agreed: string | undefined;
    for (const s of live) {
      const info = await redisCommand(s.port, ['CLUSTER', 'INFO']).then(String, (e: Error) => e.message);
      if (!info.includes('cluster_state:ok')) return `${s.address}: ${info.match(/cluster_state:\w+/)?.[0] ?? info}`;
      if (!info.includes(`cluster_slots_ok:${SLOTS}`)) return `${s.address}: ${info.match(/cluster_slots_ok:\d+/)?.[0]}`;
      const nodes = parseClusterNodes(String(await redisCommand(s.port, ['CLUSTER', 'NODES'])));
      const owners = nodes
        .filter((n) => n.flags.includes('master') && n.slots.length > 0)
        .map((n) => `${n.port}:${n.slots.map((r) => r.join('-')).join(',')}`)
        .sort()
        .join(' ');
      if (agreed !== undefined && owners !== agreed) return `the nodes disagree on who serves which slots (${agreed} | ${owners})`;
      agreed = owners;
      for (const n of nodes) {
        const isRunning = servers.some((x) => x.port === n.port && x.running());
        if (n.flags.includes('master') && n.slots.length > 0 && (!isRunning || n.flags.some((f) => f === 'fail' || f === 'fail?'))) {
          return `${s.address} sees slots served by ${n.address} (${n.flags.join(',')}${isRunning ? '' : ', not running'})`;
        }
        if (isRunning && n.flags.some((f) => f === 'fail' || f === 'fail?' || f === 'handshake' || f === 'noaddr')) return `${s.address} sees ${n.address} as ${n.flags.join(',')}`;
      }
      const myself = nodes.find((n) => n.flags.includes('myself'));
      if (myself?.flags.includes('slave')) {
        const replication = await redisInfo(s.port, 'replication');
        if (replication.master_link_status !== 'up') return `${s.address}: replica with master_link_status:${replication.master_link_status}`;
      }
    }
    return undefined;
  };
  const waitUntilHealthy = (timeoutMs = 30_000) =>
    pollUntil(
      'the Redis Cluster to be healthy',
      async () => {
        lastSeen = (await unhealthy().catch((error: Error) => error.message)) ?? '';
        return lastSeen ? undefined : true;
      },
      timeoutMs,
      () => lastSeen,
    ).then(() => undefined);

  for (let i = 0; i < count; i++) {
    const port = ports[i * 2]!;
    const busPort = ports[i * 2 + 1]!;
    const nodeDir = join(dir, String(port));
    await mkdir(nodeDir);
    const args = [
      ...['--bind', '127.0.0.1', '--port', String(port), '--dir', nodeDir],
      ...['--cluster-enabled', 'yes', '--cluster-port', String(busPort), '--cluster-config-file', join(nodeDir, `nodes-${port}.conf`)],
      ...['--cluster-node-timeout', String(options.nodeTimeoutMs ?? 2_000)],
      ...['--save', '', '--appendonly', 'no', '--rdb-del-sync-files', 'yes', '--repl-diskless-sync-delay', '0'],
      // On SIGTERM a master waits up to 10 s for its replicas to catch up unless told otherwise;
      // stop() ends them all at once.
      ...['--shutdown-timeout', '0'],
    ];
    const proc = childServer({
      label: `redis-server 127.0.0.1:${port} (cluster)`,
      command: process.env.REDIS_SERVER_BIN ?? 'redis-server',
      binEnv: 'REDIS_SERVER_BIN',
      args,
      cwd: nodeDir,
      ready: () => answersPing(port),
    });
    processes.push(proc);
    servers.push({
      port,
      busPort,
      address: `127.0.0.1:${port}`,
      url: `redis://127.0.0.1:${port}`,
      get pid() {
        return proc.pid;
      },
      running: proc.running,
      output: proc.output,
      async role() {
        const role = (await redisInfo(port, 'replication')).role;
        return role === 'master' ? 'master' : 'replica';
      },
      async kill(signal: NodeJS.Signals = 'SIGKILL') {
        if (!proc.running()) return;
        const myself = await redisCommand(port, ['CLUSTER', 'NODES'], 500).then(
          (text) => parseClusterNodes(String(text)).find((n) => n.flags.includes('myself')),
          () => undefined,
        );
        slotsAtKill.set(port, myself?.slots.map(([from]) => from) ?? []);
        await proc.kill(signal);
      },
      async restart() {
        await proc.kill('SIGKILL');
        await proc.launch();
      },
    });
  }

  const stop = async () => {
    await Promise.all(processes.map((p) => p.kill('SIGTERM')));
    unregister();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await Promise.all(processes.map((p) => p.launch()));
    const cli = process.env.REDIS_CLI_BIN ?? 'redis-cli';
    const create = [
      ...['--cluster', 'create', ...servers.map((s) => s.address)],
      ...['--cluster-replicas', String(replicasPerMaster), '--cluster-yes'],
    ];
    await promisify(execFile)(cli, create, { timeout: 60_000 }).catch((error: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`${cli} --cluster create failed: ${`${error.stdout ?? ''}${error.stderr ?? ''}`.trim().slice(-2000) || error.message}`, { cause: error });
    });
    await waitUntilHealthy();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    nodes: servers.map((s) => s.address).join(','),
    servers,
    server,
    async masters() {
      const nodes = await view();
      return nodes.filter((n) => n.flags.includes('master') && n.slots.length > 0).map((n) => server(n.port));
    },
    async masterOf(key) {
      const slot = calculateSlot(key);
      const owner = ownerOf(await view(), slot);
      if (!owner) throw new Error(`no node serves slot ${slot} (of key ${key})`);
      return server(owner.port);
    },
    waitUntilHealthy,
    async waitForFailover(killed, timeoutMs = 30_000) {
      if (killed.running()) throw new Error(`${killed.address} is running: kill it first`);
      const slots = slotsAtKill.get(killed.port) ?? [];
      if (slots.length === 0) throw new Error(`${killed.address} served no slots when it was killed: there is nothing to fail over`);
      await waitUntilHealthy(timeoutMs);
      const owner = ownerOf(await view(), slots[0]!);
      if (!owner || owner.port === killed.port) throw new Error(`slot ${slots[0]} of ${killed.address} was not failed over`);
      return server(owner.port);
    },
    stop,
  };
}

interface ClusterNodeLine {
  id: string;
  address: string;
  port: number;
  flags: string[];
  /** The id of its master, for a replica. */
  masterId: string | undefined;
  slots: [number, number][];
}

/** CLUSTER NODES: `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`. */
function parseClusterNodes(text: string): ClusterNodeLine[] {
  return text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      const [id, endpoint, flags, master, , , , , ...slots] = line.trim().split(' ');
      const address = endpoint!.split('@')[0]!;
      return {
        id: id!,
        address,
        port: Number(address.slice(address.lastIndexOf(':') + 1)),
        flags: flags!.split(','),
        masterId: master === '-' ? undefined : master,
        // Slots being migrated ("[slot->-id]") are not served yet.
        slots: slots.filter((s) => !s.startsWith('[')).map((s) => {
          const [from, to] = s.split('-').map(Number);
          return [from!, to ?? from!] as [number, number];
        }),
      };
    });
}
