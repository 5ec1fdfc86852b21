import { parse, stringify } from 'yaml';
import { images } from './harness.js';

/** The ports of the derived stack: on the host's network, clear of the machine's own servers and of npm start's. */
export interface ComposePorts {
  nats: number;
  natsMonitor: number;
  redis: number;
  postgres: number;
  otlp: number;
  jaegerUi: number;
  jaegerAdmin: number;
  services: Record<'auth-challenge' | 'dispatch' | 'fraud' | 'user-settings' | 'reporting' | 'radius' | 'console', number>;
  /** The RADIUS front's UDP port. */
  radius: number;
}

/**
 * The ports of docker-compose.cluster.yml's nodes, by service name. The first nodes, nats and
 * redis, keep the single servers' client ports (ComposePorts' nats, natsMonitor and redis).
 */
export interface ClusterPorts {
  /** Each NATS node's client, monitoring and route port. */
  nats: Record<string, { client: number; monitor: number; route: number }>;
  /** Each Redis node's port and cluster bus port. */
  redis: Record<string, { port: number; bus: number }>;
}

type Service = Record<string, unknown> & { environment?: Record<string, string>; command?: string[]; ports?: unknown; healthcheck?: { test: string[] } };
type ComposeDoc = { name?: string; services: Record<string, Service>; volumes?: unknown; networks?: unknown } & Record<string, unknown>;

/**
 * docker-compose.yml as this machine can run it, with as few changes as possible. Each change, and
 * why (the list is also what the test prints):
 */
export const DERIVATION_CHANGES = [
  'top-level `name:` removed: docker-compose v1 (the only compose here) rejects it; the project name is given with -p',
  'every service (and every build) on `network_mode: host` and without `ports:`: the daemon runs without a bridge (no iptables here), and v1 cannot combine ports with host networking',
  'hostnames nats, redis, postgres and jaeger become 127.0.0.1, and every port moves clear of the machine\'s own NATS, Redis and Postgres and of npm start\'s services',
  'written as YAML 1.1 (docker-compose v1 reads `no` as false), and images nats, redis, postgres and jaeger become stand-ins built from Debian packages (no registry is reachable); the services are built FROM a Node 26 stand-in (build arg NODE_IMAGE)',
  'jaeger becomes an OTLP sink that answers its three ports (tracing is best effort; no Jaeger package exists in Debian)',
  'the healthchecks of nats, redis, postgres and jaeger name the moved ports; nats gets -a/-p/-m, redis its command line, postgres PGPORT',
  'the x- extension blocks are written out merged (YAML anchors resolved); prometheus and grafana (profile observability) are left out',
] as const;

/** What deriveClusterOverride changes in docker-compose.cluster.yml besides the above. */
export const CLUSTER_DERIVATION_CHANGES = [
  'docker-compose.cluster.yml is derived the same way and given to docker-compose after the derived docker-compose.yml (-f twice, merged by compose itself)',
  'its fixed subnet and the Redis nodes\' fixed addresses are left out: on the host\'s network every node is 127.0.0.1, each on ports of its own',
  'every NATS node gets its own client, monitoring and route ports (-p, -m, --cluster, --routes); every Redis node its own port and cluster bus port (--port, --cluster-port) and, like the single Redis, no persistence; their healthchecks name those ports',
] as const;

/** `host:port` as the compose network names it → `127.0.0.1:<port>` of the derived stack. */
type AddressMap = Map<string, string>;

/** Every `name:port` of the map in `text`, rewritten (each occurrence; a longer name such as nats-2 is never taken for nats). */
function rewriteAddresses(text: string, addresses: AddressMap): string {
  let out = text;
  for (const [from, to] of addresses) out = out.replace(new RegExp(`(?<![\\w.-])${from.replace(/[.]/g, '\\.')}(?!\\d)`, 'g'), to);
  return out;
}

function baseAddresses(ports: ComposePorts): AddressMap {
  return new Map([
    ['nats:4222', `127.0.0.1:${ports.nats}`],
    ['redis:6379', `127.0.0.1:${ports.redis}`],
    ['postgres:5432', `127.0.0.1:${ports.postgres}`],
    ['jaeger:4318', `127.0.0.1:${ports.otlp}`],
  ]);
}

function clusterAddresses(ports: ComposePorts, cluster: ClusterPorts): AddressMap {
  const map = baseAddresses(ports);
  for (const [name, node] of Object.entries(cluster.nats)) {
    map.set(`${name}:4222`, `127.0.0.1:${node.client}`);
    map.set(`${name}:6222`, `127.0.0.1:${node.route}`);
  }
  for (const [name, node] of Object.entries(cluster.redis)) map.set(`${name}:6379`, `127.0.0.1:${node.port}`);
  return map;
}

