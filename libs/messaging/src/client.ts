import { setTimeout as delay } from 'node:timers/promises';
import { headers, NoRespondersError, RequestError, type ConnectionOptions, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
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

/**
 * How long a request that found no responders is sent again at most. "No responders" means no
 * instance received it, so sending it again is safe; on a NATS cluster it answers a request sent
 * in the moment a node died, while the services connected to it reconnect to another (about a
 * second). A service that is not running at all is still reported after this long.
 */
export const NO_RESPONDERS_RETRY_MS = 2_000;

/** Whether nats.js rejected a request because nobody subscribes to its subject. */
export function isNoResponders(error: unknown): boolean {
  if (error instanceof RequestError && error.isNoResponders()) return true;
  return error instanceof NoRespondersError || (error instanceof Error && error.cause instanceof NoRespondersError);
}

/**
 * nc.request, sent again (after 50, 100, 200, 400… ms) while it finds no responders, for at most
 * `retryMs` (NO_RESPONDERS_RETRY_MS) and within `timeout` in all: any other failure, and a reply,
 * end it at once.
 */
export async function requestSentAgainWithoutResponders(
  nc: NatsConnection,
  subject: string,
  data: string | Uint8Array,
  options: { timeout: number; headers?: MsgHdrs; retryMs?: number },
): Promise<Msg> {
  const started = Date.now();
  const retryUntil = started + Math.min(options.retryMs ?? NO_RESPONDERS_RETRY_MS, options.timeout);
  for (let wait = 50; ; wait = Math.min(wait * 2, 400)) {
    try {
      return await nc.request(subject, data, { timeout: Math.max(1, options.timeout - (Date.now() - started)), ...(options.headers ? { headers: options.headers } : {}) });
    } catch (error) {
      if (!isNoResponders(error) || Date.now() + wait >= retryUntil) throw error;
      await delay(wait);
    }
  }
}

/**
 * A NATS request with a JSON body, for IdPs, tests, the demo, the console and the CLI; sent again
 * for a moment while it finds no responders (requestSentAgainWithoutResponders).
 */
export async function requestJson<T = unknown>(
  nc: NatsConnection,
  subject: string,
  body: unknown,
  options: { timeoutMs?: number; headers?: Record<string, string>; noRespondersRetryMs?: number } = {},
): Promise<T> {
  const h = headers();
  for (const [k, v] of Object.entries(options.headers ?? {})) h.set(k, v);
  const data = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const msg = await requestSentAgainWithoutResponders(nc, subject, data, {
    timeout: options.timeoutMs ?? 5_000,
    headers: h,
    ...(options.noRespondersRetryMs !== undefined ? { retryMs: options.noRespondersRetryMs } : {}),
  });
  return msg.json<T>();
}
