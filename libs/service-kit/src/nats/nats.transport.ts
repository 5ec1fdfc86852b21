import { Server, type CustomTransportStrategy, type MessageHandler } from '@nestjs/microservices';
import type { Msg, Subscription } from '@nats-io/nats-core';
import { isObservable, lastValueFrom } from 'rxjs';
import { ContractError, Headers, maxRequestBytes, type ErrorCode } from '@mfa/contracts';
import { ensureConsumer, EventConsumer, isReplySubject, type NatsClients } from '@mfa/messaging';
import { contextFromCarrier, counter, histogram, SpanKind, SpanStatusCode, withSpan, type Logger } from '@mfa/telemetry';
import { errorCodeOf, errorReplyOf } from './contract-error.js';
import { JetStreamContext, NatsRequestContext } from './context.js';
import type { JetStreamConsumerExtras, JetStreamConsumerOptions } from './decorators.js';
import type { AuditTrail } from '../auth/audit-trail.js';
import type { RequestGate } from './request-gate.js';
import { droppedRequests as dropped, processRequestGate } from '../admission.js';

const duration = histogram('mfa_request_duration_seconds', 'Request/reply handling time', ['subject', 'outcome']);
const answeredLate = counter('mfa_requests_answered_late_total', 'Requests whose reply was ready only after their Mfa-Deadline (sent all the same: the work was done)', ['subject']);
/** How long a request without an `Mfa-Deadline` may wait for a slot: an IdP's timeout (MISSION.md part 3). */
export const WAIT_WITHOUT_DEADLINE_MS = 5_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

interface NatsTransportOptions {
  nats: NatsClients;
  /** Records admin requests (AuthModule); none in tests of the transport alone. */
  audit?: AuditTrail | undefined;
  /** Queue group of every request subscription: instances of one service share the load. */
  queue: string;
  log: Logger;
  /**
   * What the service's configuration sets over a `@JetStreamConsumer`'s declared options, by
   * durable name (dispatch: SMS_CONCURRENCY, PUSH_CONCURRENCY).
   */
  consumers?: Readonly<Record<string, JetStreamConsumerOptions>> | undefined;
  /**
   * Subjects whose waiting requests are served before the others' when the process is saturated
   * (RequestGate): auth-challenge's verify and status, which finish sign-ins already started.
   */
  firstServed?: readonly string[] | undefined;
}

/**
 * The NestJS transport of every service, on nats.js v3 (Nest's own NATS transport wraps bodies in
 * its envelope, creates a subscription per client request and knows no JetStream).
 *
 * `@MessagePattern(subject)` handlers are served from queue-group callback subscriptions; the wire
 * format is the contract's plain JSON. Every request gets exactly one reply: the handler's value,
 * or `{"error":{code,message}}` (oversized or malformed bodies here, everything else through
 * ContractPipe and ContractErrorFilter). A request whose `Mfa-Deadline` has passed is dropped
 * before any work is done for it: nobody waits for its answer. One taken up in time is answered
 * even if its answer is ready only after the deadline: what it decided stands, and a caller that
 * waits a little longer (the RADIUS front), or whose clock is behind ours, still learns it. A
 * request turned away for overload while its caller may still wait (the queue was full, or it had
 * no deadline and waited WAIT_WITHOUT_DEADLINE_MS) is answered `unavailable` (nothing was done),
 * not left to time out. Dropped unanswered too: one whose reply subject is
 * not an inbox (isReplySubject): answering it would publish with the service's permissions; and
 * one with no reply subject at all (a plain publish), whose answer nobody could receive.
 *
 * `@JetStreamConsumer(definition)` handlers (Nest event handlers) are fed by durable pull
 * consumers, created or updated here first (libs/messaging EventConsumer: batches, ack, nak with
 * back-off, dead letters).
 *
 * The pipeline stays cheap on the hot path: Nest's guards, pipes and filters run as plain async
 * calls (no interceptors, so no rxjs), and the handler's value is sent as it is.
 */
export class NatsTransport extends Server implements CustomTransportStrategy {
  private readonly subscriptions: Subscription[] = [];
  private readonly consumers: EventConsumer[] = [];
  /** Requests being handled, so close() lets them finish (and record their events). */
  private readonly inFlight = new Set<Promise<void>>();
  /** This transport's requests waiting in the gate for a slot, and who waits for none to be left. */
  private queued = 0;
  private readonly unqueued: Array<() => void> = [];
  private readonly stopping = new AbortController();
  private closing: Promise<void> | undefined;
  private lastReplySubjectWarning = 0;

