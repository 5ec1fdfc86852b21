import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { answersPing } from './resp.js';
import { freePort } from './stack.js';

export interface RedisServerProcess {
  url: string;
  port: number;
  /** The current server's process id (a restart changes it). */
  readonly pid: number;
  /** Kills the server by its process id (SIGKILL unless told otherwise) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port: empty, since it keeps nothing on disk. */
  restart(): Promise<void>;
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
  let child: ChildProcess;
  let exited: Promise<unknown>;
  let output = '';
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      await exited;
    }
  };
  const launch = async () => {
    output = '';
    child = spawn(process.env.REDIS_SERVER_BIN ?? 'redis-server', ['--bind', '127.0.0.1', '--port', String(chosen), '--save', '', '--appendonly', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
    exited = once(child, 'exit');
    const deadline = Date.now() + 10_000;
    while (!(await answersPing(chosen))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await kill('SIGKILL');
        throw new Error(`redis-server did not start on ${chosen}: ${output.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${chosen}`,
    port: chosen,
    get pid() {
      return child.pid!;
    },
    kill,
    async restart() {
      await kill('SIGKILL');
      await launch();
    },
    stop: () => kill('SIGTERM'),
  };
}
