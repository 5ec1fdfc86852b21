import { dataKeyGeneration } from '@mfa/crypto';
import { openPersonalData, personalDataOf, sealPersonalData, type UserDataKeys } from '@mfa/service-kit';
import type { EventStore } from '../adapters/event-store.js';
import type { SnapshotStore } from '../adapters/snapshot-store.js';
import type { Decider } from '../domain/events.js';
import type { TenantEvent } from '../domain/tenant.js';
import { userDecider, type UserState } from '../domain/user.js';
import { lastErasure, sealedGenerations, type AggregateRef, type UserEventCodec } from './user-events.codec.js';

/** Events read past a snapshot before the next command writes a fresh one. */
export const SNAPSHOT_EVERY = 25;
/**
 * Shape of the user state in snapshots; bump when UserState or the fold changes, and old snapshots
 * are ignored (3: a reset drops the phone's extension; the enrolments of the last day are kept;
 * 4: when push activation codes start to count, set by a first registration and a reset;
 * 5: the hardware tokens the user lost; 6: SecretsResealed, which a release before it skips, so its
 * snapshots may hold secrets the log has sealed again since; 7: when each app password was created).
 */
export const USER_SNAPSHOT_VERSION = 7;

export interface LoadedState<S> {
  state: S;
  /** Stream sequence of the aggregate's last event; 0 when it has none. */
  lastSeq: number;
  /** Events read and folded by this load: what a snapshot would have saved. */
  eventsRead: number;
  /**
   * What the snapshot subject held when this load read it (a user's load only; none when it could
   * not be read): a new snapshot is written only over that, and never over an erasure's tombstone
   * with a state from before the erasure.
   */
  snapshotAt?: { revision: number; erasedSeq?: number };
  /**
   * Set by a load without personal data (`personalData: false`): the data-key generations the
   * user's personal data since the last erasure is sealed under. Such a state is never snapshotted.
   */
  sealedGens?: ReadonlySet<number>;
}

/** What a user snapshot holds: the state without personal data, which is sealed under the user's data key. */
interface StoredUserState {
  state: UserState;
  pii?: string;
}

/**
 * Loads aggregates in time independent of their length (security review 6g: a user registered
 * again 10,000 times, or a tenant configured 10,000 times, must not slow its commands down):
 * - a tenant's every event carries its complete settings, so its last event is its state (one
 *   direct get, however often it was configured);
 * - a user is folded from its latest snapshot (MFA_STATE) plus the events after it (opened by the
 *   codec); a command that had to read SNAPSHOT_EVERY events or more writes a new snapshot.
 * A snapshot keeps the user's personal data sealed under the user's data key, like the events:
 * erasing the key makes every snapshot, on disk or in a backup, as unreadable as the log. A
 * snapshot whose key is gone (erased) is ignored and the aggregate is read from its start.
 */
export class AggregateLoader {
  constructor(
    private readonly store: EventStore,
    private readonly codec: UserEventCodec,
    private readonly keys: UserDataKeys,
    private readonly snapshots: SnapshotStore | undefined,
  ) {}

  async loadTenant<S>(decider: Decider<unknown, S, TenantEvent>, subject: string): Promise<LoadedState<S>> {
    const loaded = await this.store.loadLast(subject);
    return { ...fold(decider, decider.initialState(), loaded.events), lastSeq: loaded.lastSeq };
  }

