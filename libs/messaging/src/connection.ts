import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { skipSettledRequestErrors } from './request-completion.js';
import { natsSecurityOptions, type NatsSecurity } from './security.js';

export interface NatsClients {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/** `NATS_URL`: one server or several, comma-separated. */
export const natsServers = (url: string): string[] => url.split(',').map((s) => s.trim()).filter(Boolean);

/**
 * What is wrong with a `NATS_URL`, naming the entry (without any password it holds): each server
 * is `nats://host:port`, `tls://host:port` or `host:port` (the port defaults to 4222).
 */
export function natsUrlProblems(url: string): string[] {
  const servers = natsServers(url);
  if (servers.length === 0) return ['NATS_URL: names no server'];
  const problems: string[] = [];
  for (const server of servers) {
    const withScheme = /^[a-z]+:\/\//i.test(server) ? server : `nats://${server}`;
    let parsed: URL | undefined;
    try {
      parsed = new URL(withScheme);
    } catch {
      // reported below
    }
    if (!parsed || !['nats:', 'tls:'].includes(parsed.protocol) || !parsed.hostname || (parsed.pathname !== '' && parsed.pathname !== '/')) {
      const shown = server.replace(/\/\/[^@/]*@/, '//***@').slice(0, 100);
      problems.push(`NATS_URL: ${JSON.stringify(shown)} is not nats://host:port, tls://host:port or host:port`);
    }
  }
  return problems;
}

/**
 * Connects to NATS and JetStream with the service's credentials, TLS and inbox prefix. Reconnects
 * forever once connected, refused credentials included; the first connect retries for
 * `connectTimeoutMs` so services can start before NATS is up (docker compose, CI). What still
 * closes the connection for good (a .creds file that cannot be read at a reconnect) resolves
 * `nc.closed()`: runService watches it.
 */
export async function connectNats(options: {
  url: string;
  name: string;
  security?: NatsSecurity;
  connectTimeoutMs?: number;
}): Promise<NatsClients> {
  skipSettledRequestErrors();
  const deadline = Date.now() + (options.connectTimeoutMs ?? 30_000);
  let lastError: unknown;
  while (Date.now() < deadline) {
    let nc: NatsConnection | undefined;
    try {
      nc = await connect({
        servers: natsServers(options.url),
        name: options.name,
        ...natsSecurityOptions(options.security ?? {}),
        // One attempt (TCP, TLS, authentication) never outlasts the whole connect timeout.
        timeout: Math.max(500, Math.min(20_000, deadline - Date.now())),
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        // nats.js gives up reconnecting after two authorization errors in a row and closes the
        // connection, which no service survives: a password changed on the server before the
        // services' (a rotation), or a nats-server restarted with a file that lacks the user for a
        // moment, would leave every service connected to nothing until restarted by hand. Keep
        // trying instead; /health reports NATS down meanwhile.
        ignoreAuthErrorAbort: true,
        pingInterval: 10_000,
        // No per-request Error objects for async stack traces: they cost more than the request.
        noAsyncTraces: true,
      });
      const js = jetstream(nc, { timeout: 5_000 });
      const jsm = await jetstreamManager(nc, { timeout: 5_000 });
      return { nc, js, jsm };
    } catch (error) {
      lastError = error;
      // Connected but JetStream did not answer: this connection is not returned, so it must not
      // stay open (and reconnecting forever) while the next attempt opens another.
      await nc?.close().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  // Name the variable and the servers (never a password a URL may hold).
  throw new Error(`NATS_URL: cannot connect to any of ${natsServers(options.url).map((s) => s.replace(/\/\/[^@/]*@/, '//***@')).join(', ')}`, { cause: lastError });
}
