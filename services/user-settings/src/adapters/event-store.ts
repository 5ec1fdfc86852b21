import type { JetStreamManager } from '@nats-io/jetstream';
import { parseEvent, Streams, type AnyEvent } from '@mfa/contracts';
import { readAggregate, type EventPublisher } from '@mfa/messaging';
import { createLogger, type Logger } from '@mfa/telemetry';

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
    try {
      return { events: [parseEvent(last.json())], lastSeq: last.seq };
    } catch {
      return this.load(subject);
    }
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
