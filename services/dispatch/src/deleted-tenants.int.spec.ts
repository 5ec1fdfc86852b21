import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { EventSubjects, Streams } from '@mfa/contracts';
import { connectNats, DeletedTenants, ensureStream, EventPublisher, type NatsClients } from '@mfa/messaging';
import { eventually, freePort, itWith, startNatsServer, tenantCreated, tenantDeleted, testTenant, uniqueTenant, type NatsServerProcess } from '@mfa/testing';

// @mfa/messaging's DeletedTenants, as dispatch uses it (no SMS, call or push for a deleted tenant),
// on a nats-server of this suite's own: the reader reaches it through a TCP proxy the test cuts,
// so that a deletion can be recorded while the reader is disconnected.

process.env.LOG_LEVEL ??= 'warn';

/** A TCP proxy to `target` that can cut every connection and refuse new ones for a while. */
async function tcpProxy(target: number): Promise<{ url: string; cut(): void; restore(): void; close(): Promise<void> }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let refusing = false;
  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(target, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `nats://127.0.0.1:${port}`,
    cut: () => {
      refusing = true;
      for (const socket of sockets) socket.destroy();
    },
    restore: () => {
      refusing = false;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('the deleted tenants, followed in memory', () => {
  let server: NatsServerProcess;
  let proxy: Awaited<ReturnType<typeof tcpProxy>>;
  /** The connection of the service under test, through the proxy. */
  let reader: NatsClients;
  /** user-settings' connection, straight to the server. */
  let writer: NatsClients;
  let publisher: EventPublisher;

  const recordDeleted = (tenantId: string) => publisher.publish(EventSubjects.tenant(tenantId), tenantDeleted(testTenant({ tenantId })));
  const recordCreated = (tenantId: string) => publisher.publish(EventSubjects.tenant(tenantId), tenantCreated(testTenant({ tenantId })));

  before(async () => {
    server = await startNatsServer();
    proxy = await tcpProxy(server.port);
    writer = await connectNats({ url: server.url, name: 'deleted-tenants-writer', connectTimeoutMs: 5_000 });
    await ensureStream(writer.jsm, Streams.userSettings);
    publisher = new EventPublisher(writer.js);
    reader = await connectNats({ url: proxy.url, name: 'deleted-tenants-reader', connectTimeoutMs: 5_000 });
  });

  after(async () => {
    await reader?.nc.close();
    await writer?.nc.close();
    await proxy?.close();
    await server?.stop();
  });

  itWith({ real: ['nats'] }, 'answers from the log until it has read the deleted set, then from memory, following deletions and tenants created again', async () => {
    const gone = uniqueTenant('gone');
    const kept = uniqueTenant('kept');
    await recordCreated(gone);
    await recordDeleted(gone);
    await recordCreated(kept);
    const tenants = new DeletedTenants(reader);
    try {
      // Not started: nothing in memory, every answer read from the log.
      assert.equal(tenants.current, false);
      assert.equal(tenants.knownDeleted(gone), false);
      assert.equal(await tenants.isDeleted(gone), true);
      assert.equal(await tenants.isDeleted(kept), false);
      assert.equal(await tenants.isDeleted(uniqueTenant('never')), false, 'a tenant the log never held is not deleted');

      await tenants.start();
      assert.equal(tenants.current, true);
      assert.equal(tenants.knownDeleted(gone), true);
      assert.equal(tenants.knownDeleted(kept), false);

      await recordDeleted(kept);
      await eventually(async () => (tenants.knownDeleted(kept) ? true : undefined), 10_000, 'the deletion followed');
      assert.equal(await tenants.isDeleted(kept), true);
      // The id created again: a new tenant.
      await recordCreated(gone);
      await eventually(async () => (tenants.knownDeleted(gone) ? undefined : true), 10_000, 'the creation followed');
      assert.equal(await tenants.isDeleted(gone), false);
    } finally {
      await tenants.stop();
    }
  });

  itWith({ real: ['nats'] }, 'after a disconnection, a tenant deleted meanwhile is deleted from the first question on, before the follower has caught up', async () => {
    const tenants = new DeletedTenants(reader);
    await tenants.start();
    try {
      const gone = uniqueTenant('gone-offline');
      assert.equal(await tenants.isDeleted(gone), false);
      const disconnected = waitForStatus(reader, 'disconnect');
      proxy.cut();
      await disconnected;
      // Recorded while this instance is cut off: its follower learns of it only after the reconnection.
      await recordDeleted(gone);
      const reconnected = waitForStatus(reader, 'reconnect');
      proxy.restore();
      await reconnected;
      assert.equal(await tenants.isDeleted(gone), true);
      await eventually(async () => (tenants.current ? true : undefined), 15_000, 'the follower heard from again');
      assert.equal(tenants.knownDeleted(gone), true);
    } finally {
      await tenants.stop();
    }
  });
});

/** Resolves on the connection's next status of this type. */
function waitForStatus(nats: NatsClients, type: 'disconnect' | 'reconnect'): Promise<void> {
  return (async () => {
    for await (const status of nats.nc.status()) if (status.type === type) return;
  })();
}
