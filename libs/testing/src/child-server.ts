import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { freePort } from './stack.js';

// What the multi-node harnesses (nats-cluster, redis-cluster, redis-sentinel, postgres-replica)
// share: one server process that a test can kill by its process id and start again. Internal: the
// package's entry point does not export it.

export interface ChildServer {
  /** The current process id (a restart changes it). */
  readonly pid: number;
  running(): boolean;
  /** What the process printed so far, over every run. */
  output(): string;
  /**
   * Starts the process and waits until `ready` says so. A process that cannot be started, exits or
   * is not ready in time is killed, and the error names it and ends with what it printed.
   */
  launch(extraArgs?: readonly string[]): Promise<void>;
  /**
   * Kills the process by its id (SIGKILL unless told otherwise) and waits for it to exit (and, with
   * `waitForChildren`, for the processes it had started). A process that ignores a gentler signal
   * for `stopTimeoutMs` is killed with SIGKILL, so stopping a harness never hangs a test.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface ChildServerSpec {
  /** Names the process in errors, e.g. `nats-server n2 (port 4301)`. */
  label: string;
  command: string;
  /** The environment variable that chooses the binary, named when it cannot be started. */
  binEnv?: string;
  args: readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Runs the process as this user (Postgres refuses to run as root). */
  owner?: { uid: number; gid: number } | undefined;
  /** Whether the server answers yet (polled; it must not throw). */
  ready: () => Promise<boolean>;
  readyTimeoutMs?: number;
  /** Waits for the process's children too on kill (a postmaster's backends hold its shared memory). */
  waitForChildren?: boolean;
  stopTimeoutMs?: number;
}

export function childServer(spec: ChildServerSpec): ChildServer {
  let child: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  let output = '';
  const running = () => child?.pid !== undefined && child.exitCode === null && child.signalCode === null;
  const tail = () => output.trim().slice(-2000);

  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (!running()) return;
    const pid = child!.pid!;
    const children = spec.waitForChildren ? childPids(pid) : [];
    child!.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (running()) child!.kill('SIGKILL');
        resolve();
      }, spec.stopTimeoutMs ?? 15_000);
    });
    await Promise.race([exited, forced]);
    await exited;
    clearTimeout(timer);
    // Children notice their parent's death and exit; one that does not within 10 s is killed.
    const deadline = Date.now() + 10_000;
    while (children.some(alive)) {
      if (Date.now() > deadline) for (const c of children.filter(alive)) process.kill(c, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const launch = async (extraArgs: readonly string[] = []) => {
    if (running()) throw new Error(`${spec.label} is running: kill it first`);
    const started = spawn(spec.command, [...spec.args, ...extraArgs], {
      cwd: spec.cwd,
      env: spec.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...spec.owner,
    });
    child = started;
    let spawnError: Error | undefined;
    started.once('error', (error) => (spawnError = error));
    for (const stream of [started.stdout!, started.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
    exited = once(started, 'exit').catch(() => undefined);
    const deadline = Date.now() + (spec.readyTimeoutMs ?? 15_000);
    try {
      while (!(await spec.ready())) {
        if (spawnError) throw new Error(`cannot start ${spec.label}${spec.binEnv ? ` (${spec.binEnv})` : ''}`, { cause: spawnError });
        if (started.exitCode !== null || started.signalCode !== null) {
          throw new Error(`${spec.label} exited with ${started.exitCode ?? started.signalCode}: ${tail()}`);
        }
        if (Date.now() > deadline) throw new Error(`${spec.label} not ready within ${spec.readyTimeoutMs ?? 15_000} ms: ${tail()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } catch (error) {
      await kill('SIGKILL');
      throw error;
    }
  };

  return {
    get pid() {
      return child?.pid ?? 0;
    },
    running,
    output: () => output,
    launch,
    kill,
  };
}

/**
 * If the test process ends without stopping a harness (a failed `before`, a killed runner), its
 * servers must not outlive it: SIGKILL to each still running, then its temporary directory goes.
 * Returns the function that unregisters this (stop() calls it once it has cleaned up itself).
 */
export function cleanUpOnExit(servers: () => readonly ChildServer[], dir: string): () => void {
  const onExit = () => {
    for (const server of servers()) {
      try {
        if (server.running()) process.kill(server.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  return () => process.removeListener('exit', onExit);
}

/** `count` different ports, each free a moment ago (freePort). */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Polls `probe` every `intervalMs` until it returns a value other than undefined. On timeout the
 * error says what was awaited and, from `describe`, what was seen last.
 */
export async function pollUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, describe?: () => string, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const seen = describe?.();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${seen ? `; last seen: ${seen}` : ''}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Process ids whose parent is `parent` (a postmaster's backends and helpers). */
export function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Fields after the command name (which may hold spaces): state, ppid, …
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Whether `pid` is a live process (a zombie, exited but not yet reaped, is not). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
