// Structure checks for docker-compose.yml and deploy/Dockerfile. No container engine is needed:
// the files are parsed and checked against what each service reads from its environment.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

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

    for (const name of Object.keys(expected)) {
      it(`${name} connects as the services' user of the configuration`, () => {
        const env = environmentOf(service(name));
        const user = env.get('NATS_USER') ?? '';
        const password = users.get(user);
        assert.ok(password, `${name}: NATS_USER "${user}" is not a user of deploy/nats/nats-server.conf`);
        assert.match(code, new RegExp(`user\\s*[:=]\\s*${user}[^}]*permissions\\s*[:=]\\s*\\$SERVICES\\b`), `${user} has the services' permissions`);
        assert.ok(isRequiredVariable(env.get('NATS_PASSWORD'), password.slice(1)), `${name}: NATS_PASSWORD must be \${${password.slice(1)}:?…}`);
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
});

describe('.dockerignore', () => {
  it('keeps host dependencies and build output out of the build context', () => {
    const ignored = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const pattern of ['**/node_modules', '**/dist', '.git']) assert.ok(ignored.includes(pattern), `missing ${pattern}`);
  });
});
