import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '@mfa/radius/packet';
import { parse } from 'yaml';
import { repoRoot } from '@mfa/testing';
import { Redis } from 'ioredis';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectClient } from '@mfa/messaging';
import { cannotRun, ensureBaseImage, ensurePackages, ensureStandIns, removeLeftovers, startDaemon, type Daemon } from './compose/harness.js';
import { CLUSTER_DERIVATION_CHANGES, DERIVATION_CHANGES, deriveClusterOverride, deriveCompose } from './compose/derive.js';
import { CLUSTER, PORTS } from './compose/ports.js';
import { runDemo } from './demo.js';
import { CraftedClient } from './radius/client.js';

/**
 * The product's docker-compose.yml, run for real (issue 14): its own Docker daemon, images built
 * from deploy/Dockerfile on stand-ins of the official images, `--profile app up --build`, every
 * healthcheck passing, then the demo's sign-ins (SMS, TOTP, a hardware token...) and its report
 * query against the containers through the public NATS API with auth on, every service's /health
 * and /metrics, and `down -v`. Then the same images on clusters, with docker-compose.cluster.yml on
 * top (issue 17): 3 NATS servers, a Redis Cluster of 3 masters and 3 replicas, the demo again, every
 * stream with 3 replicas, the Redis Cluster whole and holding the services' keys on every master.
 * `npm run test:compose`; skipped (with the reason) where it cannot run.
 */
const why = cannotRun();
/** The RADIUS front answers this host (the test) for a tenant of its own. */
const radiusSecret = `radius-${Date.now().toString(36)}-secret`;
const PROJECT = 'open-mfa-test';
const passwords = {
  services: `svc${Date.now().toString(36)}Pass1`,
  console: `con${Date.now().toString(36)}Pass1`,
  radius: `rad${Date.now().toString(36)}Pass1`,
  idp: `idp${Date.now().toString(36)}Pass1`,
};
const platformKey = `platform-${'k'.repeat(40)}`;