  /**
   * The user's state. `personalData: false` reads no data key and opens nothing, so it loads a user
   * whose key is gone too (users.delete): the profile's personal fields are left out, and
   * `sealedGens` names the generations they are sealed under.
   */
  async loadUser(ref: AggregateRef, options: { personalData?: boolean } = {}): Promise<LoadedState<UserState>> {
    const personalData = options.personalData !== false;
    // Read before the events: whatever the snapshot subject holds now was written before them.
    const read = await this.readSnapshot(ref, personalData).catch(() => undefined);
    const snapshot = read?.snapshot;
    const loaded = await this.store.load(ref.subject, snapshot?.seq ?? 0);
    const events = await this.codec.open(ref, loaded.events, { personalData });
    let sealed: { sealedGens: ReadonlySet<number> } | undefined;
    if (!personalData) {
      const gens = sealedGenerations(loaded.events);
      // The snapshot's personal data counts unless the events after it erase the user.
      if (read?.sealedGen !== undefined && !lastErasure(loaded.events)) gens.add(read.sealedGen);
      sealed = { sealedGens: gens };
    }
    return {
      ...fold(userDecider, snapshot?.state ?? userDecider.initialState(), events),
      lastSeq: loaded.lastSeq,
      ...(read ? { snapshotAt: { revision: read.revision, ...(read.erasedSeq !== undefined ? { erasedSeq: read.erasedSeq } : {}) } } : {}),
      ...sealed,
    };
  }

  /**
   * Writes a snapshot of `state` at `seq` when the load that led to it read many events. Best
   * effort, and conditional on the snapshot subject being as the load found it: an erasure
   * recorded after the load (by this instance or another) has replaced it by its tombstone, so
   * the state the load folded, personal data or not, is never stored again after the erasure,
   * however long this command took (the data-key cache would still seal under the erased key).
   */
  async rememberUser(ref: AggregateRef, loaded: LoadedState<UserState>, state: UserState, seq: number): Promise<void> {
    const at = loaded.snapshotAt;
    // A state loaded without its personal data would lose it in the snapshot.
    if (!this.snapshots || !at || loaded.sealedGens || loaded.eventsRead < SNAPSHOT_EVERY || seq === 0 || !state.registered) return;
    // A load that read the tombstone but events from before the erasure (a replica behind).
    if (at.erasedSeq !== undefined && seq <= at.erasedSeq) return;
    try {
      const key = await this.keys.getOrCreate(ref.tenantId, ref.aggregateId, { minGen: (state.erasedGen ?? 0) + 1 });
      const { displayName: _d, email: _e, phoneNumber: _p, phoneExtension: _x, ...plain } = state.profile;
      const pii = sealPersonalData(key, this.owner(ref), personalDataOf(state.profile));
      const stored: StoredUserState = { state: { ...state, profile: plain }, ...(pii ? { pii } : {}) };
      await this.snapshots.put(ref.subject, USER_SNAPSHOT_VERSION, { seq, state: stored }, at.revision);
    } catch {
      // A snapshot only saves reading; the next command tries again.
    }
  }

  private async readSnapshot(
    ref: AggregateRef,
    personalData: boolean,
  ): Promise<{ snapshot?: { seq: number; state: UserState }; revision: number; erasedSeq?: number; sealedGen?: number } | undefined> {
    if (!this.snapshots) return undefined;
    const { snapshot, ...at } = await this.snapshots.read<StoredUserState>(ref.subject, USER_SNAPSHOT_VERSION);
    if (!snapshot) return at;
    const { state, pii } = snapshot.state;
    if (!pii) return { ...at, snapshot: { seq: snapshot.seq, state } };
    if (!personalData) {
      const sealedGen = dataKeyGeneration(pii);
      return { ...at, snapshot: { seq: snapshot.seq, state }, ...(sealedGen !== undefined ? { sealedGen } : {}) };
    }
    try {
      const gen = dataKeyGeneration(pii);
      const key = gen === undefined ? undefined : await this.keys.get(ref.tenantId, ref.aggregateId, gen);
      if (key === undefined || key === 'erased') return at;
      const personal = personalDataOf(openPersonalData(key, this.owner(ref), pii));
      return { ...at, snapshot: { seq: snapshot.seq, state: { ...state, profile: { ...state.profile, ...personal } } } };
    } catch {
      // Read from the start instead; the next snapshot replaces this one.
      return at;
    }
  }

  private owner(ref: AggregateRef) {
    return { tenantId: ref.tenantId, userId: ref.aggregateId, purpose: 'profile' as const };
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
