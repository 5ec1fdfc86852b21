import { headers, type NatsConnection } from '@nats-io/nats-core';

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
