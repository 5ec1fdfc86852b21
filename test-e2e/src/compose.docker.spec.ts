import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '@mfa/radius/packet';
import { parse } from 'yaml';
import { repoRoot } from '@mfa/testing';
import { cannotRun, ensureBaseImage, ensurePackages, ensureStandIns, startDaemon, type Daemon } from './compose/harness.js';
import { DERIVATION_CHANGES, deriveCompose, type ComposePorts } from './compose/derive.js';
import { runDemo } from './demo.js';
import { CraftedClient } from './radius/client.js';

/**
 * The product's docker-compose.yml, run for real (issue 14): its own Docker daemon, images built
 * from deploy/Dockerfile on stand-ins of the official images, `--profile app up --build`, every
 * healthcheck passing, then the demo's sign-ins (SMS, TOTP, a hardware token...) and its report
 * query against the containers through the public NATS API with auth on, every service's /health
 * and /metrics, and `down -v`. `npm run test:compose`; skipped (with the reason) where it cannot run.
 */
const why = cannotRun();
const PORTS: ComposePorts = {
  nats: 24301,
  natsMonitor: 24302,
  redis: 24303,
  postgres: 24304,
  otlp: 24305,
  jaegerUi: 24306,
  jaegerAdmin: 24307,
  services: { console: 24310, 'auth-challenge': 24311, dispatch: 24312, fraud: 24313, 'user-settings': 24314, reporting: 24315, radius: 24316 },
  radius: 24317,
};
/** The RADIUS front answers this host (the test) for a tenant of its own. */
const radiusSecret = `radius-${Date.now().toString(36)}-secret`;
const PROJECT = 'open-mfa-test';
const passwords = { services: `svc${Date.now().toString(36)}Pass1`, idp: `idp${Date.now().toString(36)}Pass1` };
const platformKey = `platform-${'k'.repeat(40)}`;

describe('docker-compose: the whole stack in containers', { skip: why ? `compose test skipped: ${why}` : false }, () => {
  let daemon: Daemon | undefined;
  let dir: string;
  let file: string;
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
    MFA_NATS_IDP_EXAMPLE_PASSWORD: passwords.idp,
    MFA_AUTH: 'required',
    MFA_PLATFORM_API_KEY: platformKey,
    RADIUS_CLIENTS: JSON.stringify([{ cidr: '127.0.0.1/32', secret: radiusSecret, tenantId: 'compose-radius', name: 'compose-vpn' }]),
  });
  const compose = (args: string[], timeoutMs?: number) =>
    execFileSync('/usr/bin/docker-compose', ['-p', PROJECT, '-f', file, '--project-directory', repoRoot, '--profile', 'app', ...args], {
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
    await phase('base image', () => ensureBaseImage(daemon!.host));
    await phase('stand-in images', () => ensureStandIns(daemon!.host, repoRoot));
    dir = mkdtempSync(join(tmpdir(), 'mfa-compose-'));
    file = join(dir, 'docker-compose.yml');
    writeFileSync(file, deriveCompose(readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8'), PORTS));
    for (const change of DERIVATION_CHANGES) process.stdout.write(`# derived: ${change}\n`);
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

  it('builds, starts healthy, signs in by SMS and TOTP with auth on, reports, and answers /health and /metrics', async () => {
    try {
      await phase('build', buildImages);
      await phase('up', () => compose(['up', '--no-build', '-d'], 600_000));
    } catch (error) {
      assert.fail(`compose up failed: ${((error as { stderr?: string }).stderr ?? String(error)).slice(-4000)}`);
    }
    await phase('healthy', async () => {
      const deadline = Date.now() + 240_000;
      for (;;) {
        const ps = execFileSync('/usr/bin/docker', ['ps', '-a', '--format', '{{.Names}}\t{{.Status}}'], { env: env(), encoding: 'utf8' }).trim().split('\n');
        if (ps.length >= 11 && ps.every((line) => line.includes('(healthy)'))) return;
        assert.ok(Date.now() < deadline, `not every container became healthy:\n${ps.join('\n')}\n${compose(['logs', '--tail', '20']).slice(-6000)}`);
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    });
    const lines: string[] = [];
    const code = await phase('sign-ins', () =>
      runDemo({
        out: (line) => lines.push(line),
        platformKey,
        env: { ...process.env, NATS_URL: `nats://127.0.0.1:${PORTS.nats}`, NATS_USER: 'mfa-services', NATS_PASSWORD: passwords.services, MFA_ENCRYPTION_KEY: '' },
        dispatchUrl: `http://127.0.0.1:${PORTS.services.dispatch}`,
        deviceApiUrl: `http://127.0.0.1:${PORTS.services['auth-challenge']}/device`,
      }),
    );
    for (const line of lines) process.stdout.write(`# demo: ${line}\n`);
    assert.equal(code, 0, lines.join('\n'));
    // The demo's own checks passed (SMS, app and hardware token approved, fraud blocks); the report
    // it queried (reports.signins.query) lists the SMS and TOTP sign-ins.
    const report = lines.slice(lines.findIndex((l) => l.includes('reports.signins.query')));
    assert.ok(report.some((l) => /\bsms\s/.test(l)) && report.some((l) => /\btotp\s/.test(l)), `the report lists the SMS and TOTP sign-ins:\n${lines.join('\n')}`);
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
    for (const [service, port] of Object.entries(PORTS.services)) {
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 200, `${service} /health`);
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(metrics.status, 200, `${service} /metrics`);
      assert.match(await metrics.text(), /# HELP /, `${service} /metrics is Prometheus text`);
    }
  });
});
