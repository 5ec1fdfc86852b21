import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accepts, childServer, cleanUpOnExit, freePorts, pollUntil, type ChildServer } from './child-server.js';

export interface NatsClusterNode {
  /** Its `server_name`: what stream info's `cluster.leader` and the monitoring endpoints call it. */
  name: string;
  url: string;
  /** Client port. */
  port: number;
  /** Route port (`cluster { listen }`), where the other nodes connect. */
  clusterPort: number;
  /** Monitoring port (`http`): /healthz, /jsz. */
  monitorPort: number;
  /** The current server's process id (a restart changes it). */
  readonly pid: number;
  /** The JetStream store directory, kept over kill() and restart(). */
  storeDir: string;
  running(): boolean;
  /** What the server printed so far, over every run (its log goes to stderr). */
  output(): string;
  /**
   * Kills the server by its process id (SIGKILL unless told otherwise: a crash) and waits for it to
   * exit. The others see its routes close; a stream it led elects a new leader among the rest.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts the server again with the same configuration (same ports, same store directory) and waits
   * until it is back in the cluster: its /healthz answers ok, which needs a meta leader and its
   * streams caught up.
   */
  restart(): Promise<void>;
}

export interface NatsCluster {
  /** The cluster's name (`cluster { name }`). */
  name: string;
  /** Every node's client URL, comma-separated, as NATS_URL takes them. */
  urls: string;
  nodes: NatsClusterNode[];
  /** The node of that server_name (throws for an unknown one). */
  node(name: string): NatsClusterNode;
  /**
   * Waits until every running node answers /healthz with ok and all of them name the same JetStream
   * meta leader, a running node, which it returns.
   */
  waitUntilReady(timeoutMs?: number): Promise<NatsClusterNode>;
  /** The running node that says it is the JetStream meta leader, if one does. */
  metaLeader(): Promise<NatsClusterNode | undefined>;
  /**
   * The running node that says it leads `stream` (in `account`, by default any account: the one of a
   * configuration without accounts is `$G`), from each node's /jsz. Undefined while none does (an
   * election under way).
   */
  streamLeader(stream: string, options?: { account?: string }): Promise<NatsClusterNode | undefined>;
  /** Waits until a running node leads `stream`, other than `not` if given (a killed leader's successor). */
  waitForStreamLeader(stream: string, options?: { account?: string; not?: NatsClusterNode | string; timeoutMs?: number }): Promise<NatsClusterNode>;
  /** Finds the leader of `stream` and kills it (SIGKILL unless told otherwise); returns the node killed. */
  killStreamLeader(stream: string, options?: { account?: string; signal?: NodeJS.Signals }): Promise<NatsClusterNode>;
  /** Stops every node (by its process id) and removes the configuration and the JetStream stores. */
  stop(): Promise<void>;
}

/**
 * A NATS cluster of a test's own, for the failures a single server cannot show: `nodes` nats-server
 * processes (3 unless told otherwise) with JetStream, each on free ports of 127.0.0.1 of its own
 * (client, route, monitoring), with its own store directory, routed to each other under one cluster
 * name. Each node's configuration is a file in a new temporary directory; `config` is appended to
 * every one (accounts, authorization) and `env` is the environment they run in (the passwords a
 * configuration reads). Ready once the cluster has a JetStream meta leader every node agrees on.
 * `NATS_SERVER_BIN` names the binary (default: nats-server). A test kills nodes by their process
 * ids: the other nodes elect new leaders, the killed one comes back on the same ports and store.
 *
 * nats-server 2.9 needs `server_name` unique per node in a JetStream cluster. Leader elections take
 * seconds there: a killed stream leader is replaced only after its followers' election timeout.
 */
