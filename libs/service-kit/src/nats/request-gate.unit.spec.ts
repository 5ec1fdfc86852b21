import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RequestGate, type GatedRequest } from './request-gate.js';

/** A request the test finishes by hand (as the transport does: exit() once answered), recording what became of it. */
function request(gate: () => RequestGate, log: string[], name: string, deadline?: number, first?: boolean): GatedRequest & { finish: () => Promise<void> } {
  return {
    deadline,
    ...(first ? { first } : {}),
    run: () => void log.push(`run ${name}`),
    drop: (reason) => log.push(`drop ${name} ${reason}`),
    finish: async () => {
      gate().exit();
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

describe('RequestGate: admission under overload', () => {
  const options = { limit: 2, maxWaiting: 3, lifoAfterMs: 100, minTimeLeftMs: 50 };

  it('runs at once below the limit, then serves the waiting first come first served while the queue moves', async () => {
    let now = 1_000;
    const gate = new RequestGate({ ...options, now: () => now });
    const log: string[] = [];
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => request(() => gate, log, n));
    for (const r of [a, b, c, d]) gate.admit(r!);
    assert.deepEqual(log, ['run a', 'run b']);
    assert.equal(gate.waiting, 2);
    now += 10;
    await a!.finish();
    assert.deepEqual(log, ['run a', 'run b', 'run c']);
    await b!.finish();
    assert.deepEqual(log.at(-1), 'run d');
    await c!.finish();
    await d!.finish();
    assert.equal(gate.active, 0);
    await gate.idle();
  });

  it('serves the newest first once the oldest has waited long, and drops whatever ran out of time untouched', async () => {
    let now = 1_000;
    const gate = new RequestGate({ ...options, now: () => now });
    const log: string[] = [];
    const a = request(() => gate, log, 'a');
    const b = request(() => gate, log, 'b');
    gate.admit(a);
    gate.admit(b);
    const old = request(() => gate, log, 'old', 1_300);
    const fresh = request(() => gate, log, 'fresh', 6_000);
    gate.admit(old);
    now += 20;
    gate.admit(fresh);
    now += 150; // the oldest has waited 170 ms
    await a.finish();
    assert.deepEqual(log.slice(2), ['run fresh'], 'the newest first');
    now += 100; // `old` has 30 ms left: less than it needs
    await b.finish();
    assert.deepEqual(log.slice(3), ['drop old deadline'], 'never started');
    await fresh.finish();
    await gate.idle();
  });

  it('keeps at most maxWaiting requests waiting, dropping the oldest, and survives a handler that throws at once', async () => {
    const gate = new RequestGate(options);
    const log: string[] = [];
    const running = [request(() => gate, log, 'r1'), request(() => gate, log, 'r2')];
    running.forEach((r) => gate.admit(r));
    const waiting = ['w1', 'w2', 'w3', 'w4'].map((n) => request(() => gate, log, n));
    waiting.forEach((r) => gate.admit(r));
    assert.deepEqual(log.slice(2), ['drop w1 overload']);
    assert.equal(gate.waiting, 3);
    const throwing: GatedRequest = {
      deadline: undefined,
      run: () => {
        throw new Error('boom');
      },
      drop: () => log.push('drop throwing'),
    };
    gate.admit(throwing);
    assert.deepEqual(log.slice(3), ['drop w2 overload']);
    for (const r of running) await r.finish();
    for (const r of waiting.slice(2)) await r.finish();
    // w3 and w4 ran, then the throwing one ran (and failed) without wedging the gate.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(gate.active, 0);
    assert.equal(gate.waiting, 0);
    await gate.idle();
  });

  it('serves requests marked first before the others, and drops the others first when too many wait', async () => {
    let now = 1_000;
    const gate = new RequestGate({ ...options, now: () => now });
    const log: string[] = [];
    const running = [request(() => gate, log, 'r1'), request(() => gate, log, 'r2')];
    running.forEach((r) => gate.admit(r));
    const start1 = request(() => gate, log, 'start1', 6_000);
    const start2 = request(() => gate, log, 'start2', 6_000);
    const verify1 = request(() => gate, log, 'verify1', 6_000, true);
    const verify2 = request(() => gate, log, 'verify2', 6_000, true);
    for (const r of [start1, start2, verify1]) gate.admit(r);
    now += 10;
    gate.admit(verify2); // four waiting, one too many: the oldest start goes, the verifies stay
    assert.deepEqual(log.slice(2), ['drop start1 overload']);
    await running[0]!.finish();
    await running[1]!.finish();
    assert.deepEqual(log.slice(3), ['run verify1', 'run verify2'], 'the verifies first, in order');
    await verify1.finish();
    assert.deepEqual(log.slice(5), ['run start2']);
    await verify2.finish();
    await start2.finish();
    await gate.idle();
  });
  it('keeps at most maxWaitingBytes of bodies waiting: a request that would go past it is dropped on arrival, and bytes leave with their requests', async () => {
    const gate = new RequestGate({ ...options, maxWaiting: 100, maxWaitingBytes: 1_000 });
    const log: string[] = [];
    const sized = (name: string, bytes: number) => ({ ...request(() => gate, log, name), bytes });
    const [a, b] = [sized('a', 10), sized('b', 10)];
    gate.admit(a);
    gate.admit(b);
    const [c, d, e] = [sized('c', 600), sized('d', 600), sized('e', 400)];
    for (const r of [c, d, e]) gate.admit(r);
    assert.deepEqual(log, ['run a', 'run b', 'drop d overload']);
    assert.deepEqual([gate.waiting, gate.bytesWaiting], [2, 1_000]);
    await a.finish();
    assert.deepEqual([log.at(-1), gate.bytesWaiting], ['run c', 400]);
    // Room again: the next large body waits.
    const f = sized('f', 600);
    gate.admit(f);
    assert.deepEqual([gate.waiting, gate.bytesWaiting], [2, 1_000]);
    for (const r of [b, c, e, f]) await r.finish();
    assert.deepEqual([gate.active, gate.waiting, gate.bytesWaiting], [0, 0, 0]);
  });
});
