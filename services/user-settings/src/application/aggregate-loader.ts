import type { EventStore } from '../adapters/event-store.js';
import type { SnapshotStore } from '../adapters/snapshot-store.js';
import type { Decider } from '../domain/events.js';
import type { TenantEvent } from '../domain/tenant.js';
import type { UserEvent } from '../domain/user.js';

/** Events read past a snapshot before the next command writes a fresh one. */
export const SNAPSHOT_EVERY = 25;
/** Shape of the user state in snapshots; bump when UserState changes, and old snapshots are ignored. */
export const USER_SNAPSHOT_VERSION = 1;

export interface LoadedState<S> {
  state: S;
  /** Stream sequence of the aggregate's last event; 0 when it has none. */
  lastSeq: number;
  /** Events read and folded by this load: what a snapshot would have saved. */
  eventsRead: number;
}

/**
 * Loads aggregates in time independent of their length (security review 6g: a user registered
 * again 10,000 times, or a tenant configured 10,000 times, must not slow its commands down):
 * - a tenant's every event carries its complete settings, so its last event is its state (one
 *   direct get, however often it was configured);
 * - a user is folded from its latest snapshot (MFA_STATE) plus the events after it; a command
 *   that had to read SNAPSHOT_EVERY events or more writes a new snapshot.
 */
export class AggregateLoader {
  constructor(
    private readonly store: EventStore,
    private readonly snapshots: SnapshotStore | undefined,
  ) {}

  async loadTenant<S>(decider: Decider<unknown, S, TenantEvent>, subject: string): Promise<LoadedState<S>> {
    const loaded = await this.store.loadLast(subject);
    return { ...fold(decider, decider.initialState(), loaded.events), lastSeq: loaded.lastSeq };
  }

  async loadUser<S>(decider: Decider<unknown, S, UserEvent>, subject: string): Promise<LoadedState<S>> {
    const snapshot = await this.snapshots?.get<S>(subject, USER_SNAPSHOT_VERSION).catch(() => undefined);
    const loaded = await this.store.load(subject, snapshot?.seq ?? 0);
    return { ...fold(decider, snapshot?.state ?? decider.initialState(), loaded.events), lastSeq: loaded.lastSeq };
  }

  /** Writes a snapshot of `state` at `seq` when the load that led to it read many events. Best effort. */
  async rememberUser<S>(subject: string, loaded: LoadedState<S>, state: S, seq: number): Promise<void> {
    if (!this.snapshots || loaded.eventsRead < SNAPSHOT_EVERY || seq === 0) return;
    await this.snapshots.put(subject, USER_SNAPSHOT_VERSION, { seq, state }).catch(() => undefined);
  }
}

function fold<S, E extends { type: string }>(decider: Decider<unknown, S, E>, initial: S, events: readonly { type: string }[]) {
  let state = initial;
  let eventsRead = 0;
  for (const event of events) {
    eventsRead++;
    if (decider.accepts(event)) state = decider.evolve(state, event);
  }
  return { state, eventsRead };
}
