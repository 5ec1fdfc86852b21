// Structure checks for docker-compose.yml and deploy/Dockerfile. No container engine is needed:
// the files are parsed and checked against what each service reads from its environment.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { deriveClusterOverride, deriveCompose } from './compose/derive.js';
import { images } from './compose/harness.js';
import { CLUSTER, PORTS } from './compose/ports.js';

// This file runs as test-e2e/dist/compose.unit.spec.js: the repository root is two levels up.
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

function objectAt(parent: JsonObject, key: string, where: string): JsonObject {
  const value = parent[key];
  assert.ok(isObject(value), `${where}: "${key}" must be a mapping`);
  return value;
}

// Compose files lean on YAML merge keys (<<: *anchor); `merge: true` resolves them as compose does.
const composeText = readFileSync(join(root, 'docker-compose.yml'), 'utf8');
const compose = parse(composeText, { merge: true }) as Json;
assert.ok(isObject(compose), 'docker-compose.yml must be a mapping');
const services = objectAt(compose, 'services', 'docker-compose.yml');

function service(name: string): JsonObject {
  return objectAt(services, name, 'services');
}

/** Compose accepts environment as a mapping or as a list of NAME=value strings. */
function environmentOf(svc: JsonObject): Map<string, string> {
  const env = svc.environment;
  const out = new Map<string, string>();
  if (Array.isArray(env)) {
    for (const entry of env) {
      assert.equal(typeof entry, 'string');
      const [name, ...rest] = String(entry).split('=');
      out.set(name ?? '', rest.join('='));
    }
  } else if (isObject(env)) {
    for (const [name, value] of Object.entries(env)) out.set(name, value === null ? '' : String(value));
  }
  return out;
}

/** Host part of a URL-valued variable, e.g. "nats" for nats://nats:4222. */
function hostOf(url: string): string {
  return new URL(url).hostname;
}

interface PublishedPort {
  hostIp: string | undefined;
  published: string | undefined;
  target: string;
}

/** Normalises the short ("[ip:][host:]container[/proto]") and long port syntaxes. */
function portsOf(svc: JsonObject): PublishedPort[] {
  const ports = svc.ports;
  if (ports === undefined) return [];
  assert.ok(Array.isArray(ports), 'ports must be a list');
  return ports.map((port): PublishedPort => {
    if (isObject(port)) {
      return {
        hostIp: port.host_ip === undefined ? undefined : String(port.host_ip),
        published: port.published === undefined ? undefined : String(port.published),
        target: String(port.target),
      };
    }
    const spec = String(port).replace(/\/(tcp|udp|sctp)$/, '');
    // An IPv6 host address is bracketed: [::1]:8080:80.
    const v6 = /^\[([^\]]+)\]:(.*)$/.exec(spec);
    const parts = v6 ? [v6[1] ?? '', ...(v6[2] ?? '').split(':')] : spec.split(':');
    if (parts.length === 3) return { hostIp: parts[0], published: parts[1], target: parts[2] ?? '' };
    if (parts.length === 2) return { hostIp: undefined, published: parts[0], target: parts[1] ?? '' };
    return { hostIp: undefined, published: undefined, target: parts[0] ?? '' };
  });
}

function healthcheckCommand(svc: JsonObject, name: string): string {
  const healthcheck = objectAt(svc, 'healthcheck', name);
  assert.notEqual(healthcheck.disable, true, `${name}: healthcheck must not be disabled`);
  const test = healthcheck.test;
  const command = Array.isArray(test) ? test.map(String) : [String(test ?? '')];
  assert.ok(command.length > 0 && command[0] !== 'NONE' && command.join(' ').trim() !== '', `${name}: healthcheck needs a test`);
  return command.join(' ');
}

function commandOf(svc: JsonObject): string[] {
  const command = svc.command;
  if (Array.isArray(command)) return command.map(String);
  return typeof command === 'string' ? command.split(/\s+/) : [];
}

