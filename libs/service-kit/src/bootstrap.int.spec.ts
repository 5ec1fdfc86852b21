import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Module } from '@nestjs/common';
import { nkeys } from '@nats-io/nats-core';
import { Streams } from '@mfa/contracts';
import { keyringFromMasterKey } from '@mfa/crypto';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, testEnv, type NatsServerProcess } from '@mfa/testing';
import { AuthModule } from './auth/auth.module.js';
import { main, runService } from './bootstrap.js';
import type { NatsConfig } from './config.js';
import { MessagingModule } from './messaging.module.js';

// A service whose NATS connection closes for good (nats.js gives up: here a .creds file it cannot
// read at a reconnect) must not live on serving nothing: main() stops it and exits with 1. The
// service runs in a child process (this file, with CHILD set), since main() exits its process.

const CHILD = 'MFA_TEST_LOST_NATS_CHILD';

@Module({})
class ProbeModule {}

function bootProbe(name: string, nats: NatsConfig, level: 'info' | 'error') {
  const log = createLogger(name, { level });
  const keyring = keyringFromMasterKey(randomBytes(32));
  return runService({
    name,
    module: {
      module: ProbeModule,
      imports: [
        // The streams the API client directory reads (AuthModule, needed by the transport).
        MessagingModule.forRoot({ serviceName: name, nats, log, streams: [Streams.userSettings, Streams.state], replicas: 1 }),
        AuthModule.forRoot({ auth: { mode: 'off', platformKey: undefined }, keyring }),
      ],
    },
    config: { HTTP_HOST: '127.0.0.1', HTTP_PORT: 0, INSTANCE_NAME: `${name}-1`, keyring },
    log,
  });
}

if (process.env[CHILD]) {
  await main('lost-nats-probe', () => JSON.parse(process.env[CHILD]!) as NatsConfig, (nats) => bootProbe('lost-nats-probe', nats, 'info'));
} else {
  describe('a service whose NATS connection closes for good', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mfa-lost-nats-'));
    const creds = join(dir, 'user.creds');
    let server: NatsServerProcess;

    before(async () => {
      // The server requires no authentication and ignores the JWT; nats.js reads the file anyway.
      const seed = new TextDecoder().decode(nkeys.createUser().getSeed());
      const jwt = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.test';
      writeFileSync(creds, `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`);
      server = await startNatsServer();
    });

    after(async () => {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    itWith({ real: ['nats'] }, 'is stopped by main() and exits with 1 (to be restarted)', async () => {
      const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
        env: { ...process.env, [CHILD]: JSON.stringify({ NATS_URL: server.url, NATS_CREDS: creds }) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      for (const stream of [child.stdout, child.stderr]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      try {
        const ready = Date.now() + 20_000;
        while (!output.includes('lost-nats-probe ready')) {
          assert.ok(child.exitCode === null, `the probe exited at boot: ${output}`);
          assert.ok(Date.now() < ready, `the probe did not start: ${output}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        // A creds file gone at a reconnect: nats.js closes the connection and never retries.
        rmSync(creds);
        await server.restart();
        const waited = AbortSignal.timeout(20_000);
        const [code] = await Promise.race([exited, once(waited, 'abort').then(() => ['still running'])]);
        assert.equal(code, 1, `the probe did not exit with 1: ${output}`);
        assert.match(output, /lost-nats-probe cannot work any more/);
        assert.match(output, /lost-nats-probe stopped/, 'stopped as on SIGTERM first');
      } finally {
        if (child.exitCode === null && child.signalCode === null) {
          process.kill(child.pid!, 'SIGKILL');
          await exited;
        }
      }
    });

    itWith({ real: ['nats'] }, 'is not reported failed when stop() closes the connection', async () => {
      const service = await bootProbe(`stop-probe-${randomUUID().slice(0, 8)}`, { NATS_URL: testEnv.natsUrl }, 'error');
      assert.ok(service.failed, 'a service with NATS says when it fails');
      await service.stop();
      const outcome = await Promise.race([service.failed.then(() => 'failed'), once(AbortSignal.timeout(500), 'abort').then(() => 'running')]);
      assert.equal(outcome, 'running');
    });
  });
}