  /**
   * Requests handled at once; the others wait their turn, and are dropped when their deadline
   * comes first. The process's gate (admission.ts), whose slots gated HTTP routes share.
   */
  private readonly gate: RequestGate = processRequestGate();

  constructor(private readonly options: NatsTransportOptions) {
    super();
  }

  listen(callback: (error?: unknown) => void): void {
    this.start().then(() => callback(), callback);
  }

  private async start(): Promise<void> {
    for (const [pattern, handler] of this.messageHandlers) {
      if (handler.isEventHandler) await this.consume(pattern, handler);
      else this.serve(pattern, handler);
    }
  }

  private serve(subject: string, handler: MessageHandler): void {
    const { nc } = this.options.nats;
    const first = this.options.firstServed?.includes(subject) ?? false;
    const maxBytes = maxRequestBytes(subject);
    const sub = nc.subscribe(subject, {
      queue: this.options.queue,
      // nats.js runs this from its socket reader: anything thrown here would stop the connection
      // reading (deaf until a ping timeout reconnects it). Nothing may escape.
      callback: (error, msg) => {
        try {
          if (error) {
            this.options.log.error('subscription error', { subject, error });
            return;
          }
          this.arrive(subject, handler, msg, first, maxBytes);
        } catch (failure) {
          dropped.inc({ subject, reason: 'unreadable' });
          this.options.log.error('request dropped: it could not be taken', { subject, error: failure });
        }
      },
    });
    this.subscriptions.push(sub);
  }

  /** A request as it arrives: dropped, refused, started or queued, before any work is done for it. */
  private arrive(subject: string, handler: MessageHandler, msg: Msg, first: boolean, maxBytes: number): void {
    // A plain publish: nobody can receive the answer, so nobody waits for the work (a start's SMS,
    // a verify's attempt). Every subject served here is request/reply.
    if (!msg.reply) {
      dropped.inc({ subject, reason: 'no_reply' });
      return;
    }
    if (!isReplySubject(msg.reply)) {
      dropped.inc({ subject, reason: 'reply_subject' });
      this.warnOfReplySubject(subject, msg.reply);
      return;
    }
    // nats.js decodes the headers when they are first read, and throws on a malformed one (a
    // name with a space or a colon, a value with a bare line feed): such a request is refused.
    let deadline: number | undefined;
    try {
      deadline = deadlineOf(msg);
    } catch {
      this.refuse(subject, msg, 'unreadable_headers', 'the request headers could not be read');
      return;
    }
    if (deadline !== undefined && deadline <= Date.now()) {
      dropped.inc({ subject, reason: 'deadline' });
      return;
    }
    // Refused on arrival, not after waiting for a slot: a body that could only be refused must not
    // sit in memory meanwhile.
    if (msg.data.length > maxBytes) {
      this.refuse(subject, msg, 'oversized', `request body is larger than ${maxBytes} bytes`);
      return;
    }
    const run = () => {
      const handling = this.handle(subject, handler, msg, deadline);
      this.inFlight.add(handling);
      void handling.finally(() => {
        this.inFlight.delete(handling);
        this.gate.exit();
      });
    };
    if (this.gate.tryEnter()) run();
    else {
      this.queued++;
      // A caller that sent no deadline stops waiting all the same (an IdP after its 5 s, nats.js
      // after its request timeout): it waits for a slot at most WAIT_WITHOUT_DEADLINE_MS, then
      // learns that nothing was done. Unbounded, it could wait behind the newest-first order of a
      // sustained overload until the queue overflowed, and be served after its caller left. A timer
      // answers it even while nothing moves (every slot held by requests that wait on Redis).
      let gaveUp = false;
      const giveUp = () => {
        gaveUp = true;
        dropped.inc({ subject, reason: 'wait_limit' });
        this.unavailable(subject, msg);
      };
      const timer = deadline === undefined ? setTimeout(giveUp, WAIT_WITHOUT_DEADLINE_MS) : undefined;
      this.gate.enqueue({
        deadline,
        first,
        bytes: msg.data.length,
        run: () => {
          clearTimeout(timer);
          this.dequeued();
          // Answered already: no work, and the slot goes back after this turn (a queue of such
          // requests must not become a recursion as deep as the queue).
          if (gaveUp) queueMicrotask(() => this.gate.exit());
          else run();
        },
        drop: (reason) => {
          clearTimeout(timer);
          this.dequeued();
          if (gaveUp) return;
          dropped.inc({ subject, reason: reason === 'deadline' ? 'deadline_waiting' : 'overload' });
          // Turned away for the queue's size, not for lateness: its caller (one that sent no
          // deadline, or one whose deadline is ahead) still waits, and learns at once that nothing
          // was done rather than at its timeout. One whose deadline has passed gets nothing.
          if (reason === 'overload' && (deadline === undefined || deadline > Date.now())) this.unavailable(subject, msg);
        },
      });
    }
  }

