import { headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import type { z } from 'zod';
import { ContractError, describeIssues, MAX_REQUEST_BYTES, type ErrorCode } from '@mfa/contracts';
import { contextFromCarrier, histogram, SpanKind, SpanStatusCode, withSpan, type Logger } from '@mfa/telemetry';

export interface RequestContext {
  subject: string;
  /** When the request arrived; handlers pass it on instead of reading the clock. */
  receivedAt: Date;
}

export type RequestHandler<S extends z.ZodType> = (request: z.infer<S>, context: RequestContext) => Promise<unknown>;

const duration = histogram('mfa_request_duration_seconds', 'Request/reply handling time', ['subject', 'outcome']);
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Serves the public request/reply API. Each subject is a queue-group subscription, so any number
 * of instances share the load. Every request gets exactly one reply: the handler's result, or
 * `{"error":{code,message}}` for oversized, malformed or invalid input, contract errors, and
 * anything unexpected (logged, answered as `internal` without internals).
 */
export class RequestRouter {
  private readonly subscriptions: Subscription[] = [];
  /** Requests being handled, so stop() can let them finish (and record their events). */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly queue: string,
    private readonly log: Logger,
  ) {}

  handle<S extends z.ZodType>(subject: string, schema: S, handler: RequestHandler<S>): void {
    const sub = this.nc.subscribe(subject, {
      queue: this.queue,
      callback: (error, msg) => {
        if (error) {
          this.log.error('subscription error', { subject, error });
          return;
        }
        const handling = this.dispatch(subject, schema, handler, msg);
        this.inFlight.add(handling);
        void handling.finally(() => this.inFlight.delete(handling));
      },
    });
    this.subscriptions.push(sub);
  }

  private async dispatch<S extends z.ZodType>(subject: string, schema: S, handler: RequestHandler<S>, msg: Msg) {
    const started = process.hrtime.bigint();
    const receivedAt = new Date();
    let outcome: 'ok' | ErrorCode = 'ok';
    const parent = contextFromCarrier({
      traceparent: msg.headers?.get('traceparent') || undefined,
      tracestate: msg.headers?.get('tracestate') || undefined,
    });
    let reply: unknown;
    try {
      reply = await withSpan(
        subject,
        { kind: SpanKind.SERVER, parent, attributes: { 'messaging.system': 'nats', 'messaging.destination.name': subject } },
        async (span) => {
          try {
            const request = this.parse(schema, msg);
            return await handler(request, { subject, receivedAt });
          } catch (error) {
            const contractError = this.toContractError(subject, error);
            outcome = contractError.code;
            span.setAttribute('mfa.error.code', contractError.code);
            if (contractError.code === 'internal') span.setStatus({ code: SpanStatusCode.ERROR });
            return { error: { code: contractError.code, message: contractError.message } };
          }
        },
      );
    } catch (error) {
      outcome = 'internal';
      this.log.error('request handling failed', { subject, error });
      reply = { error: { code: 'internal', message: 'internal error' } };
    }
    if (msg.reply) {
      try {
        msg.respond(encoder.encode(JSON.stringify(reply)));
      } catch (error) {
        this.log.warn('reply failed', { subject, error });
      }
    }
    duration.observe({ subject, outcome }, Number(process.hrtime.bigint() - started) / 1e9);
  }

  private parse<S extends z.ZodType>(schema: S, msg: Msg): z.infer<S> {
    if (msg.data.length > MAX_REQUEST_BYTES) {
      throw new ContractError('invalid_request', `request body is larger than ${MAX_REQUEST_BYTES} bytes`);
    }
    let body: unknown;
    try {
      body = JSON.parse(decoder.decode(msg.data));
    } catch {
      throw new ContractError('invalid_request', 'request body is not valid JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new ContractError('invalid_request', 'request body must be a JSON object');
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) throw new ContractError('invalid_request', describeIssues(parsed.error.issues));
    return parsed.data;
  }

  private toContractError(subject: string, error: unknown): ContractError {
    if (error instanceof ContractError) return error;
    this.log.error('unexpected error while handling request', { subject, error });
    return new ContractError('internal', 'internal error');
  }

  /** Stops taking requests, then waits for those already taken to be answered. */
  async stop(): Promise<void> {
    for (const sub of this.subscriptions.splice(0)) await sub.drain().catch(() => undefined);
    await Promise.allSettled([...this.inFlight]);
  }
}

/** A NATS request with a JSON body, for IdPs, tests and the demo. Injects the trace context. */
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
