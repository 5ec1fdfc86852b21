import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { freePort, freeUdpPort, startTogether } from './stack.js';

const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);

describe('ports for the servers tests start', () => {
  it('are below the ephemeral range, never handed out twice, and free', async () => {
    const ports = [];
    for (let i = 0; i < 200; i++) ports.push(await freePort());
    assert.equal(new Set(ports).size, ports.length, 'no port handed out twice');
    if (ephemeralStart - 10_000 >= 1_000) {
      assert.ok(
        ports.every((p) => p >= 10_000 && p < ephemeralStart),
        `outgoing connections take their local ports from ${ephemeralStart} on: ${ports.filter((p) => p >= ephemeralStart).join(', ')}`,
      );
    }
    // Each can be listened on.
    const port = ports[0]!;
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('skips a port something listens on', async () => {
    // Occupy 800 ports of the range it picks from, then ask for 500: about 17 of its random picks
    // land on an occupied one, and each must be passed over.
    const occupied: Array<ReturnType<typeof createServer>> = [];
    while (occupied.length < 800) {
      const server = createServer();
      const port = 10_000 + Math.floor(Math.random() * (Math.min(ephemeralStart, 65_536) - 10_000));
      const ok = await new Promise<boolean>((resolve) => server.once('error', () => resolve(false)).listen(port, '127.0.0.1', () => resolve(true)));
      if (ok) occupied.push(server);
    }
    const taken = new Set(occupied.map((s) => (s.address() as { port: number }).port));
    const given: number[] = [];
    for (let i = 0; i < 500; i++) given.push(await freePort());
    await Promise.all(occupied.map((s) => new Promise((r) => s.close(r))));
    assert.deepEqual(given.filter((p) => taken.has(p)), []);
    const udp = await freeUdpPort();
    assert.ok(!given.includes(udp), 'a UDP port is not one of the TCP ones handed out');
  });

  it('startTogether stops those that started when one fails', async () => {
    const stopped: string[] = [];
    const harness = (name: string) => ({ stop: async () => void stopped.push(name) });
    await assert.rejects(
      startTogether([Promise.resolve(harness('a')), Promise.reject(new Error('b failed')), Promise.resolve(harness('c'))]),
      /b failed/,
    );
    assert.deepEqual(stopped.sort(), ['a', 'c']);
    const [a, c] = await startTogether([Promise.resolve(harness('a')), Promise.resolve(harness('c'))]);
    assert.ok(a && c);
  });
});
