import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect as tcpConnect } from 'node:net';
import { freePort } from './stack.js';

export interface RedisServerProcess {
  url: string;
  port: number;
  pid: number;
  /** Stops this server by its process id. */
  stop(): Promise<void>;
}

/**
 * A redis-server of a test's own, on a free port of 127.0.0.1, keeping nothing on disk: for tests
 * that flush, kill or restart Redis without touching the shared one. `REDIS_SERVER_BIN` names the
 * binary (default: redis-server).
 */
export async function startRedisServer(port?: number): Promise<RedisServerProcess> {
  const chosen = port ?? (await freePort());
  const child = spawn(process.env.REDIS_SERVER_BIN ?? 'redis-server', ['--bind', '127.0.0.1', '--port', String(chosen), '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  for (const stream of [child.stdout, child.stderr]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit');
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  const url = `redis://127.0.0.1:${chosen}`;
  const deadline = Date.now() + 10_000;
  while (!(await answersPing(chosen))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server did not start on ${chosen}: ${output.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url, port: chosen, pid: child.pid!, stop };
}

/** PING in Redis's protocol over a plain socket (this entry point loads no Redis client). */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.once('error', () => done(false));
  });
}