export async function startNatsCluster(options: { nodes?: number; name?: string; config?: string; env?: Record<string, string> } = {}): Promise<NatsCluster> {
  const count = options.nodes ?? 3;
  if (count < 1) throw new Error(`a NATS cluster needs at least one node, not ${count}`);
  const clusterName = options.name ?? 'mfa-test';
  const dir = await mkdtemp(join(tmpdir(), 'mfa-nats-cluster-'));
  const servers: ChildServer[] = [];
  const unregister = cleanUpOnExit(() => servers, dir);
  const ports = await freePorts(count * 3);
  const specs = Array.from({ length: count }, (_, i) => ({
    name: `n${i + 1}`,
    port: ports[i * 3]!,
    clusterPort: ports[i * 3 + 1]!,
    monitorPort: ports[i * 3 + 2]!,
    storeDir: join(dir, `n${i + 1}`, 'store'),
    configFile: join(dir, `n${i + 1}`, 'nats.conf'),
  }));
  const routes = specs.map((s) => JSON.stringify(`nats-route://127.0.0.1:${s.clusterPort}`)).join(', ');

  const nodes: NatsClusterNode[] = [];
  const describeNodes = () => nodes.map((n) => `${n.name}${n.running() ? '' : ' (down)'}`).join(', ');
  const node = (name: string) => {
    const found = nodes.find((n) => n.name === name);
    if (!found) throw new Error(`no node ${name} in this NATS cluster (${nodes.map((n) => n.name).join(', ')})`);
    return found;
  };
  let lastSeen = '';
  const waitUntilReady = (timeoutMs = 30_000) =>
    pollUntil(
      `the NATS cluster's nodes to agree on a JetStream meta leader (${describeNodes()})`,
      async () => {
        const views = await Promise.all(
          nodes
            .filter((n) => n.running())
            .map(async (n) => {
              const health = await monitor(n.monitorPort, '/healthz').catch((error: Error) => ({ error: error.message }));
              const jsz = await monitor(n.monitorPort, '/jsz').catch(() => ({}));
              return { node: n, health: health as { status?: string; error?: string }, leader: (jsz as JszMeta).meta_cluster?.leader };
            }),
        );
        lastSeen = views.map((v) => `${v.node.name}: ${v.health.status ?? v.health.error ?? '?'}, leader ${v.leader ?? 'none'}`).join('; ');
        const leader = views[0]?.leader;
        if (!leader || views.some((v) => v.health.status !== 'ok' || v.leader !== leader)) return undefined;
        const leaderNode = nodes.find((n) => n.name === leader);
        return leaderNode?.running() ? leaderNode : undefined;
      },
      timeoutMs,
      () => lastSeen,
    );

  const streamLeader = async (stream: string, opts: { account?: string } = {}) => {
    const query = `/jsz?accounts=true&streams=true${opts.account ? `&acc=${encodeURIComponent(opts.account)}` : ''}`;
    for (const n of nodes.filter((x) => x.running())) {
      const jsz = (await monitor(n.monitorPort, query).catch(() => undefined)) as JszStreams | undefined;
      for (const account of jsz?.account_details ?? []) {
        if (opts.account && account.name !== opts.account) continue;
        const detail = account.stream_detail?.find((s) => s.name === stream);
        // Only a node that leads the stream itself is believed: a follower names a dead leader until
        // its election timeout.
        if (detail?.cluster?.leader === n.name) return n;
      }
    }
    return undefined;
  };

  for (const spec of specs) {
    await mkdir(join(dir, spec.name), { recursive: true });
    await writeFile(
      spec.configFile,
      [
        `server_name: ${spec.name}`,
        `listen: 127.0.0.1:${spec.port}`,
        `http: 127.0.0.1:${spec.monitorPort}`,
        `jetstream { store_dir: ${JSON.stringify(spec.storeDir)} }`,
        'cluster {',
        `  name: ${clusterName}`,
        `  listen: 127.0.0.1:${spec.clusterPort}`,
        `  routes: [${routes}]`,
        '}',
        options.config ?? '',
        '',
      ].join('\n'),
    );
    const server = childServer({
      label: `nats-server ${spec.name} (port ${spec.port})`,
      command: process.env.NATS_SERVER_BIN ?? 'nats-server',
      binEnv: 'NATS_SERVER_BIN',
      args: ['-c', spec.configFile],
      env: { ...process.env, ...options.env },
      ready: () => accepts(spec.port),
    });
    servers.push(server);
    nodes.push({
      name: spec.name,
      url: `nats://127.0.0.1:${spec.port}`,
      port: spec.port,
      clusterPort: spec.clusterPort,
      monitorPort: spec.monitorPort,
      get pid() {
        return server.pid;
      },
      storeDir: spec.storeDir,
      running: server.running,
      output: server.output,
      kill: server.kill,
      async restart() {
        await server.kill('SIGKILL');
        await server.launch();
        await waitUntilReady();
      },
    });
  }

  const stop = async () => {
    await Promise.all(servers.map((s) => s.kill('SIGTERM')));
    unregister();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // All at once: a lone JetStream node waits for its peers before it elects a meta leader.
    await Promise.all(servers.map((s) => s.launch()));
    await waitUntilReady();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    name: clusterName,
    urls: nodes.map((n) => n.url).join(','),
    nodes,
    node,
    waitUntilReady,
    async metaLeader() {
      for (const n of nodes.filter((x) => x.running())) {
        const jsz = (await monitor(n.monitorPort, '/jsz').catch(() => undefined)) as JszMeta | undefined;
        if (jsz?.meta_cluster?.leader === n.name) return n;
      }
      return undefined;
    },
    streamLeader,
    waitForStreamLeader(stream, opts = {}) {
      const not = typeof opts.not === 'string' ? opts.not : opts.not?.name;
      return pollUntil(
        `a leader of stream ${stream}${not ? ` other than ${not}` : ''} (${describeNodes()})`,
        async () => {
          const leader = await streamLeader(stream, opts);
          return leader && leader.name !== not ? leader : undefined;
        },
        opts.timeoutMs ?? 30_000,
      );
    },
    async killStreamLeader(stream, opts = {}) {
      const leader = await streamLeader(stream, opts);
      if (!leader) throw new Error(`no running node leads stream ${stream} now (${describeNodes()})`);
      await leader.kill(opts.signal ?? 'SIGKILL');
      return leader;
    },
    stop,
  };
}

interface JszMeta {
  meta_cluster?: { leader?: string };
}

interface JszStreams {
  account_details?: { name: string; stream_detail?: { name: string; cluster?: { leader?: string } }[] }[];
}

/** GET on a node's monitoring port; /healthz answers 503 with a JSON body while not ready. */
async function monitor(port: number, path: string): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2_000) });
  return res.json();
}
