import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams } from '@mfa/contracts';

/** A state folded from an aggregate's events up to `seq`. */
export interface Snapshot<S> {
  seq: number;
  state: S;
}

/** What the subject of an aggregate's snapshot holds. */
export interface SnapshotRead<S> {
  /** The snapshot, if there is one of the version asked and the aggregate was not erased. */
  snapshot?: Snapshot<S>;
  /** Stream sequence of the subject's message; 0 when it holds none. */
  revision: number;
  /** The aggregate's sequence at its erasure, when the subject holds an erasure's tombstone. */
  erasedSeq?: number;
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
    return (await this.read<S>(aggregateSubject, version)).snapshot;
  }

  /**
   * The snapshot, if one of this version is stored, with what `put` needs to write the next one:
   * the message's sequence (0: the subject holds none) and, when the aggregate was erased, the
   * sequence of its erasure.
   */
  async read<S>(aggregateSubject: string, version: number): Promise<SnapshotRead<S>> {
    const msg = await this.jsm.direct.getMessage(this.stream, { last_by_subj: EventSubjects.snapshot(aggregateSubject) });
    if (!msg) return { revision: 0 };
    try {
      const value = msg.json<{ v?: unknown; seq?: unknown; state?: unknown; erased?: unknown }>();
      if (typeof value.erased === 'number') return { revision: msg.seq, erasedSeq: value.erased };
      if (value.v !== version || typeof value.seq !== 'number' || typeof value.state !== 'object' || value.state === null) return { revision: msg.seq };
      return { revision: msg.seq, snapshot: { seq: value.seq, state: value.state as S } };
    } catch {
      return { revision: msg.seq };
    }
  }

  /**
   * Writes the snapshot if the subject still holds what `read` found (`revision`), else throws:
   * a snapshot folded before an erasure can never be written after it, whatever the order of the
   * two (the erasure's tombstone moved the subject on), nor one older than another writer's.
   */
  async put<S>(aggregateSubject: string, version: number, snapshot: Snapshot<S>, revision: number): Promise<void> {
    await this.js.publish(EventSubjects.snapshot(aggregateSubject), JSON.stringify({ v: version, seq: snapshot.seq, state: snapshot.state }), {
      expect: { lastSubjectSequence: revision },
    });
  }

  /**
   * Replaces the aggregate's snapshot by the tombstone of its erasure at `erasedSeq` (its data must
   * not outlive the aggregate's): the stream keeps one message per subject, so the snapshot goes,
   * and a `put` of a state read before it is refused. An empty subject would not do that: a
   * command that read no snapshot before the erasure would write its own after it.
   */
  async remove(aggregateSubject: string, erasedSeq: number): Promise<void> {
    await this.js.publish(EventSubjects.snapshot(aggregateSubject), JSON.stringify({ erased: erasedSeq }));
  }
}
