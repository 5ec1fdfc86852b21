import { headers, type ConnectionOptions, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { natsServers } from './connection.js';
import { natsSecurityFromEnv, natsSecurityOptions, type NatsSecurityEnv } from './security.js';

/**
 * Connection options of a client outside the services (an IdP, the demo, the benchmark, tests),
 * from the same environment the services read: NATS_URL and the NATS_* credentials, TLS and
 * inbox prefix. An IdP under deploy/nats's permissions sets NATS_INBOX_PREFIX=_INBOX_<its user>.
 */
export function natsClientOptions(env: NatsSecurityEnv & { NATS_URL?: string | undefined } = process.env): ConnectionOptions {
  return { servers: natsServers(env.NATS_URL || 'nats://127.0.0.1:4222'), ...natsSecurityOptions(natsSecurityFromEnv(env)) };
}

/** Connects a client with natsClientOptions; `overrides` win (a name, a test's own server). */
export async function connectClient(overrides: Partial<ConnectionOptions> = {}, env: NatsSecurityEnv & { NATS_URL?: string | undefined } = process.env): Promise<NatsConnection> {
  return connect({ ...natsClientOptions(env), ...overrides });
}

/** A NATS request with a JSON body, for IdPs, tests and the demo. */
export async function requestJson<T = unknown>(
  nc: NatsConnection,
  subject: string,
  body: unknown,
  options: { timeoutMs?: number; headers?: Record<string, string> } = {},
): Promise<T> {
  const h = headers();
  for (const [k, v] of Object.entries(options.headers ?? {})) h.set(k, v);
  const data = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const msg = await nc.request(subject, data, { timeout: options.timeoutMs ?? 5_000, headers: h });
  return msg.json<T>();
}