/** What every service of either file gets: host networking, no published ports, the moved addresses and ports. */
function onHostNetwork(doc: ComposeDoc, ports: ComposePorts, addresses: AddressMap): void {
  delete doc.name;
  for (const key of Object.keys(doc)) if (key.startsWith('x-')) delete doc[key];
  const local = (text: string) => rewriteAddresses(text, addresses).replace('http://127.0.0.1:3000', `http://127.0.0.1:${ports.services.console}`);
  for (const [name, service] of Object.entries(doc.services)) {
    delete service.ports;
    delete service.networks;
    service.network_mode = 'host';
    if (service.environment) for (const [k, v] of Object.entries(service.environment)) if (typeof v === 'string') service.environment[k] = local(v);
    const port = ports.services[name as keyof ComposePorts['services']];
    if (port !== undefined && service.environment) {
      if ('HTTP_PORT' in service.environment) service.environment.HTTP_PORT = String(port);
      if ('CONSOLE_PORT' in service.environment) service.environment.CONSOLE_PORT = String(port);
      if ('RADIUS_PORT' in service.environment) service.environment.RADIUS_PORT = String(ports.radius);
    }
    const build = service.build as { args?: Record<string, string>; network?: string } | undefined;
    if (build) {
      build.args = { ...build.args, NODE_IMAGE: images.node };
      build.network = 'host';
    }
  }
}

const write = (doc: ComposeDoc, from: string) =>
  `# Derived by test-e2e for this machine from ${from}; see DERIVATION_CHANGES.\n${stringify(doc, { lineWidth: 0, version: '1.1' })}`;

/** The derived compose file (YAML) from the real one. */
export function deriveCompose(realYaml: string, ports: ComposePorts): string {
  const doc = parse(realYaml, { merge: true }) as ComposeDoc;
  onHostNetwork(doc, ports, baseAddresses(ports));
  const s = doc.services;
  s.nats!.image = images.nats;
  s.nats!.command = [...(s.nats!.command ?? []), '-a', '127.0.0.1', '-p', String(ports.nats), '-m', String(ports.natsMonitor)];
  s.nats!.healthcheck!.test = ['CMD', 'wget', '-qO-', `http://127.0.0.1:${ports.natsMonitor}/healthz?js-enabled-only=true`];
  s.redis!.image = images.redis;
  s.redis!.command = ['redis-server', '--bind', '127.0.0.1', '--port', String(ports.redis), '--save', '', '--appendonly', 'no'];
  s.redis!.healthcheck!.test = ['CMD', 'redis-cli', '-p', String(ports.redis), 'ping'];
  s.postgres!.image = images.postgres;
  s.postgres!.environment = { ...s.postgres!.environment, PGPORT: String(ports.postgres) };
  s.postgres!.healthcheck!.test = ['CMD', 'pg_isready', '-h', '127.0.0.1', '-p', String(ports.postgres), '-U', 'postgres', '-d', 'mfa'];
  s.jaeger!.image = images.jaeger;
  s.jaeger!.environment = { OTLP_PORT: String(ports.otlp), UI_PORT: String(ports.jaegerUi), ADMIN_PORT: String(ports.jaegerAdmin) };
  s.jaeger!.healthcheck!.test = ['CMD', 'wget', '-qO-', `http://127.0.0.1:${ports.jaegerAdmin}/`];
  for (const unused of ['prometheus', 'grafana']) delete s[unused];
  return write(doc, 'docker-compose.yml');
}

/**
 * The derived docker-compose.cluster.yml (YAML), given to docker-compose after deriveCompose's
 * file. Every NATS node and every Redis node of the real file needs its ports in `cluster`.
 */
export function deriveClusterOverride(realYaml: string, ports: ComposePorts, cluster: ClusterPorts): string {
  const first = { nats: cluster.nats.nats, redis: cluster.redis.redis };
  if (first.nats?.client !== ports.nats || first.nats.monitor !== ports.natsMonitor) throw new Error('the first NATS node, nats, keeps the single server\'s client and monitoring ports');
  if (first.redis?.port !== ports.redis) throw new Error('the first Redis node, redis, keeps the single server\'s port');
  const doc = parse(realYaml, { merge: true }) as ComposeDoc;
  const addresses = clusterAddresses(ports, cluster);
  onHostNetwork(doc, ports, addresses);
  delete doc.networks;
  for (const [name, service] of Object.entries(doc.services)) {
    const image = typeof service.image === 'string' ? service.image : '';
    const command = service.command ?? [];
    const healthcheck = service.healthcheck;
    if (image.startsWith('nats:')) {
      const node = cluster.nats[name];
      if (!node) throw new Error(`no ports for the NATS node ${name}`);
      service.image = images.nats;
      service.command = [
        ...command.map((arg) => rewriteAddresses(arg.replace('0.0.0.0:6222', `127.0.0.1:${node.route}`), addresses)),
        ...['-a', '127.0.0.1', '-p', String(node.client), '-m', String(node.monitor)],
      ];
      if (healthcheck) healthcheck.test = healthcheck.test.map((part) => part.replaceAll('127.0.0.1:8222', `127.0.0.1:${node.monitor}`));
    } else if (image.startsWith('redis:')) {
      service.image = images.redis;
      if (!command.includes('--cluster-enabled')) continue; // redis-cluster-init: a client of the nodes
      const node = cluster.redis[name];
      if (!node) throw new Error(`no ports for the Redis node ${name}`);
      service.command = [...command, '--bind', '127.0.0.1', '--port', String(node.port), '--cluster-port', String(node.bus), '--save', '', '--appendonly', 'no'];
      if (healthcheck) healthcheck.test = healthcheck.test.map((part) => part.replaceAll('redis-cli ', `redis-cli -p ${node.port} `));
    }
  }
  return write(doc, 'docker-compose.cluster.yml');
}
