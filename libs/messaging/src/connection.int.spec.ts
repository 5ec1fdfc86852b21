import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually, freePort, itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { connectNats } from './connection.js';
import { natsSecurityFromEnv } from './security.js';

/**
 * A password that changes on the server for a few seconds (a rotation done on the server first,
 * a restart with a file that lacked the user): the services must come back once it is accepted
 * again. nats.js closes the connection for good after two refusals in a row unless told not to.
 */
describe('connectNats when the server refuses the password for a while', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mfa-nats-auth-'));
  const config = join(dir, 'nats-server.conf');
  // Letters and digits: nats-server reads other values as something else (operations.md).
  const writePassword = (password: string) => writeFileSync(config, `authorization {\n  user: svc\n  password: ${password}\n}\n`);
  let server: NatsServerProcess;

  before(async () => {
    writePassword('right1');
    server = await startNatsServer({ config });
  });

  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  itWith({ real: ['nats'] }, 'keeps reconnecting through authorization violations and is back once the password is accepted', async () => {
    const nats = await connectNats({ url: server.url, name: 'auth-change-test', security: natsSecurityFromEnv({ NATS_USER: 'svc', NATS_PASSWORD: 'right1' }), connectTimeoutMs: 5_000 });
    try {
      const refused = (async () => {
        let count = 0;
        for await (const status of nats.nc.status()) {
          if (status.type === 'error' && /Authorization Violation/i.test(String(status.error))) count++;
          if (count >= 3) return count;
        }
        return count;
      })();
      writePassword('other2');
      await server.restart();
      // Three refusals in a row: nats.js's default gives up at the second and closes.
      const outcome = await Promise.race([refused, nats.nc.closed().then(() => 'closed')]);
      assert.equal(outcome, 3, 'the connection was closed after the authorization violations');
      writePassword('right1');
      await server.restart();
      await eventually(() => nats.jsm.getAccountInfo().then(() => true), 10_000, 'JetStream answering again after the password is accepted');
      assert.equal(nats.nc.isClosed(), false);
    } finally {
      await nats.nc.close();
    }
  });
});

/**
 * A boot attempt that connected but found no JetStream (a server without it, an account without
 * it yet) is retried: each attempt's connection must be closed, not left reconnecting forever.
 */
describe('connectNats against a server without JetStream', () => {
  let child: ReturnType<typeof spawn> | undefined;
  let monitor = 0;
  let port = 0;

  before(async () => {
    port = await freePort();
    monitor = await freePort();
    child = spawn(process.env.NATS_SERVER_BIN ?? 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitor)], { stdio: 'ignore' });
    await eventually(() => fetch(`http://127.0.0.1:${monitor}/varz`).then((r) => (r.ok ? true : undefined)), 10_000, 'nats-server monitoring');
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    }
  });

  const connections = async () => ((await (await fetch(`http://127.0.0.1:${monitor}/connz`)).json()) as { num_connections: number }).num_connections;

  itWith({ real: ['nats'] }, 'gives up after the connect budget and leaves no connection open', async () => {
    await assert.rejects(connectNats({ url: `nats://127.0.0.1:${port}`, name: 'no-jetstream-test', connectTimeoutMs: 2_500 }), /NATS_URL: cannot connect/);
    // The server notices a closed socket at once; give it a moment, then nothing may stay.
    await eventually(async () => ((await connections()) === 0 ? true : undefined), 3_000, 'no client connection left').catch(() => undefined);
    assert.equal(await connections(), 0);
  });
});