const imageOf = (svc: JsonObject): string => (typeof svc.image === 'string' ? svc.image : '');

interface Expected {
  /** Infrastructure the service cannot work without: depends_on with condition service_healthy. */
  needs: string[];
  env: string[];
  /** The variable of its HTTP port (the console's is CONSOLE_PORT). */
  portVariable?: string;
}

const everywhere = ['NATS_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'HTTP_PORT'];
const keyring = ['MFA_ENCRYPTION_KEY', 'MFA_AUTH', 'MFA_PLATFORM_API_KEY'];
const smsProviders = ['SMS_PROVIDERS', 'TWILIO_API_URL', 'TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', 'TWILIO_FROM_NUMBER', 'SMPP_URL', 'SMPP_SOURCE_ADDR'];
const pushProviders = ['FCM_SERVICE_ACCOUNT_JSON', 'FCM_SERVICE_ACCOUNT_FILE', 'APNS_KEY', 'APNS_KEY_FILE', 'APNS_KEY_ID', 'APNS_TEAM_ID', 'APNS_TOPIC', 'APNS_URL'];

const expected: Record<string, Expected> = {
  'auth-challenge': { needs: ['nats', 'redis'], env: [...everywhere, ...keyring, 'REDIS_URL'] },
  dispatch: { needs: ['nats'], env: [...everywhere, ...keyring, ...smsProviders, ...pushProviders] },
  fraud: { needs: ['nats'], env: [...everywhere, ...keyring] },
  'user-settings': { needs: ['nats', 'redis'], env: [...everywhere, ...keyring, 'REDIS_URL'] },
  reporting: { needs: ['nats', 'postgres'], env: [...everywhere, ...keyring, 'DATABASE_URL'] },
  console: {
    needs: ['nats', 'redis'],
    env: ['NATS_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'CONSOLE_PORT', 'CONSOLE_PUBLIC_URL', 'MFA_AUTH', 'MFA_PLATFORM_API_KEY', 'REDIS_URL', 'OIDC_ISSUER_URL', 'OIDC_CLIENT_ID', 'OIDC_CLIENT_SECRET'],
    portVariable: 'CONSOLE_PORT',
  },
};
/** The fronts, clients of the API with a NATS user each (deploy/nats/nats-server.conf). */
const fronts: Record<string, string> = { console: 'mfa-console', radius: 'mfa-radius' };
const loopback = new Set(['127.0.0.1', 'localhost', '::1']);

describe('docker-compose.yml', () => {
  it('uses the compose specification without the obsolete version key', () => {
    assert.equal(compose.version, undefined);
  });

  it('defines nats with JetStream and a health check', () => {
    const nats = service('nats');
    assert.match(imageOf(nats), /^nats:/);
    const command = commandOf(nats);
    assert.ok(command.includes('-js') || command.includes('--jetstream'), `nats command must enable JetStream: ${command.join(' ')}`);
    healthcheckCommand(nats, 'nats');
  });

  describe('nats runs with deploy/nats/nats-server.conf', () => {
    const nats = service('nats');
    const natsEnv = environmentOf(nats);
    const confPath = join(root, 'deploy', 'nats', 'nats-server.conf');
    const conf = readFileSync(confPath, 'utf8');
    // Without comments and quoted strings ("$JS.API.>" is a subject, not a variable).
    const code = conf
      .split('\n')
      .map((line) => line.replace(/#.*$/, ''))
      .join('\n')
      .replace(/"[^"]*"/g, '""');
    const defined = new Set([...code.matchAll(/^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]/gm)].map((m) => m[1]));
    const fromEnvironment = [...new Set([...code.matchAll(/\$([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!))].filter((name) => !defined.has(name));
    const users = new Map([...code.matchAll(/user\s*[:=]\s*([\w-]+)[\s,]+password\s*[:=]\s*(\S+?)[\s,}]/g)].map((m) => [m[1]!, m[2]!]));
    /** A compose value taken from the host environment, with no default that would put a secret here. */
    const isRequiredVariable = (value: string | undefined, name: string) => new RegExp(`^\\$\\{${name}(:?\\?[^}]*)?\\}$`).test(value ?? '');

    it('mounts the configuration and starts the server with it', () => {
      const command = commandOf(nats);
      const flag = command.findIndex((arg) => arg === '-c' || arg === '--config');
      assert.ok(flag >= 0, `nats command must name a configuration file: ${command.join(' ')}`);
      const target = command[flag + 1];
      const volumes = (Array.isArray(nats.volumes) ? nats.volumes : []).map(String);
      const mount = volumes.map((v) => v.split(':')).find(([, containerPath]) => containerPath === target);
      assert.ok(mount, `${target} must be mounted into the nats container`);
      assert.equal(resolve(root, mount[0]!), confPath);
      assert.ok(mount[2]?.split(',').includes('ro'), 'mounted read-only');
    });

    it('has users with passwords from the environment only, and gives the server every variable the configuration reads', () => {
      assert.ok(users.size >= 2, `users found in the configuration: ${[...users.keys()].join(', ')}`);
      for (const [user, password] of users) assert.match(password, /^\$[A-Za-z_]\w*$/, `${user}: the password must be a $VARIABLE, never written in the file`);
      assert.doesNotMatch(code, /\b(token|pass)\s*[:=]\s*[^$\s]/, 'no token or password written in the file');
      assert.ok(fromEnvironment.length >= users.size);
      for (const name of fromEnvironment) {
        assert.ok(isRequiredVariable(natsEnv.get(name), name), `nats: ${name} must be passed as \${${name}:?…} (got ${natsEnv.get(name)})`);
      }
    });

    /** A user's entry in the configuration: from its `user:` to the next user's (or the end of the list). */
    const entryOf = (user: string) => {
      const start = code.search(new RegExp(`user\\s*[:=]\\s*${user}[\\s,]`));
      assert.ok(start >= 0, `${user} is not a user of deploy/nats/nats-server.conf`);
      const next = code.slice(start + 1).search(/\buser\s*[:=]/);
      return next < 0 ? code.slice(start) : code.slice(start, start + 1 + next);
    };

    for (const name of Object.keys(expected).filter((n) => !(n in fronts))) {
      it(`${name} connects as the services' user of the configuration`, () => {
        const env = environmentOf(service(name));
        const user = env.get('NATS_USER') ?? '';
        const password = users.get(user);
        assert.ok(password, `${name}: NATS_USER "${user}" is not a user of deploy/nats/nats-server.conf`);
        assert.match(entryOf(user), /permissions\s*[:=]\s*\$SERVICES\b/, `${user} has the services' permissions`);
        assert.ok(isRequiredVariable(env.get('NATS_PASSWORD'), password.slice(1)), `${name}: NATS_USER/NATS_PASSWORD must be \${${password.slice(1)}:?…}`);
      });
    }

    for (const [name, user] of Object.entries(fronts)) {
      it(`${name} connects as its own user (${user}), not the services', with replies under the prefix its user may subscribe to`, () => {
        const env = environmentOf(service(name));
        assert.equal(env.get('NATS_USER'), user);
        const password = users.get(user);
        assert.ok(password, `${user} is not a user of deploy/nats/nats-server.conf`);
        assert.ok(isRequiredVariable(env.get('NATS_PASSWORD'), password.slice(1)), `${name}: NATS_PASSWORD must be \${${password.slice(1)}:?…}`);
        const entry = entryOf(user);
        assert.doesNotMatch(entry, /\$SERVICES\b/, `${user} must not have the services' permissions`);
        // Quoted strings were blanked in `code`: read the subscribe list from the file, without its comments.
        const text = conf.split('\n').map((line) => line.replace(/#.*$/, '')).join('\n');
        const own = text.slice(text.search(new RegExp(`user\\s*[:=]\\s*${user}[\\s,]`)));
        const subscribe = /subscribe\s*=\s*\{\s*allow\s*=\s*\[([^\]]*)\]/.exec(own)?.[1] ?? '';
        const prefix = env.get('NATS_INBOX_PREFIX') ?? '';
        assert.match(prefix, /^_INBOX_[\w-]+$/, `${name}: NATS_INBOX_PREFIX must be its own _INBOX_<name>`);
        assert.ok(subscribe.includes(`"${prefix}.>"`), `${user} may subscribe to ${prefix}.> (its subscriptions: ${subscribe})`);
        assert.ok(!/"_INBOX\.>"|"mfa\.(>|v1\.>)"|">"/.test(subscribe), `${user} may not subscribe to others' replies or the API: ${subscribe}`);
      });
    }
  });

  it('defines redis and postgres with health checks', () => {
    assert.match(imageOf(service('redis')), /^redis:/);
    assert.match(healthcheckCommand(service('redis'), 'redis'), /redis-cli.*ping/);
    const postgres = service('postgres');
    assert.match(imageOf(postgres), /^postgres:/);
    assert.match(healthcheckCommand(postgres, 'postgres'), /pg_isready/);
    assert.equal(environmentOf(postgres).get('POSTGRES_DB'), 'mfa');
  });

  it('defines a trace collector that publishes its UI and takes OTLP over HTTP', () => {
    const collector = service('jaeger');
    assert.match(imageOf(collector), /jaeger/);
    healthcheckCommand(collector, 'jaeger');
    const targets = portsOf(collector).map((p) => p.target);
    assert.ok(targets.includes('16686'), 'the Jaeger UI (16686) must be published');
    assert.ok(targets.includes('4318'), 'OTLP over HTTP (4318) must be published');
  });

  it('publishes every port on the loopback interface only', () => {
    for (const [name, svc] of Object.entries(services)) {
      assert.ok(isObject(svc));
      for (const port of portsOf(svc)) {
        assert.ok(
          port.hostIp !== undefined && loopback.has(port.hostIp),
          `${name}: port ${port.target} would be published on all interfaces; bind it to 127.0.0.1`,
        );
      }
    }
  });

  for (const [name, wanted] of Object.entries(expected)) {
    describe(name, () => {
      const svc = service(name);
      const env = environmentOf(svc);

      it('is built from deploy/Dockerfile with SERVICE set to its name, or names an image', () => {
        assert.ok(svc.build !== undefined || imageOf(svc) !== '', `${name}: needs build or image`);
        if (svc.build === undefined) return;
        const build = objectAt(svc, 'build', name);
        const dockerfile = join(root, String(build.context ?? '.'), String(build.dockerfile ?? 'Dockerfile'));
        assert.ok(existsSync(dockerfile), `${name}: ${dockerfile} does not exist`);
        assert.match(readFileSync(dockerfile, 'utf8'), /^ARG SERVICE\b/m);
        assert.equal(objectAt(build, 'args', `${name}.build`).SERVICE, name);
        assert.ok(existsSync(join(root, 'services', name, 'package.json')), `services/${name} must exist`);
      });

      it('has a health check on its /health endpoint', () => {
        assert.match(healthcheckCommand(svc, name), /\/health\b/);
      });

      it('starts only with the app profile', () => {
        assert.deepEqual(svc.profiles, ['app']);
      });

      it('waits for healthy infrastructure it uses', () => {
        const dependsOn = objectAt(svc, 'depends_on', name);
        for (const dependency of wanted.needs) {
          const entry = objectAt(dependsOn, dependency, `${name}.depends_on`);
          assert.equal(entry.condition, 'service_healthy', `${name} must wait for ${dependency} to be healthy`);
        }
        for (const dependency of Object.keys(dependsOn)) {
          assert.ok(isObject(services[dependency]), `${name} depends on undefined service ${dependency}`);
        }
      });

      it('receives the environment it reads', () => {
        for (const variable of wanted.env) assert.ok(env.has(variable), `${name}: missing ${variable}`);
        assert.equal(hostOf(env.get('NATS_URL') ?? ''), 'nats');
        const otlpHost = hostOf(env.get('OTEL_EXPORTER_OTLP_ENDPOINT') ?? '');
        assert.ok(isObject(services[otlpHost]), `${name}: OTLP endpoint host ${otlpHost} is not a compose service`);
        if (wanted.env.includes('REDIS_URL')) assert.equal(hostOf(env.get('REDIS_URL') ?? ''), 'redis');
        if (wanted.env.includes('DATABASE_URL')) assert.equal(hostOf(env.get('DATABASE_URL') ?? ''), 'postgres');
        assert.equal(env.get('HTTP_HOST'), '0.0.0.0', `${name}: must listen on all interfaces inside its container`);
      });

      it('uses the HTTP port its config defaults to, published on loopback', (t) => {
        const variable = wanted.portVariable ?? 'HTTP_PORT';
        const port = env.get(variable);
        assert.match(port ?? '', /^\d+$/);
        assert.ok(
          portsOf(svc).some((p) => p.target === port && p.published === port && p.hostIp === '127.0.0.1'),
          `${name}: expected 127.0.0.1:${port}:${port}`,
        );
        const configPath = join(root, 'services', name, 'src', 'config.ts');
        if (!existsSync(configPath)) {
          t.skip(`services/${name}/src/config.ts does not exist yet`);
          return;
        }
        const defaultPort = new RegExp(`${variable}[^\\n]{0,160}?\\.default\\(\\s*(\\d+)\\s*\\)`).exec(readFileSync(configPath, 'utf8'))?.[1];
        assert.ok(defaultPort, `${name}: no .default(<port>) for ${variable} in config.ts`);
        assert.equal(port, defaultPort);
      });
    });
  }
});

describe('deploy/Dockerfile', () => {
  const dockerfile = readFileSync(join(root, 'deploy', 'Dockerfile'), 'utf8');

  it('copies the manifest of every workspace before installing, as npm ci needs them all', () => {
    const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { workspaces: string[] };
    for (const workspace of manifest.workspaces) {
      assert.match(dockerfile, new RegExp(`^COPY ${workspace}/package\\.json\\s`, 'm'), `missing COPY ${workspace}/package.json`);
    }
  });

  it('accepts every service compose builds', () => {
    for (const name of Object.keys(expected)) assert.match(dockerfile, new RegExp(`^\\s*${name}\\)`, 'm'), `SERVICE=${name} is not accepted`);
  });

  it('runs as a non-root user with a health check', () => {
    assert.match(dockerfile, /^USER (?!root\b)\S+/m);
    assert.match(dockerfile, /^HEALTHCHECK /m);
  });

  // npm nests in a workspace's own node_modules the versions that differ from the root's (ipaddr.js 2
  // for libs/contracts and services/radius, among others): without them the image resolves the root's.
  it("ships each library's and the service's own node_modules, when present", () => {
    assert.match(dockerfile, /cp -a "\$\{lib\}\/node_modules" "\/out\/\$\{lib\}\/"/);
    assert.match(dockerfile, /for extra in [^;]*\bnode_modules\b[^;]*; do/);
  });

  it('leaves the test support library (libs/testing) out of the image', () => {
    assert.match(dockerfile, /"\$\{lib\}" != libs\/testing/);
    assert.match(dockerfile, /rm -f \/out\/node_modules\/@mfa\/testing/);
  });
});

describe('.dockerignore', () => {
  it('keeps host dependencies and build output out of the build context', () => {
    const ignored = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const pattern of ['**/node_modules', '**/dist', '.git']) assert.ok(ignored.includes(pattern), `missing ${pattern}`);
  });
});

// docker-compose.cluster.yml, read as compose merges it onto docker-compose.yml for the services
// it changes (environment and depends_on are mappings, merged key by key).
describe('docker-compose.cluster.yml', () => {
  const clusterText = readFileSync(join(root, 'docker-compose.cluster.yml'), 'utf8');
  const cluster = parse(clusterText, { merge: true }) as Json;
  assert.ok(isObject(cluster), 'docker-compose.cluster.yml must be a mapping');
  const clusterServices = objectAt(cluster, 'services', 'docker-compose.cluster.yml');
  const node = (name: string) => objectAt(clusterServices, name, 'docker-compose.cluster.yml services');
  const natsNodes = Object.keys(clusterServices).filter((name) => imageOf(node(name)).startsWith('nats:'));
  const redisNodes = Object.keys(clusterServices).filter((name) => commandOf(node(name)).includes('--cluster-enabled'));
  const flag = (command: string[], name: string) => command[command.indexOf(name) + 1];
  const appServices = Object.keys(services).filter((name) => isObject(services[name]) && JSON.stringify(service(name).profiles) === '["app"]');
  const usesRedis = (name: string) => environmentOf(service(name)).has('REDIS_URL');

  it('is a project of its own, publishing nothing beyond docker-compose.yml', () => {
    assert.equal(cluster.name, 'open-mfa-cluster');
    assert.notEqual(cluster.name, compose.name);
    for (const [name, svc] of Object.entries(clusterServices)) {
      assert.ok(isObject(svc));
      assert.deepEqual(portsOf(svc), [], `${name}: publishes no port of its own`);
    }
  });

  it('turns nats into the first of 3 JetStream servers, routed to each other, each with its own store', () => {
    assert.deepEqual(natsNodes, ['nats', 'nats-2', 'nats-3']);
    const routes = natsNodes.map((name) => `nats://${name}:6222`).join(',');
    const stores = new Set<string>();
    for (const name of natsNodes) {
      const command = commandOf(node(name));
      assert.deepEqual(command.slice(0, 7), commandOf(service('nats')), `${name}: the single server's configuration, JetStream and store flags first`);
      assert.equal(flag(command, '--server_name'), name);
      assert.equal(flag(command, '--cluster_name'), 'open-mfa');
      assert.equal(flag(command, '--cluster'), 'nats://0.0.0.0:6222');
      assert.equal(flag(command, '--routes'), routes);
      assert.match(healthcheckCommand(node(name), name), /\/healthz.*\/jsz.*"leader"/, `${name}: healthy once there is a meta leader`);
      // nats keeps docker-compose.yml's volumes (the project, and so the volume, is another one).
      const volumes = ((name === 'nats' ? service('nats') : node(name)).volumes as Json[]).map(String);
      const store = volumes.find((v) => v.endsWith(':/data'))!;
      stores.add(store.split(':')[0]!);
      assert.ok(volumes.includes('./deploy/nats/nats-server.conf:/etc/nats/open-mfa.conf:ro'), `${name}: the users and permissions of deploy/nats`);
      assert.deepEqual(environmentOf(node(name)), environmentOf(service('nats')), `${name}: the passwords the configuration reads`);
    }
    assert.equal(stores.size, 3, `a store volume per server: ${[...stores].join(', ')}`);
  });

  it('turns redis into the first of 6 Redis Cluster nodes, each at a fixed address of the network', () => {
    assert.deepEqual(redisNodes, ['redis', 'redis-2', 'redis-3', 'redis-4', 'redis-5', 'redis-6']);
    const ipam = objectAt(objectAt(objectAt(cluster, 'networks', 'docker-compose.cluster.yml'), 'default', 'networks'), 'ipam', 'networks.default');
    const [range] = ipam.config as JsonObject[];
    const prefix = /^\$\{MFA_CLUSTER_NETWORK:-(\d+\.\d+\.\d+)\}$/;
    const subnet = prefix.exec(String(range!.subnet).replace(/\.0\/24$/, ''))?.[1];
    assert.ok(subnet, `subnet: ${String(range!.subnet)}`);
    assert.equal(range!.ip_range, '${MFA_CLUSTER_NETWORK:-' + subnet + '}.128/25', 'dynamic addresses in the upper half');
    const addresses = new Set<string>();
    for (const name of redisNodes) {
      const svc = node(name);
      assert.match(imageOf(svc), /^redis:7/);
      assert.equal(flag(commandOf(svc), '--cluster-enabled'), 'yes');
      assert.match(healthcheckCommand(svc, name), /redis-cli cluster info \| grep -q '\^cluster_state:ok'/);
      const address = String(objectAt(objectAt(svc, 'networks', name), 'default', `${name}.networks`).ipv4_address);
      const host = Number(/^\$\{MFA_CLUSTER_NETWORK:-[\d.]+\}\.(\d+)$/.exec(address)?.[1]);
      assert.ok(host > 1 && host < 128, `${name}: ${address} is in the lower half, out of the dynamic range`);
      addresses.add(address);
    }
    assert.equal(addresses.size, 6, 'six addresses');
  });

  it('forms the cluster with a one-shot that runs deploy/redis/cluster-init.sh once every node is up', () => {
    const init = node('redis-cluster-init');
    assert.equal(init.restart, 'no');
    const volumes = (init.volumes as Json[]).map(String);
    const script = volumes.map((v) => v.split(':')).find(([, target]) => commandOf(init).includes(target!));
    assert.ok(script, 'the command runs the mounted script');
    assert.equal(resolve(root, script[0]!), join(root, 'deploy', 'redis', 'cluster-init.sh'));
    assert.equal(script[2], 'ro');
    const text = readFileSync(join(root, 'deploy', 'redis', 'cluster-init.sh'), 'utf8');
    assert.match(text, /redis-cli --cluster create \$addresses --cluster-replicas 1 --cluster-yes/);
    assert.match(text, /cluster_slots_assigned:16384/, 'leaves a formed cluster alone');
    assert.equal(environmentOf(init).get('REDIS_NODES'), redisNodes.map((name) => `${name}:6379`).join(','));
    assert.deepEqual(Object.keys(objectAt(init, 'depends_on', 'redis-cluster-init')).sort(), [...redisNodes].sort());
  });

  for (const name of appServices) {
    it(`${name} uses the clusters and waits for them`, () => {
      const env = environmentOf(node(name));
      assert.equal(env.get('NATS_URL'), natsNodes.map((n) => `nats://${n}:4222`).join(','));
      assert.equal(env.get('STREAM_REPLICAS'), '3');
      const dependsOn = { ...objectAt(service(name), 'depends_on', name), ...objectAt(node(name), 'depends_on', name) };
      for (const dependency of natsNodes) assert.equal((dependsOn[dependency] as JsonObject | undefined)?.condition, 'service_healthy', `${name} waits for ${dependency}`);
      if (usesRedis(name)) {
        assert.equal(env.get('REDIS_MODE'), 'cluster');
        assert.equal(env.get('REDIS_NODES'), environmentOf(node('redis-cluster-init')).get('REDIS_NODES'));
        assert.equal((dependsOn['redis-cluster-init'] as JsonObject | undefined)?.condition, 'service_completed_successfully');
        assert.equal((dependsOn.redis as JsonObject | undefined)?.condition, 'service_healthy');
      } else {
        assert.ok(!env.has('REDIS_MODE'), `${name} uses no Redis`);
      }
    });
  }
});

describe('the compose test\'s derivation for this machine (test-e2e/src/compose/derive.ts)', () => {
  const realCluster = readFileSync(join(root, 'docker-compose.cluster.yml'), 'utf8');
  const base = parse(deriveCompose(composeText, PORTS)) as { services: Record<string, JsonObject> };
  const derived = parse(deriveClusterOverride(realCluster, PORTS, CLUSTER)) as { name?: string; networks?: Json; services: Record<string, JsonObject> };
  const command = (name: string) => commandOf(derived.services[name]!);
  const last = (args: string[], name: string) => args[args.lastIndexOf(name) + 1];

  it('puts every service of both files on the host network, publishing nothing, with no compose name or fixed address', () => {
    assert.equal(derived.name, undefined);
    assert.equal(derived.networks, undefined);
    for (const file of [base, derived]) {
      for (const [name, svc] of Object.entries(file.services)) {
        assert.equal(svc.network_mode, 'host', name);
        assert.equal(svc.ports, undefined, name);
        assert.equal(svc.networks, undefined, name);
      }
    }
  });

  it('gives every NATS node its own ports and routes them to each other on 127.0.0.1', () => {
    const routes = Object.values(CLUSTER.nats).map((n) => `nats://127.0.0.1:${n.route}`).join(',');
    for (const [name, ports] of Object.entries(CLUSTER.nats)) {
      const args = command(name);
      assert.equal(last(args, '-p'), String(ports.client), name);
      assert.equal(last(args, '-m'), String(ports.monitor), name);
      assert.equal(last(args, '-a'), '127.0.0.1', name);
      assert.equal(last(args, '--cluster'), `nats://127.0.0.1:${ports.route}`, name);
      assert.equal(last(args, '--routes'), routes, name);
      assert.match(healthcheckCommand(derived.services[name]!, name), new RegExp(`127\\.0\\.0\\.1:${ports.monitor}/jsz`));
      assert.equal(derived.services[name]!.image, images.nats);
    }
  });

  it('gives every Redis node its own port and bus port, and the one-shot the nodes\' addresses', () => {
    for (const [name, ports] of Object.entries(CLUSTER.redis)) {
      const args = command(name);
      assert.equal(last(args, '--port'), String(ports.port), name);
      assert.equal(last(args, '--cluster-port'), String(ports.bus), name);
      assert.equal(last(args, '--bind'), '127.0.0.1', name);
      assert.match(healthcheckCommand(derived.services[name]!, name), new RegExp(`redis-cli -p ${ports.port} cluster info`));
    }
    const nodes = Object.values(CLUSTER.redis).map((n) => `127.0.0.1:${n.port}`).join(',');
    assert.equal(environmentOf(derived.services['redis-cluster-init']!).get('REDIS_NODES'), nodes);
    assert.equal(derived.services['redis-cluster-init']!.image, images.redis);
    assert.equal(environmentOf(derived.services['auth-challenge']!).get('REDIS_NODES'), nodes);
    assert.equal(environmentOf(derived.services.reporting!).get('NATS_URL'), Object.values(CLUSTER.nats).map((n) => `nats://127.0.0.1:${n.client}`).join(','));
  });

  it('uses every port once, and none the real files name', () => {
    const used = [
      ...Object.values(PORTS.services),
      ...[PORTS.nats, PORTS.natsMonitor, PORTS.redis, PORTS.postgres, PORTS.otlp, PORTS.jaegerUi, PORTS.jaegerAdmin, PORTS.radius],
      ...Object.entries(CLUSTER.nats).flatMap(([name, n]) => (name === 'nats' ? [n.route] : [n.client, n.monitor, n.route])),
      ...Object.entries(CLUSTER.redis).flatMap(([name, n]) => (name === 'redis' ? [n.bus] : [n.port, n.bus])),
    ];
    assert.equal(new Set(used).size, used.length, 'no port twice');
    const text = `${JSON.stringify(base)}${JSON.stringify(derived)}`;
    for (const address of [/\bnats(-\d)?:(4222|6222)\b/, /\bredis(-\d)?:6379\b/, /\b0\.0\.0\.0:/, /\bpostgres:5432\b/, /\bjaeger:4318\b/]) assert.doesNotMatch(text, address);
  });

  it('refuses a node it has no ports for', () => {
    const { 'nats-3': _nats3, ...twoNats } = CLUSTER.nats;
    assert.throws(() => deriveClusterOverride(realCluster, PORTS, { ...CLUSTER, nats: twoNats }), /no ports for the NATS node nats-3/);
    const { 'redis-6': _redis6, ...fiveRedis } = CLUSTER.redis;
    assert.throws(() => deriveClusterOverride(realCluster, PORTS, { ...CLUSTER, redis: fiveRedis }), /no ports for the Redis node redis-6/);
  });
});
