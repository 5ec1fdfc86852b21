import { EventSubjects, subjectIds, UnknownEventError } from '@mfa/contracts';
import { formatWrappedDataKey, SealError, type Keyring } from '@mfa/crypto';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import type { UserProjectionWriter } from '@mfa/projection';
import type { UserDataKeys } from '@mfa/service-kit';
import type { EventStore } from '../adapters/event-store.js';
import type { SnapshotStore } from '../adapters/snapshot-store.js';
import { AggregateLoader } from './aggregate-loader.js';
import { isUserEvent, userDecider } from '../domain/user.js';
import { lastErasure, UserEventCodec } from './user-events.codec.js';
import { userSnapshot } from './user-snapshot.js';

/** Users rebuilt at once from one batch: enough overlap to hide round trips, bounded load. */
const PARALLEL_REBUILDS = 16;
const USER_SUBJECT_PREFIX = EventSubjects.allUsers.slice(0, -1); // 'mfa.evt.user.'

/** `mfa.evt.user.<tenant>.<user>` back to the ids (see EventSubjects.user). */
export function parseUserSubject(subject: string): { tenantId: string; userId: string } | undefined {
  const ids = subjectIds(USER_SUBJECT_PREFIX, subject);
  return ids && { tenantId: ids[0], userId: ids[1] };
}

/**
 * Rebuilds users' Redis projections from their event streams. Each user event only says "this
 * user changed": the projector re-reads the whole aggregate and writes a snapshot at its last
 * sequence. The writer ignores snapshots older than the stored one, so racing the synchronous
 * write of the command path, or replaying the stream after a Redis flush, is harmless.
 *
 * A user whose last word is UserErased is shredded again (data key destroyed, projection replaced
 * by its tombstone): this is what completes an erasure whose command crashed after recording it.
 */
export class UserProjector {
  private readonly codec: UserEventCodec;
  private readonly loader: AggregateLoader;

  constructor(
    store: EventStore,
    private readonly writer: UserProjectionWriter,
    private readonly keyring: Keyring,
    private readonly keys: UserDataKeys,
    snapshots?: SnapshotStore,
  ) {
    this.codec = new UserEventCodec(keys);
    this.loader = new AggregateLoader(store, this.codec, keys, snapshots);
  }

  /** Writes the user's current snapshot (or erasure); false when the user has no events or Redis had it already. */
  async rebuild(tenantId: string, userId: string): Promise<boolean> {
    const subject = EventSubjects.user(tenantId, userId);
    const ref = { subject, tenantId, aggregateId: userId };
    const loaded = await this.loader.loadUser(ref);
    const { state, lastSeq } = loaded;
    // A replay (Redis lost) rebuilds long users again and again: the first rebuild leaves a snapshot.
    await this.loader.rememberUser(ref, loaded, state, lastSeq);
    if (!state.registered) {
      if (state.erasedGen === undefined) return false;
      // The erasure's own time is in its event; a repair of a missed shredding needs only the generation.
      await this.keys.erase(tenantId, userId, state.erasedGen, new Date());
      return this.writer.erase(tenantId, userId, lastSeq);
    }
    const key = await this.keys.getOrCreate(tenantId, userId, { minGen: (state.erasedGen ?? 0) + 1 });
    return this.writer.apply(userSnapshot(this.keyring, tenantId, userId, state, lastSeq, key));
  }

  /** EventConsumer handler: tenant events need nothing here; each user touched is rebuilt once. */
  async handle(deliveries: Delivery[]): Promise<void> {
    const users = new Map<string, { tenantId: string; userId: string }>();
    for (const { event, msg } of deliveries) {
      if (!isUserEvent(event)) continue;
      const ids = parseUserSubject(msg.subject);
      if (!ids) throw new PoisonMessageError(`user event on unexpected subject ${msg.subject.slice(0, 200)}`);
      users.set(msg.subject, ids);
    }
    const pending = [...users.values()];
    for (let i = 0; i < pending.length; i += PARALLEL_REBUILDS) {
      await Promise.all(pending.slice(i, i + PARALLEL_REBUILDS).map((u) => this.rebuildOrPoison(u)));
    }
  }

  private async rebuildOrPoison({ tenantId, userId }: { tenantId: string; userId: string }): Promise<void> {
    try {
      await this.rebuild(tenantId, userId);
    } catch (error) {
      // An event that does not parse, or a secret sealed with a key this instance does not hold,
      // fails the same way on every delivery: dead-letter it (it can be replayed once fixed).
      if (error instanceof UnknownEventError || error instanceof SealError) {
        throw new PoisonMessageError(error.message, { cause: error });
      }
      throw error;
    }
  }
}
