import type { JetStreamManager } from '@nats-io/jetstream';
import { Streams, type AnyEvent } from '@mfa/contracts';
import { readAggregate, type EventPublisher } from '@mfa/messaging';

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
  ) {}

  async load(subject: string): Promise<LoadedAggregate> {
    const stored = await readAggregate(this.jsm, this.stream, subject);
    return { events: stored.map((s) => s.event), lastSeq: stored.at(-1)?.seq ?? 0 };
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
