import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams } from '@mfa/contracts';

/** A state folded from an aggregate's events up to `seq`. */
export interface Snapshot<S> {
  seq: number;
  state: S;
}

/**
 * Aggregate snapshots in MFA_STATE (one message per subject, `mfa.state.snapshot.<aggregate>`):
 * derived data, never the only copy of anything. A snapshot whose `version` differs from the
 * reader's (the state's shape changed) is ignored, and the aggregate is read from its start.
 */
export class SnapshotStore {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string = Streams.state.name,
  ) {}

  /**
   * A direct get, which any replica answers: a replica a little behind gives an older snapshot,
   * which costs the load a few more events, never a wrong state. A new aggregate has none, the
   * common case of a registration: answered as "not found" without an API error being built.
   */
  async get<S>(aggregateSubject: string, version: number): Promise<Snapshot<S> | undefined> {
    const msg = await this.jsm.direct.getMessage(this.stream, { last_by_subj: EventSubjects.snapshot(aggregateSubject) });
    if (!msg) return undefined;
    try {
      const value = msg.json<{ v?: unknown; seq?: unknown; state?: unknown }>();
      if (value.v !== version || typeof value.seq !== 'number' || typeof value.state !== 'object' || value.state === null) return undefined;
      return { seq: value.seq, state: value.state as S };
    } catch {
      return undefined;
    }
  }

  /** Last writer wins; an older snapshot only costs the next load a few more events to read. */
  async put<S>(aggregateSubject: string, version: number, snapshot: Snapshot<S>): Promise<void> {
    await this.js.publish(EventSubjects.snapshot(aggregateSubject), JSON.stringify({ v: version, seq: snapshot.seq, state: snapshot.state }));
  }

  /** Removes the aggregate's snapshot (its data must not outlive the aggregate's). */
  async remove(aggregateSubject: string): Promise<void> {
    await this.jsm.streams.purge(this.stream, { filter: EventSubjects.snapshot(aggregateSubject) });
  }
}
