import type { JetStreamManager } from '@nats-io/jetstream';
import { parseEvent, Streams, type AnyEvent } from '@mfa/contracts';
import { readAggregate, type EventPublisher } from '@mfa/messaging';
import { createLogger, type Logger } from '@mfa/telemetry';

/** Aggregates whose parsed last event is kept (tenants: a few hundred bytes to a few KB each). */
const LAST_PARSED_MAX = 10_000;

interface LoadedAggregate {
  events: AnyEvent[];
  /** Stream sequence of the aggregate's last event; 0 when it has none. */
  lastSeq: number;
}

/**
 * The user-settings event log on JetStream: one subject per aggregate, read back with direct gets
 * and appended to with optimistic concurrency on the subject's last sequence.
 */
export class EventStore {
  /**
   * The last event of each aggregate read with loadLast, parsed, by subject with its stream
   * sequence: a tenant's every user command reads the tenant's last event, whose settings (up to
   * 250 CIDRs of trusted IPs and named locations) cost more to validate than to fetch. The message
   * at a sequence never changes, so a hit (same sequence, same server timestamp: a stream created
   * anew numbers from 1 again) is the same event; the read still says which message is last.
   */
  private readonly lastParsed = new Map<string, { seq: number; timestamp: string; event: AnyEvent }>();

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly publisher: EventPublisher,
    private readonly stream: string = Streams.userSettings.name,
    /** Where an unreadable event skipped on load is reported. */
    private readonly log: Logger = createLogger('user-settings'),
  ) {}

  /**
   * The aggregate's events after `afterSeq` (a snapshot's sequence; 0 for all). An event this
   * code cannot read is skipped (and logged), so the aggregate stays usable.
   */
  async load(subject: string, afterSeq = 0): Promise<LoadedAggregate> {
    const { events, lastSeq } = await readAggregate(this.jsm, this.stream, subject, this.log, afterSeq);
    return { events: events.map((s) => s.event), lastSeq };
  }

  /**
   * Only the aggregate's last event, in one direct get: enough for an aggregate whose every event
   * carries its whole state (the tenant's settings). Falls back to reading everything when the
   * last message is not an event this code can read.
   */
  async loadLast(subject: string): Promise<LoadedAggregate> {
    const last = await this.jsm.streams.getMessage(this.stream, { last_by_subj: subject });
    if (!last) return { events: [], lastSeq: 0 };
    const cached = this.lastParsed.get(subject);
    if (cached?.seq === last.seq && cached.timestamp === last.timestamp) return { events: [cached.event], lastSeq: last.seq };
    let event: AnyEvent;
    try {
      event = parseEvent(last.json());
    } catch {
      return this.load(subject);
    }
    this.lastParsed.delete(subject);
    this.lastParsed.set(subject, { seq: last.seq, timestamp: last.timestamp, event });
    if (this.lastParsed.size > LAST_PARSED_MAX) this.lastParsed.delete(this.lastParsed.keys().next().value!);
    return { events: [event], lastSeq: last.seq };
  }

  /**
   * Appends `events` in order, each conditional on the one before, the first on `expectedLastSeq`.
   * Throws ConcurrencyError when the aggregate moved since it was read. Returns the stream
   * sequence of the last event appended.
   */
  async append(subject: string, events: readonly AnyEvent[], expectedLastSeq: number): Promise<number> {
    let seq = expectedLastSeq;
    for (const event of events) {
      const ack = await this.publisher.publish(subject, event, { expectedLastSubjectSequence: seq });
      seq = ack.seq;
    }
    return seq;
  }
}