  private dequeued(): void {
    if (--this.queued === 0) this.unqueued.splice(0).forEach((resolve) => resolve());
  }

  /** `invalid_request` at once, for a request that could never be handled. */
  private refuse(subject: string, msg: Msg, reason: string, message: string): void {
    dropped.inc({ subject, reason });
    if (!msg.reply) return;
    try {
      msg.respond(encoder.encode(JSON.stringify({ error: { code: 'invalid_request', message } })));
    } catch (error) {
      this.options.log.warn('reply failed', { subject, error });
    }
  }

  /** `unavailable` for a request turned away before any work was done for it. */
  private unavailable(subject: string, msg: Msg): void {
    try {
      msg.respond(encoder.encode(JSON.stringify({ error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } })));
    } catch (error) {
      this.options.log.warn('reply failed', { subject, error });
    }
  }

  /** A caller probing the services: worth a line, but a flood of requests must not flood the log. */
  private warnOfReplySubject(subject: string, reply: string): void {
    if (Date.now() - this.lastReplySubjectWarning < 60_000) return;
    this.lastReplySubjectWarning = Date.now();
    this.options.log.warn('request dropped: its reply subject is not an inbox (one line a minute at most; mfa_requests_dropped_total counts them all)', {
      subject,
      reply: reply.slice(0, 120),
    });
  }

  private async handle(subject: string, handler: MessageHandler, msg: Msg, deadline: number | undefined): Promise<void> {
    const started = process.hrtime.bigint();
    const context = new NatsRequestContext(subject, msg.headers, new Date(), deadline, msg.data);
    const parent = msg.headers
      ? contextFromCarrier({ traceparent: msg.headers.get('traceparent') || undefined, tracestate: msg.headers.get('tracestate') || undefined })
      : undefined;
    let outcome: 'ok' | ErrorCode = 'ok';
    let reply: unknown;
    try {
      reply = await withSpan(
        subject,
        { kind: SpanKind.SERVER, parent, attributes: { 'messaging.system': 'nats', 'messaging.destination.name': subject } },
        async (span) => {
          const { result, body } = await this.invoke(subject, handler, msg, context);
          const code = errorCodeOf(result);
          if (code) {
            outcome = code;
            span.setAttribute('mfa.error.code', code);
            if (code === 'internal') span.setStatus({ code: SpanStatusCode.ERROR });
          }
          const audit = this.options.audit;
          if (audit?.covers(subject, context.operator)) await audit.record(context, body, code ?? 'ok');
          return result;
        },
      );
    } catch (error) {
      outcome = 'internal';
      reply = errorReplyOf(error, this.options.log, subject);
    }
    // Late or not, the work is done and what it decided stands (auth-challenge's outbox records
    // it): its answer is sent. A caller that has given up reads nothing (a NATS client drops a
    // reply to an inbox it no longer waits on); one that waits a little past its deadline (the
    // RADIUS front, a clock behind ours) is told what happened instead of being left to retry a
    // code already used. Mfa-Deadline stops work not yet started, not answers of work done.
    if (deadline !== undefined && Date.now() > deadline) answeredLate.inc({ subject });
    if (msg.reply) {
      try {
        msg.respond(encoder.encode(JSON.stringify(reply)));
      } catch (error) {
        this.options.log.warn('reply failed', { subject, error });
      }
    }
    duration.observe({ subject, outcome }, Number(process.hrtime.bigint() - started) / 1e9);
  }

  /** Body checks, then the Nest pipeline (guards, pipes, handler, filters). */
  private async invoke(
    subject: string,
    handler: MessageHandler,
    msg: Msg,
    context: NatsRequestContext,
  ): Promise<{ result: unknown; body: Record<string, unknown> | undefined }> {
    let body: Record<string, unknown> | undefined;
    try {
      body = parseBody(msg, maxRequestBytes(subject));
      const result: unknown = await handler(body, context);
      return { result: isObservable(result) ? await lastValueFrom(result) : result, body };
    } catch (error) {
      return { result: errorReplyOf(error, this.options.log, subject), body };
    }
  }

  private async consume(pattern: string, handler: MessageHandler): Promise<void> {
    const declared = handler.extras as JetStreamConsumerExtras | undefined;
    if (!declared?.consumer) throw new Error(`event handler ${pattern} has no consumer: declare it with @JetStreamConsumer`);
    const extras: JetStreamConsumerExtras = { ...declared, ...this.options.consumers?.[declared.consumer.durable] };
    await ensureConsumer(this.options.nats.jsm, extras.consumer, extras.maxAckPending);
    const context = new JetStreamContext(extras.consumer, this.stopping.signal);
    const consumer = new EventConsumer({
      js: this.options.nats.js,
      definition: extras.consumer,
      log: this.options.log,
      recreate: () => ensureConsumer(this.options.nats.jsm, extras.consumer!, extras.maxAckPending),
      ...(extras.batchSize !== undefined ? { batchSize: extras.batchSize } : {}),
      ...(extras.concurrency !== undefined ? { concurrency: extras.concurrency } : {}),
      ...(extras.maxWaitMs !== undefined ? { maxWaitMs: extras.maxWaitMs } : {}),
      ...(extras.confirmAcks ? { confirmAcks: true } : {}),
      ...(extras.maxBackoffMs !== undefined ? { maxBackoffMs: extras.maxBackoffMs } : {}),
      handle: async (deliveries) => {
        const result: unknown = await handler(deliveries, context);
        if (isObservable(result)) await lastValueFrom(result, { defaultValue: undefined });
      },
    });
    await consumer.start();
    this.consumers.push(consumer);
  }

  /**
   * Stops taking requests and events, then waits for those already taken: requests are answered,
   * batches are acked (or returned). Runs before the adapters (Redis, Postgres, NATS) close.
   */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      // The consumers stop first (no new batch, buffered messages returned), then the signal ends
      // the handlers' long waits: a handler cut short so fails with a consumer already stopping,
      // which returns its message for another instance instead of counting a failure.
      const consumersStopped = Promise.all(this.consumers.splice(0).map((c) => c.stop()));
      this.stopping.abort();
      for (const sub of this.subscriptions.splice(0)) await sub.drain().catch(() => undefined);
      // This transport's own requests only: the gate is the process's, and the HTTP routes that
      // share it go on taking slots until HTTP closes, after this (the gate would never be idle
      // under steady device-API traffic).
      if (this.queued > 0) await new Promise<void>((resolve) => this.unqueued.push(resolve));
      await Promise.allSettled([...this.inFlight]);
      await consumersStopped;
    })());
  }

  on(): void {
    throw new Error('NatsTransport emits no events');
  }

  unwrap<T>(): T {
    return this.options.nats as T;
  }
}

/**
 * The caller's deadline: Unix time in milliseconds, an unsigned decimal number (digits, perhaps
 * leading zeros, a fraction, and an exponent: Java's Double.toString writes "1.796387582771E12",
 * Go's %g "1.796387582771e+12"; ignoring those would silently serve a deadline its sender meant,
 * after it passed). Anything else is not a deadline and is ignored (docs/api.md): Number() would
 * read "-1", "0x10" or "" as times long past and drop the request.
 */
const DEADLINE = /^\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

function deadlineOf(msg: Msg): number | undefined {
  const value = msg.headers?.get(Headers.deadline);
  if (value === undefined || value.length > 40 || !DEADLINE.test(value)) return undefined;
  const ms = Number(value);
  return Number.isFinite(ms) ? ms : undefined;
}

/** Size, encoding and shape of a request body; the contract's schema is applied by ContractPipe. */
function parseBody(msg: Msg, maxBytes: number): Record<string, unknown> {
  if (msg.data.length > maxBytes) {
    throw new ContractError('invalid_request', `request body is larger than ${maxBytes} bytes`);
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
  return body as Record<string, unknown>;
}
