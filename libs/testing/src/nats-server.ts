import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accepts } from './child-server.js';
import { freePort, repoRoot } from './stack.js';

export interface NatsServerProcess {
  url: string;
  port: number;
  /** The current server's process id (a restart changes it). */
  readonly pid: number;
  /** The JetStream store directory (`-sd`), to inspect what the server keeps on disk. */
  storeDir: string;
  /** What the server printed so far, over every run (its log goes to stderr). */
  output(): string;
  /**
   * Kills the server by its process id (SIGKILL unless told otherwise) and waits for it to exit;
   * the store directory stays, so restart() finds the JetStream data again.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again with the same arguments: same port, same store directory. */
  restart(): Promise<void>;
  /** Stops this server (by its process id) and removes its JetStream store. */
  stop(): Promise<void>;
}

/**
 * A nats-server of a test's own: a free port on 127.0.0.1, JetStream in a new temporary directory,
 * optionally a configuration file (flags given here override it) and extra environment (the
 * passwords a configuration reads). `NATS_SERVER_BIN` names the binary (default: nats-server).
 * kill() and restart() let a test take the server away and bring it back on the same port and
 * store directory (fault injection).
 */
export async function startNatsServer(options: { config?: string; args?: string[]; env?: Record<string, string> } = {}): Promise<NatsServerProcess> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'mfa-nats-'));
  const storeDir = join(dir, 'store');
  const args = [...(options.config ? ['-c', options.config] : []), '-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir, ...(options.args ?? [])];
  let output = '';
  let child: ChildProcess;
  let exited: Promise<unknown>;
  const running = () => child.pid !== undefined && child.exitCode === null && child.signalCode === null;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (running()) {
      child.kill(signal);
      await exited;
    }
  };
  const launch = async () => {
    child = spawn(process.env.NATS_SERVER_BIN ?? 'nats-server', args, { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let spawnError: Error | undefined;
    child.once('error', (error) => (spawnError = error));
    for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
    exited = once(child, 'exit');
    const deadline = Date.now() + 10_000;
    // The client port opens after JetStream is ready (after the store is recovered, on a restart).
    while (!(await accepts(port))) {
      if (spawnError) throw new Error('cannot start nats-server (NATS_SERVER_BIN)', { cause: spawnError });
      if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}: ${output.trim()}`);
      if (Date.now() > deadline) throw new Error(`nats-server did not listen on ${port}: ${output.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async () => {
    await kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    get pid() {
      return child.pid!;
    },
    storeDir,
    output: () => output,
    kill,
    async restart() {
      await kill('SIGKILL');
      try {
        await launch();
      } catch (error) {
        await kill('SIGKILL');
        throw error;
      }
    },
    stop,
  };
}

/** The passwords deploy/nats/nats-server.conf reads from the environment, one per user it defines. */
export interface DeployedNatsPasswords {
  services: string;
  idp: string;
  console: string;
  radius: string;
}

/** Fresh random passwords for the users of deploy/nats/nats-server.conf: letters and digits, starting with a letter (what the server reads back unchanged from its environment). */
export function deployedNatsPasswords(): DeployedNatsPasswords {
  const password = () => `p${randomBytes(24).toString('hex')}`;
  return { services: password(), idp: password(), console: password(), radius: password() };
}

/** A nats-server of the caller's own running the shipped deploy/nats/nats-server.conf, its users with these passwords. */
export function startDeployedNatsServer(passwords: DeployedNatsPasswords): Promise<NatsServerProcess> {
  return startNatsServer({
    config: join(repoRoot, 'deploy', 'nats', 'nats-server.conf'),
    env: {
      MFA_NATS_SERVICES_PASSWORD: passwords.services,
      MFA_NATS_IDP_EXAMPLE_PASSWORD: passwords.idp,
      MFA_NATS_CONSOLE_PASSWORD: passwords.console,
      MFA_NATS_RADIUS_PASSWORD: passwords.radius,
    },
  });
}
