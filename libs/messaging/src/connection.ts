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
 * Connects to NATS and JetStream with the service's credentials, TLS and inbox prefix. Reconnects
 * forever once connected; the first connect retries for `connectTimeoutMs` so services can start
 * before NATS is up (docker compose, CI).
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
    try {
      const nc = await connect({
        servers: natsServers(options.url),
        name: options.name,
        ...natsSecurityOptions(options.security ?? {}),
        // One attempt (TCP, TLS, authentication) never outlasts the whole connect timeout.
        timeout: Math.max(500, Math.min(20_000, deadline - Date.now())),
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        pingInterval: 10_000,
        // No per-request Error objects for async stack traces: they cost more than the request.
        noAsyncTraces: true,
      });
      const js = jetstream(nc, { timeout: 5_000 });
      const jsm = await jetstreamManager(nc, { timeout: 5_000 });
      return { nc, js, jsm };
    } catch (error) {
      lastError = error;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  throw new Error(`cannot connect to NATS at ${options.url}`, { cause: lastError });
}