describe('docker-compose: the whole stack in containers', { skip: why ? `compose test skipped: ${why}` : false }, () => {
  let daemon: Daemon | undefined;
  let dir: string;
  let file: string;
  let clusterFile: string;
  const phases: Array<[string, number]> = [];
  const phase = async <T>(name: string, work: () => T | Promise<T>): Promise<T> => {
    const started = Date.now();
    try {
      return await work();
    } finally {
      phases.push([name, (Date.now() - started) / 1000]);
      process.stdout.write(`# phase ${name}: ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    }
  };
  const env = () => ({
    ...process.env,
    // Debian's docker client first: compose v1 builds through `docker build` found on PATH.
    PATH: `/usr/sbin:/usr/bin:${process.env.PATH ?? ''}`,
    DOCKER_HOST: daemon!.host,
    DOCKER_BUILDKIT: '1',
    COMPOSE_DOCKER_CLI_BUILD: '1',
    MFA_NATS_SERVICES_PASSWORD: passwords.services,
    MFA_NATS_CONSOLE_PASSWORD: passwords.console,
    MFA_NATS_RADIUS_PASSWORD: passwords.radius,
    MFA_NATS_IDP_EXAMPLE_PASSWORD: passwords.idp,
    MFA_AUTH: 'required',
    MFA_PLATFORM_API_KEY: platformKey,
    RADIUS_CLIENTS: JSON.stringify([{ cidr: '127.0.0.1/32', secret: radiusSecret, tenantId: 'compose-radius', name: 'compose-vpn' }]),
  });
  /** The compose files of the stack under test: the derived docker-compose.yml, then the cluster override on it. */
  let files: string[] = [];
  const compose = (args: string[], timeoutMs?: number) =>
    execFileSync('/usr/bin/docker-compose', ['-p', PROJECT, ...files.flatMap((f) => ['-f', f]), '--project-directory', repoRoot, '--profile', 'app', ...args], {
      env: env(),
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(timeoutMs ? { timeout: timeoutMs, killSignal: 'SIGKILL' as const } : {}),
    });
  /**
   * One `compose build`, killed when it prints nothing for `idleMs`: BuildKit in docker.io 20.10
   * was seen to hang for good while snapshotting a build's local context (its goroutines parked in
   * localSourceHandler.Snapshot, no CPU used). Every step of a healthy build prints within a minute.
   */
  const composeBuild = (service: string, idleMs: number) =>
    new Promise<'built' | 'hung'>((resolve, reject) => {
      const child = spawn('/usr/bin/docker-compose', ['-p', PROJECT, '-f', file, '--project-directory', repoRoot, '--profile', 'app', 'build', service], {
        env: env(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      let hung = false;
      let timer = setTimeout(() => undefined, 0);
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          hung = true;
          child.kill('SIGKILL');
        }, idleMs);
      };
      const take = (chunk: Buffer) => {
        output = (output + chunk.toString('utf8')).slice(-8000);
        arm();
      };
      child.stdout.on('data', take);
      child.stderr.on('data', take);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (hung) resolve('hung');
        else if (code === 0) resolve('built');
        else reject(Object.assign(new Error(`compose build ${service} exited ${code}`), { stderr: output }));
      });
      arm();
    });
  /**
   * The service images, one `compose build` each. A hung build keeps the lock that every later
   * build of the daemon then waits for, so it is killed, the daemon restarted (its data root, the
   * image cache, stays), and the build run again. A build that fails (rather than hangs) fails the
   * test at once.
   */
  const buildImages = async () => {
    const derived = parse(readFileSync(file, 'utf8')) as { services: Record<string, { build?: unknown }> };
    for (const service of Object.keys(derived.services).filter((name) => derived.services[name]!.build)) {
      for (let attempt = 1; (await composeBuild(service, 120_000)) === 'hung'; attempt++) {
        if (attempt === 3) throw new Error(`the build of ${service} hung three times`);
        process.stdout.write(`# build of ${service} printed nothing for 2 minutes; killed, daemon restarted, building it again (attempt ${attempt + 1})\n`);
        spawnSync('pkill', ['-9', '-f', `docker build .*--tag open-mfa/${service}:dev`]);
        await daemon!.stop();
        daemon = await startDaemon();
      }
    }
  };

  before(async () => {
    await phase('packages', ensurePackages);
    daemon = await phase('daemon', startDaemon);
    const removed = removeLeftovers(daemon.host);
    if (removed.length > 0) process.stdout.write(`# left by an earlier run killed before its down, removed: ${removed.join('; ')}\n`);
    await phase('base image', () => ensureBaseImage(daemon!.host));
    await phase('stand-in images', () => ensureStandIns(daemon!.host, repoRoot));
    dir = mkdtempSync(join(tmpdir(), 'mfa-compose-'));
    file = join(dir, 'docker-compose.yml');
    writeFileSync(file, deriveCompose(readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8'), PORTS));
    clusterFile = join(dir, 'docker-compose.cluster.yml');
    writeFileSync(clusterFile, deriveClusterOverride(readFileSync(join(repoRoot, 'docker-compose.cluster.yml'), 'utf8'), PORTS, CLUSTER));
    files = [file];
    for (const change of [...DERIVATION_CHANGES, ...CLUSTER_DERIVATION_CHANGES]) process.stdout.write(`# derived: ${change}\n`);
  });

  after(async () => {
    if (daemon) {
      try {
        await phase('down', () => compose(['down', '-v', '--remove-orphans']));
      } catch (error) {
        process.stderr.write(`compose down failed: ${(error as { stderr?: string }).stderr ?? String(error)}\n`);
      }
      const list = (args: string[]) => execFileSync('/usr/bin/docker', args, { env: env(), encoding: 'utf8' }).trim();
      const left = {
        containers: list(['ps', '-aq']),
        volumes: list(['volume', 'ls', '-q', '--filter', `name=${PROJECT}`]),
        networks: list(['network', 'ls', '-q', '--filter', `name=${PROJECT}`]),
      };
      await daemon.stop();
      assert.deepEqual(left, { containers: '', volumes: '', networks: '' }, 'nothing of the stack left behind');
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    process.stdout.write(`# phases: ${phases.map(([n, s]) => `${n} ${s.toFixed(1)} s`).join(', ')}\n`);
  });

  /**
   * Until every container is healthy, `count` of them, and each one-shot container has exited 0;
   * on failure, their states and the logs' tails.
   */
  const waitUntilHealthy = async (count: number, oneShots: string[] = []) => {
    const deadline = Date.now() + 240_000;
    for (;;) {
      const ps = execFileSync('/usr/bin/docker', ['ps', '-a', '--format', '{{.Names}}\t{{.Status}}'], { env: env(), encoding: 'utf8' }).trim().split('\n');
      const done = (line: string) => (oneShots.some((name) => line.includes(name)) ? /\tExited \(0\)/.test(line) : line.includes('(healthy)'));
      if (ps.length >= count + oneShots.length && ps.every(done)) return;
      assert.ok(Date.now() < deadline, `not every container became healthy:\n${ps.join('\n')}\n${compose(['logs', '--tail', '20']).slice(-6000)}`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  /** The demo's sign-ins (SMS, phone call, TOTP, hardware token, push, fraud) and report query, through the NATS servers of `natsUrl`. */
  const signIns = async (natsUrl: string) => {
    const lines: string[] = [];
    const code = await runDemo({
      out: (line) => lines.push(line),
      platformKey,
      env: { ...process.env, NATS_URL: natsUrl, NATS_USER: 'mfa-services', NATS_PASSWORD: passwords.services, MFA_ENCRYPTION_KEY: '' },
      dispatchUrl: `http://127.0.0.1:${PORTS.services.dispatch}`,
      deviceApiUrl: `http://127.0.0.1:${PORTS.services['auth-challenge']}/device`,
    });
    for (const line of lines) process.stdout.write(`# demo: ${line}\n`);
    assert.equal(code, 0, lines.join('\n'));
    // The demo's own checks passed (SMS, app and hardware token approved, fraud blocks); the report
    // it queried (reports.signins.query) lists the SMS and TOTP sign-ins.
    const report = lines.slice(lines.findIndex((l) => l.includes('reports.signins.query')));
    assert.ok(report.some((l) => /\bsms\s/.test(l)) && report.some((l) => /\btotp\s/.test(l)), `the report lists the SMS and TOTP sign-ins:\n${lines.join('\n')}`);
  };
  const everyServiceHealthy = async () => {
    for (const [service, port] of Object.entries(PORTS.services)) {
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 200, `${service} /health`);
    }
  };

  it('builds, starts healthy, signs in by SMS and TOTP with auth on, reports, and answers /health and /metrics', async () => {
    try {
      await phase('build', buildImages);
      await phase('up', () => compose(['up', '--no-build', '-d'], 600_000));
    } catch (error) {
      assert.fail(`compose up failed: ${((error as { stderr?: string }).stderr ?? String(error)).slice(-4000)}`);
    }
    await phase('healthy', () => waitUntilHealthy(11));
    await phase('sign-ins', () => signIns(`nats://127.0.0.1:${PORTS.nats}`));
    // The RADIUS front in its container: a Status-Server signed with the client's secret is answered
    // (Access-Accept, authentic); one with another secret is not.
    const radius = await new CraftedClient(PORTS.radius, radiusSecret).open();
    try {
      const status = await radius.send({ code: Code.StatusServer }, 5_000);
      assert.equal(status?.packet.code, Code.AccessAccept, 'Status-Server answered');
      assert.ok(status.authentic && status.messageAuthenticatorFirst);
      assert.equal(await radius.send({ code: Code.StatusServer, secret: 'not-the-secret-of-this-client' }, 1_500), undefined);
    } finally {
      radius.close();
    }
    await everyServiceHealthy();
    for (const [service, port] of Object.entries(PORTS.services)) {
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(metrics.status, 200, `${service} /metrics`);
      assert.match(await metrics.text(), /# HELP /, `${service} /metrics is Prometheus text`);
    }
  });

  it('runs on clusters with docker-compose.cluster.yml: 3 NATS servers, streams with 3 replicas, a Redis Cluster of 3 masters and 3 replicas, the sign-ins through them', async () => {
    // The single-server stack goes first, with its volumes: the cluster starts from nothing.
    await phase('single-server down', () => compose(['down', '-v', '--remove-orphans']));
    files = [file, clusterFile];
    try {
      await phase('cluster up', () => compose(['up', '--no-build', '-d'], 600_000));
    } catch (error) {
      const logs = (() => {
        try {
          return compose(['logs', '--tail', '30', 'redis-cluster-init', 'nats', 'nats-2', 'nats-3', 'redis']).slice(-6000);
        } catch {
          return '';
        }
      })();
      assert.fail(`compose up (cluster) failed: ${((error as { stderr?: string }).stderr ?? String(error)).slice(-4000)}\n${logs}`);
    }
    // nats, nats-2, nats-3, redis … redis-6, postgres, jaeger and the seven services; the cluster formed.
    await phase('cluster healthy', () => waitUntilHealthy(18, ['redis-cluster-init']));
    const natsUrl = Object.values(CLUSTER.nats).map((n) => `nats://127.0.0.1:${n.client}`).join(',');
    await phase('cluster sign-ins', () => signIns(natsUrl));
    await phase('cluster checks', async () => {
      await everyServiceHealthy();
      // One JetStream meta group of the three servers, and every stream and bucket the services made
      // with a leader and two followers.
      const leaders = new Set<string>();
      for (const [name, node] of Object.entries(CLUSTER.nats)) {
        const jsz = (await (await fetch(`http://127.0.0.1:${node.monitor}/jsz`)).json()) as { meta_cluster?: { leader?: string; cluster_size?: number } };
        assert.equal(jsz.meta_cluster?.cluster_size, 3, `${name}: a JetStream cluster of 3`);
        leaders.add(jsz.meta_cluster?.leader ?? '');
      }
      assert.equal(leaders.size, 1, `the servers agree on the meta leader: ${[...leaders].join(', ')}`);
      assert.ok(Object.keys(CLUSTER.nats).includes([...leaders][0]!), 'the meta leader is one of nats, nats-2, nats-3');
      const nc = await connectClient({ name: 'compose-test' }, { NATS_URL: natsUrl, NATS_USER: 'mfa-services', NATS_PASSWORD: passwords.services });
      try {
        const jsm = await jetstreamManager(nc);
        const streams = await jsm.streams.list().next();
        assert.ok(streams.length >= 5, `the services' streams and buckets: ${streams.map((s) => s.config.name).join(', ')}`);
        for (const stream of streams) {
          assert.equal(stream.config.num_replicas, 3, `${stream.config.name} has 3 replicas`);
          assert.ok(stream.cluster?.leader, `${stream.config.name} has a leader`);
          assert.equal(stream.cluster?.replicas?.length, 2, `${stream.config.name}: a leader and 2 followers (${JSON.stringify(stream.cluster)})`);
        }
        process.stdout.write(`# cluster: ${streams.length} streams and buckets, each with 3 replicas: ${streams.map((s) => `${s.config.name} (leader ${s.cluster?.leader})`).join(', ')}\n`);
      } finally {
        await nc.close();
      }
      // The Redis Cluster: whole, 3 masters with a replica each, and the services' keys on every
      // master (users, challenges and the projection's per-slot markers spread over the slots).
      const nodes = Object.entries(CLUSTER.redis);
      const masters: number[] = [];
      for (const [name, node] of nodes) {
        const redis = new Redis({ host: '127.0.0.1', port: node.port, lazyConnect: true, maxRetriesPerRequest: 1 });
        try {
          await redis.connect();
          const info = String(await redis.call('CLUSTER', 'INFO'));
          for (const line of ['cluster_state:ok', 'cluster_slots_ok:16384', 'cluster_known_nodes:6', 'cluster_size:3']) assert.match(info, new RegExp(`^${line}\\r?$`, 'm'), `${name}: ${line}`);
          const myself = String(await redis.call('CLUSTER', 'NODES')).split('\n').find((l) => l.includes('myself'))!;
          if (/\bmaster\b/.test(myself)) {
            masters.push(node.port);
            const keys = Number(await redis.dbsize());
            assert.ok(keys > 0, `${name}, a master, holds some of the services' keys`);
            process.stdout.write(`# cluster: ${name} is a master with ${keys} keys\n`);
            const replicas = String(await redis.call('INFO', 'replication'));
            assert.match(replicas, /^connected_slaves:1\r?$/m, `${name}, a master, has its replica`);
          }
        } finally {
          redis.disconnect();
        }
      }
      assert.equal(masters.length, 3, 'three masters');
      // The cluster's one-shot init, run again (as every `up` does), finds it formed and leaves it.
      const again = compose(['run', '--rm', '-T', '--no-deps', 'redis-cluster-init']);
      assert.match(again, /formed already/);
    });
  });
});
