import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Streams } from '@mfa/contracts';
import { ensureStream } from '@mfa/messaging';
import { itWith, repoRoot, startNatsCluster, testEnv, type NatsCluster } from '@mfa/testing';

/**
 * Cluster settings that cannot work stop a service at boot with a message naming the variable
 * (issue 17, "Bad input"): a stream that cannot get STREAM_REPLICAS replicas, a NATS_URL that
 * names no reachable server, Redis seeds that do not answer, a mode without its variables. And a
 * stream created with fewer replicas is scaled up to STREAM_REPLICAS at the next boot.
 */

/** Starts user-settings with `env` and waits for it to exit; its output and exit code. */
async function bootUserSettings(env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [join(repoRoot, 'services/user-settings/dist/main.js')], {
    env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', MFA_AUTH: 'off', HTTP_PORT: '0', LOG_LEVEL: 'warn', REDIS_URL: testEnv.redisUrl, NATS_URL: testEnv.natsUrl, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  for (const stream of [child.stdout, child.stderr]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, output };
}

describe('cluster settings checked at boot', () => {
  let cluster: NatsCluster;
  before(async () => {
    cluster = await startNatsCluster({ nodes: 3 });
  });
  after(async () => {
    await cluster?.stop();
  });

  itWith({ real: ['nats', 'redis'] }, 'a service refuses to start, naming the variable, on settings that cannot work', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      // The shared nats-server is not clustered: three replicas cannot be had.
      [{ STREAM_REPLICAS: '3' }, /STREAM_REPLICAS=3: stream \w+ cannot get 3 replicas/],
      [{ NATS_URL: 'nats://127.0.0.1:1,nats://127.0.0.1:2' }, /NATS_URL: cannot connect to any of nats:\/\/127\.0\.0\.1:1, nats:\/\/127\.0\.0\.1:2/],
      [{ NATS_URL: 'nats://127.0.0.1:4222,http://x' }, /NATS_URL: \\?"http:\/\/x\\?" is not/],
      [{ REDIS_MODE: 'cluster' }, /REDIS_NODES: required/],
      [{ REDIS_MODE: 'cluster', REDIS_NODES: '127.0.0.1:1' }, /REDIS_NODES: Redis \(cluster 127\.0\.0\.1:1\) not ready within 30 s/],
      [{ REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'sentinel-without-port' }, /REDIS_SENTINELS: \\?"sentinel-without-port\\?" is not host:port/],
    ];
    // Lines are JSON: a quote in a message shows as \".
    const results = await Promise.all(cases.map(([env]) => bootUserSettings(env)));
    results.forEach(({ code, output }, i) => {
      assert.equal(code, 1, `${JSON.stringify(cases[i]![0])} exits with 1:\n${output.slice(-2000)}`);
      assert.match(output, cases[i]![1], JSON.stringify(cases[i]![0]));
    });
  }, { timeout: 120_000 });

  itWith({ real: ['nats'] }, 'a stream made with one replica is scaled up to STREAM_REPLICAS', async () => {
    const nc = await connect({ servers: cluster.urls.split(',') });
    try {
      const jsm = await jetstreamManager(nc);
      await ensureStream(jsm, Streams.audit, 1);
      assert.equal((await jsm.streams.info(Streams.audit.name)).config.num_replicas, 1);
      await ensureStream(jsm, Streams.audit, 3);
      const info = await jsm.streams.info(Streams.audit.name);
      assert.equal(info.config.num_replicas, 3);
      // Asking for fewer later leaves it as it is (lowering is the operator's decision).
      await ensureStream(jsm, Streams.audit, 1);
      assert.equal((await jsm.streams.info(Streams.audit.name)).config.num_replicas, 3);
    } finally {
      await nc.close();
    }
  }, { timeout: 60_000 });
});
