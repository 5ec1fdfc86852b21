import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';

/**
 * Ports for the servers a test or the benchmark starts. Each is chosen at random below the kernel's
 * ephemeral range (where outgoing connections take their local ports, so a client connecting to
 * NATS or Redis meanwhile cannot take it), checked free by binding it, and never handed out twice by
 * this process (two harnesses started together cannot be given the same one).
 */
const handedOut = new Set<number>();
const LOWEST_PORT = 10_000;

function ephemeralRangeStart(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > 0) return low;
  } catch {
    // not Linux: the IANA dynamic range begins here
  }
  return 49_152;
}

async function pickPort(kind: string, bindable: (port: number) => Promise<boolean>, osPort: () => Promise<number>): Promise<number> {
  const top = ephemeralRangeStart() - 1;
  // A kernel whose ephemeral range starts low leaves no room below it: take what the OS gives.
  if (top - LOWEST_PORT < 1_000) return osPort();
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = LOWEST_PORT + randomInt(top - LOWEST_PORT + 1);
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free ${kind} port found between ${LOWEST_PORT} and ${top}`);
}

function tcpBindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

function udpBindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => {
      socket.close();
      resolve(false);
    });
    socket.bind({ port, address: '127.0.0.1', exclusive: true }, () => socket.close(() => resolve(true)));
  });
}

/** A TCP port on 127.0.0.1 that is free now and that this process has not handed out before. */
export function freePort(): Promise<number> {
  return pickPort('TCP', tcpBindable, async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return port;
  });
}

/** A UDP port free on 127.0.0.1 now (the RADIUS front's, in tests and the benchmark). */
export function freeUdpPort(): Promise<number> {
  return pickPort('UDP', udpBindable, async () => {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const { port } = socket.address();
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    return port;
  });
}

/**
 * Starts servers together (a NATS cluster, a Redis Cluster, Postgres with its replica) and returns
 * them in order. When one fails, those that did start are stopped before the error is thrown: a
 * server left running would keep the test process alive.
 */
export async function startTogether<T extends Promise<{ stop(): Promise<unknown> }>[]>(starts: [...T]): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const results = await Promise.allSettled(starts);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (!failed) return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
  await Promise.allSettled(results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.stop()] : [])));
  throw failed.reason;
}

/**
 * Runs the services as real processes (what `npm start`, the end-to-end tests and the benchmark
 * use): each gets its own environment, its output is passed to `onLine`, readiness is its
 * /health answering 200, and stop() sends SIGTERM and waits for a clean exit.
 */
export const SERVICE_NAMES = ['user-settings', 'auth-challenge', 'dispatch', 'fraud', 'reporting', 'radius', 'console'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];
/**
 * What a stack runs unless told otherwise: every service but the fronts, the operators' console and
 * the RADIUS front (npm start adds them; their tests ask for them).
 */
export const CORE_SERVICE_NAMES: readonly ServiceName[] = SERVICE_NAMES.filter((s) => s !== 'console' && s !== 'radius');

const DEFAULT_PORTS: Record<ServiceName, number> = {
  console: 3000,
  'auth-challenge': 3001,
  dispatch: 3002,
  fraud: 3003,
  'user-settings': 3004,
  reporting: 3005,
  radius: 3006,
};

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../..');

interface ServiceProcess {
  name: ServiceName;
  instance: number;
  url: string;
  child: ChildProcess;
  stop(): Promise<number | null>;
}

interface StackOptions {
  services?: readonly ServiceName[];
  /** Instances of each service (scale-out tests run two), or per service (the others run one). */
  instances?: number | Partial<Record<ServiceName, number>>;
  env?: Record<string, string | undefined>;
  /** Per-service extra environment. */
  serviceEnv?: Partial<Record<ServiceName, Record<string, string>>>;
  /** Fixed ports (npm start) or 0 for free ones (tests, second instances). */
  fixedPorts?: boolean;
  onLine?: (service: string, line: string) => void;
  readyTimeoutMs?: number;
  /**
   * The tests' defaults (true unless set): the throttles across users off
   * (PHONE_MAX_SENDS_PER_WINDOW, PREFIX_MAX_SENDS_PER_WINDOW, PREFIX_GLOBAL_MAX_SENDS_PER_WINDOW,
   * IP_MAX_STARTS_PER_WINDOW are 0 unless `env` or `serviceEnv` set them) and INSTANCE_NAME always
   * `<service>-<instance>`. npm start sets it to false: the services then take these from the
   * environment, or their own defaults (throttles on), and INSTANCE_NAME is `<service>-<instance>`
   * only where the environment does not set it.
   */
  testDefaults?: boolean;
}

/**
 * Tests sign the same few phone numbers and addresses in many times: the throttles across users
 * are on only where a test turns them on (throttling.e2e).
 */
const TEST_THROTTLES_OFF: Record<string, string> = {
  PHONE_MAX_SENDS_PER_WINDOW: '0',
  PREFIX_MAX_SENDS_PER_WINDOW: '0',
  PREFIX_GLOBAL_MAX_SENDS_PER_WINDOW: '0',
  IP_MAX_STARTS_PER_WINDOW: '0',
};

export interface Stack {
  processes: ServiceProcess[];
  url(name: ServiceName, instance?: number): string;
  /**
   * Kills one instance by its process id (SIGKILL unless told otherwise: no shutdown, a crash) and
   * waits for it to exit. It leaves `processes` until restarted.
   */
  kill(name: ServiceName, instance: number, signal?: NodeJS.Signals): Promise<void>;
  /** Starts that instance again (same name and instance number, new HTTP port) and waits until it is ready. */
  restart(name: ServiceName, instance: number): Promise<ServiceProcess>;
  stop(): Promise<void>;
}

async function startOne(name: ServiceName, instance: number, options: StackOptions): Promise<ServiceProcess> {
  // A test may fix a service's port (the console's, which its identity provider must know first).
  const requested = options.serviceEnv?.[name]?.[name === 'console' ? 'CONSOLE_PORT' : 'HTTP_PORT'];
  const port = requested && instance === 1 ? Number(requested) : options.fixedPorts && instance === 1 ? DEFAULT_PORTS[name] : await freePort();
  // STACK_NODE_ARGS: extra Node options for diagnosis, e.g. `--cpu-prof --cpu-prof-dir=prof`.
  const nodeArgs = (process.env.STACK_NODE_ARGS ?? '').split(' ').filter(Boolean);
  // A profile named after its service, so that `node bench/profile-top.mjs prof/*` says whose it is.
  if (nodeArgs.includes('--cpu-prof')) nodeArgs.push(`--cpu-prof-name=${name}-${instance}-${Date.now()}.cpuprofile`);
  const testDefaults = options.testDefaults ?? true;
  const given: Record<string, string | undefined> = {
    ...process.env,
    ...(testDefaults ? TEST_THROTTLES_OFF : {}),
    ...options.env,
    ...options.serviceEnv?.[name],
  };
  const child = spawn(process.execPath, ['--enable-source-maps', ...nodeArgs, join(repoRoot, 'services', name, 'dist', 'main.js')], {
    cwd: repoRoot,
    env: {
      ...given,
      HTTP_PORT: String(port),
      // The console serves its pages, /health and /metrics on CONSOLE_PORT.
      ...(name === 'console' ? { CONSOLE_PORT: String(port) } : {}),
      INSTANCE_NAME: (!testDefaults && given.INSTANCE_NAME) || `${name}-${instance}`,
      OTEL_SERVICE_NAME: name,
    } as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const label = instancesOf(options, name) > 1 ? `${name}#${instance}` : name;
  const url = `http://127.0.0.1:${port}`;
  // The last lines it printed, for the error when it exits before it is ready.
  const lastLines: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      lastLines.push(line);
      if (lastLines.length > 15) lastLines.shift();
      options.onLine?.(label, line);
    });
  }
  // 'close' comes once its output is read to the end too: the last lines say why.
  const exited = once(child, 'close').then(([code]) => {
    throw new Error(`${label} exited with code ${String(code)} before it was ready; its last lines:\n${lastLines.join('\n')}`);
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} not ready within ${options.readyTimeoutMs ?? 60_000} ms`)), options.readyTimeoutMs ?? 60_000);
  });
  try {
    await Promise.race([waitHealthy(url, options.readyTimeoutMs ?? 60_000), exited, timeout]);
    exited.catch(() => undefined);
    return {
      name,
      instance,
      url,
      child,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
        const done = once(child, 'exit');
        child.kill('SIGTERM');
        const [code] = (await done) as [number | null];
        return code;
      },
    };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function waitHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`${url}/health`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url}/health not ready`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function instancesOf(options: StackOptions, name: ServiceName): number {
  return typeof options.instances === 'number' ? options.instances : (options.instances?.[name] ?? 1);
}

/**
 * Starts the services in dependency order (user-settings first: it creates the tenant stream
 * auth-challenge reads), instances of one service in parallel.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const processes: ServiceProcess[] = [];
  const wanted = options.services ?? CORE_SERVICE_NAMES;
  const stop = async () => {
    await Promise.all(processes.splice(0).map((p) => p.stop()));
  };
  try {
    for (const name of SERVICE_NAMES.filter((n) => wanted.includes(n))) {
      const count = instancesOf(options, name);
      // Every instance that did start is kept for stop(), also when another failed: an orphan
      // would keep the test process alive.
      const results = await Promise.allSettled(Array.from({ length: count }, (_, i) => startOne(name, i + 1, options)));
      for (const r of results) if (r.status === 'fulfilled') processes.push(r.value);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    processes,
    url(name, instance = 1) {
      const p = processes.find((x) => x.name === name && x.instance === instance);
      if (!p) throw new Error(`${name}#${instance} is not running`);
      return p.url;
    },
    async kill(name, instance, signal = 'SIGKILL') {
      const index = processes.findIndex((x) => x.name === name && x.instance === instance);
      if (index < 0) throw new Error(`${name}#${instance} is not running`);
      const [p] = processes.splice(index, 1);
      const { child } = p!;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = once(child, 'exit');
      child.kill(signal);
      await done;
    },
    async restart(name, instance) {
      if (processes.some((x) => x.name === name && x.instance === instance)) throw new Error(`${name}#${instance} is running`);
      const p = await startOne(name, instance, options);
      processes.push(p);
      return p;
    },
    stop,
  };
}
