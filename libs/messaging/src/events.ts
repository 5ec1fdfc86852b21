import { hash, randomUUID } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { type JetStreamClient, type JetStreamManager, type PubAck, type StoredMsg } from '@nats-io/jetstream';
import { Headers, parseEvent, type AnyEvent, type EventMetadata, type EventType } from '@mfa/contracts';
import { carrierFromContext, histogram, type Logger } from '@mfa/telemetry';
import { isWrongLastSequence } from './jetstream-errors.js';

const publishDuration = histogram('mfa_event_publish_duration_seconds', 'JetStream publish until its ack, by outcome', ['outcome']);

type VersionOf<T extends EventType> = Extract<AnyEvent, { type: T }>['version'];
/** The data of one version of a type: a type stored in two versions takes the shape of the one named. */
type DataOf<T extends EventType, V extends number> = Extract<AnyEvent, { type: T; version: V }>['data'];

/**
 * Builds an event envelope. `now` comes from the caller (decisions never read the clock
 * themselves); the trace context is taken from the active span unless given.
 */
export function createEvent<T extends EventType, V extends VersionOf<T>>(
  type: T,
  version: V,
  input: { tenantId: string; aggregateId: string; now: Date; data: DataOf<T, V>; metadata?: EventMetadata; id?: string },
): Extract<AnyEvent, { type: T; version: V }> {
  const metadata: EventMetadata = { ...carrierFromContext(), ...input.metadata };
  return {
    id: input.id ?? randomUUID(),
    type,
    version,
    tenantId: input.tenantId,
    aggregateId: input.aggregateId,
    occurredAt: input.now.toISOString(),
    metadata,
    data: input.data,
  } as Extract<AnyEvent, { type: T; version: V }>;
}

/**
 * The event id (and so the Nats-Msg-Id) of an event whose identity is a name, e.g. one decision
 * of one challenge: whoever builds that event (the instance that took the decision, or the
 * outbox relay after it crashed) gives it the same id, so JetStream stores it once. A UUID made
 * of the name's SHA-256 with the RFC 9562 version bits given (8, "custom", unless an id format
 * already stored says otherwise) and the variant bits set, so envelope validation accepts it.
 */
export function eventIdOf(name: string, version: 4 | 8 = 8): string {
  const b = hash('sha256', name, 'buffer').subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | (version << 4);
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class ConcurrencyError extends Error {
  override name = 'ConcurrencyError';
}

const encoder = new TextEncoder();

/**
 * Appends events to JetStream. The event id is the Nats-Msg-Id, so a retried publish of the same
 * event is stored once. With `expectedLastSubjectSequence` the append is conditional on the
 * subject (aggregate) not having moved: optimistic concurrency.
 */
export class EventPublisher {
  constructor(private readonly js: JetStreamClient) {}

  async publish(
    subject: string,
    event: AnyEvent,
    options: { expectedLastSubjectSequence?: number; timeoutMs?: number } = {},
  ): Promise<PubAck> {
    const h = natsHeaders();
    h.set(Headers.eventType, event.type);
    h.set(Headers.eventVersion, String(event.version));
    h.set(Headers.tenant, event.tenantId);
    if (event.metadata.traceparent) h.set(Headers.traceparent, event.metadata.traceparent);
    if (event.metadata.tracestate) h.set(Headers.tracestate, event.metadata.tracestate);
    const started = performance.now();
    let outcome = 'ok';
    try {
      return await this.js.publish(subject, encoder.encode(JSON.stringify(event)), {
        msgID: event.id,
        headers: h,
        timeout: options.timeoutMs ?? 5_000,
        ...(options.expectedLastSubjectSequence !== undefined
          ? { expect: { lastSubjectSequence: options.expectedLastSubjectSequence } }
          : {}),
      });
    } catch (error) {
      if (isWrongLastSequence(error)) {
        outcome = 'conflict';
        throw new ConcurrencyError(`${subject} moved on since it was read`, { cause: error });
      }
      outcome = 'error';
      throw error;
    } finally {
      publishDuration.observe({ outcome }, (performance.now() - started) / 1000);
    }
  }
}

interface RetryOptions {
  /** Publishes tried in all, the first included. */
  attempts: number;
  /** Pause before retry n is n × delayMs. */
  delayMs?: number;
  /** Called before each retry (e.g. to tell JetStream a message being handled is still in progress). */
  beforeRetry?: () => void;
}

/**
 * Publishes an event, trying the same envelope again when a publish fails: the Nats-Msg-Id makes
 * a publish that was stored but whose ack got lost harmless to repeat. Throws the last error.
 */
export async function publishWithRetry(
  publisher: Pick<EventPublisher, 'publish'>,
  subject: string,
  event: AnyEvent,
  options: RetryOptions,
): Promise<PubAck> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await publisher.publish(subject, event);
    } catch (error) {
      if (attempt >= options.attempts) throw error;
      options.beforeRetry?.();
      if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs! * attempt));
    }
  }
}

interface StoredEvent {
  seq: number;
  subject: string;
  event: AnyEvent;
}

interface StoredAggregate {
  events: StoredEvent[];
  /** Stream sequence of the subject's last message, skipped ones included (the next append expects it); 0 when none. */
  lastSeq: number;
}

/**
 * The first message on `subject` after stream sequence `afterSeq`, or null: a STREAM.MSG.GET,
 * answered by the stream leader. The server takes next_by_subj there (nats-server 2.9); nats.js's
 * type names only seq and last_by_subj.
 */
export function nextMessageOn(jsm: JetStreamManager, stream: string, subject: string, afterSeq: number): Promise<StoredMsg | null> {
  return jsm.streams.getMessage(stream, { seq: afterSeq + 1, next_by_subj: subject } as unknown as { seq: number });
}

/**
 * Reads back all events of one aggregate subject, in order, one get each from the stream leader
 * (next message for the subject after a sequence): an aggregate holds a handful of events, and the server finds
 * the next one through its per-subject index. A message that is not an event this code knows
 * (unknown type, bad shape, not JSON) is logged as an error and skipped: it must not make the
 * aggregate unreadable and fail every later command on it.
 */
export async function readAggregate(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  log: Logger,
  /** Read only events after this stream sequence (a snapshot's); 0 reads them all. */
  afterSeq = 0,
): Promise<StoredAggregate> {
  const events: StoredEvent[] = [];
  let lastSeq = afterSeq;
  for (;;) {
    // From the stream leader, never a direct get: on a replicated stream (STREAM_REPLICAS > 1) any
    // replica may answer a direct get, and one that lags would hide the events acknowledged just
    // before (a register followed at once by an enroll).
    const msg = await nextMessageOn(jsm, stream, subject, lastSeq);
    if (!msg) break;
    lastSeq = msg.seq;
    let event: AnyEvent;
    try {
      event = parseEvent(msg.json());
    } catch (error) {
      log.error('unreadable event skipped while loading an aggregate', { stream, subject, seq: msg.seq, error });
      continue;
    }
    events.push({ seq: msg.seq, subject: msg.subject, event });
  }
  return { events, lastSeq };
}
