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

type Service = Record<string, unknown> & { environment?: Record<string, string>; command?: string[]; ports?: unknown; healthcheck?: { test: string[] } };

/**
 * docker-compose.yml as this machine can run it, with as few changes as possible. Each change, and
 * why (the list is also what the test prints):
 */
export const DERIVATION_CHANGES = [
  'top-level `name:` removed: docker-compose v1 (the only compose here) rejects it; the project name is given with -p',
  'every service (and every build) on `network_mode: host` and without `ports:`: the daemon runs without a bridge (no iptables here), and v1 cannot combine ports with host networking',
  'hostnames nats, redis, postgres and jaeger become 127.0.0.1, and every port moves clear of the machine\'s own NATS, Redis and Postgres and of npm start\'s services',
  'written as YAML 1.1 (docker-compose v1 reads `no` as false), and images nats, redis, postgres and jaeger become stand-ins built from Debian packages (no registry is reachable); the services are built FROM a Node 24 stand-in (build arg NODE_IMAGE)',
  'jaeger becomes an OTLP sink that answers its three ports (tracing is best effort; no Jaeger package exists in Debian)',
  'the healthchecks of nats, redis, postgres and jaeger name the moved ports; nats gets -a/-p/-m, redis its command line, postgres PGPORT',
  'the x- extension blocks are written out merged (YAML anchors resolved); prometheus and grafana (profile observability) are left out',
] as const;

/** The derived compose file (YAML) from the real one. */
export function deriveCompose(realYaml: string, ports: ComposePorts): string {
  const doc = parse(realYaml, { merge: true }) as { name?: string; services: Record<string, Service>; volumes?: unknown } & Record<string, unknown>;
  delete doc.name;
  for (const key of Object.keys(doc)) if (key.startsWith('x-')) delete doc[key];
  const local = (text: string) =>
    text
      .replace('nats://nats:4222', `nats://127.0.0.1:${ports.nats}`)
      .replace('redis://redis:6379', `redis://127.0.0.1:${ports.redis}`)
      .replace('@postgres:5432/', `@127.0.0.1:${ports.postgres}/`)
      .replace('http://jaeger:4318', `http://127.0.0.1:${ports.otlp}`)
      .replace('http://127.0.0.1:3000', `http://127.0.0.1:${ports.services.console}`);
  for (const [name, service] of Object.entries(doc.services)) {
    delete service.ports;
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
  return `# Derived by test-e2e for this machine from docker-compose.yml; see DERIVATION_CHANGES.\n${stringify(doc, { lineWidth: 0, version: '1.1' })}`;
}
