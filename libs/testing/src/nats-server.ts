import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './stack.js';

export interface NatsServerProcess {
  url: string;
  port: number;
  pid: number;
  /** The JetStream store directory (`-sd`), to inspect what the server keeps on disk. */
  storeDir: string;
  /** What the server printed so far (its log goes to stderr). */
  output(): string;
  /** Stops this server (by its process id) and removes its JetStream store. */
  stop(): Promise<void>;
}

/**
 * A nats-server of a test's own: a free port on 127.0.0.1, JetStream in a new temporary directory,
 * optionally a configuration file (flags given here override it) and extra environment (the
 * passwords a configuration reads). `NATS_SERVER_BIN` names the binary (default: nats-server).
 */
export async function startNatsServer(options: { config?: string; args?: string[]; env?: Record<string, string> } = {}): Promise<NatsServerProcess> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'mfa-nats-'));
  const args = [...(options.config ? ['-c', options.config] : []), '-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(dir, 'store'), ...(options.args ?? [])];
  const child = spawn(process.env.NATS_SERVER_BIN ?? 'nats-server', args, { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let spawnError: Error | undefined;
  child.once('error', (error) => (spawnError = error));
  for (const stream of [child.stdout, child.stderr]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit');
  const stop = async () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    // The client port opens after JetStream is ready.
    while (!(await accepts(port))) {
      if (spawnError) throw new Error('cannot start nats-server (NATS_SERVER_BIN)', { cause: spawnError });
      if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}: ${output.trim()}`);
      if (Date.now() > deadline) throw new Error(`nats-server did not listen on ${port}: ${output.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `nats://127.0.0.1:${port}`, port, pid: child.pid!, storeDir: join(dir, 'store'), output: () => output, stop };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
