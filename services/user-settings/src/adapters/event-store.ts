import type { JetStreamManager } from '@nats-io/jetstream';
import { Streams, type AnyEvent } from '@mfa/contracts';
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

  /** An event this code cannot read is skipped (and logged), so the aggregate stays usable. */
  async load(subject: string): Promise<LoadedAggregate> {
    const { events, lastSeq } = await readAggregate(this.jsm, this.stream, subject, this.log);
    return { events: events.map((s) => s.event), lastSeq };
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
