import { EventSubjects, subjectIds } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import { isTransientDependencyError, PoisonMessageError, type Delivery } from '@mfa/messaging';
import { counter } from '@mfa/telemetry';
import type { UserProjectionWriter } from '@mfa/projection';
import { UserErasedMeanwhileError, type UserDataKeys } from '@mfa/service-kit';
import type { EventStore } from '../adapters/event-store.js';
import type { SnapshotStore } from '../adapters/snapshot-store.js';
import { AggregateLoader } from './aggregate-loader.js';
import { isUserEvent } from '../domain/user.js';
import { UserEventCodec } from './user-events.codec.js';
import { userSnapshot } from './user-snapshot.js';

const projected = counter(
  'mfa_user_projector_users_total',
  'Users the durable projector was handed, by outcome: already whole in Redis at their event (their command wrote them), or rebuilt from the stream',
  ['outcome'],
);

/** Users rebuilt at once from one batch: enough overlap to hide round trips, bounded load. */
const PARALLEL_REBUILDS = 16;
/** Tries of a user whose rebuild fails for a reason of its own (not an outage) before giving up on them. */
const USER_ATTEMPTS = 3;
/** Wait before trying such a user again, times the attempt. */
const USER_RETRY_MS = 100;

/**
 * A user who cannot be projected for a reason of their own: an event or a secret that does not
 * read, a data key missing from MFA_USER_KEYS (the key stream lost or restored from an older
 * backup), anything that is not a dependency outage and did not pass on a second try. Its message
 * names the cause only (no personal data, no secret).
 */
export class UnprojectableUserError extends Error {
  override name = 'UnprojectableUserError';
}
const USER_SUBJECT_PREFIX = EventSubjects.allUsers.slice(0, -1); // 'mfa.evt.user.'

/** Events that take something from the user that lives outside their record (hardware tokens, remembered browsers). */
const REMOVALS: ReadonlySet<string> = new Set(['TotpTokenDeleted', 'UserMfaReset', 'UserErased']);
/**
 * `resetAt`, after a reset: browsers remembered, and MFA completed, up to then are forgotten: the
 * reset's time plus RESET_REACH_MS. Until the reset's projection is written the user's old methods
 * still sign in, so what they did meanwhile goes too, and the reach is far beyond the clock skew
 * between hosts (auth-challenge stamps browsers with its clock, the reset has user-settings'); a
 * replay long after leaves what the user did after registering again.
 */
export type RemovalsHandler = (tenantId: string, userId: string, options: { resetAt?: Date | undefined }, now: Date) => Promise<void>;
export const RESET_REACH_MS = 10 * 60_000;

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
 * A user whose last word is UserErased is shredded again (data key destroyed, snapshot removed,
 * projection replaced by its tombstone): this is what completes an erasure whose command crashed
 * after recording it.
 */
export class UserProjector {
  private readonly codec: UserEventCodec;
  private readonly loader: AggregateLoader;
  private removals?: RemovalsHandler;

  constructor(
    store: EventStore,
    private readonly writer: UserProjectionWriter,
    private readonly keyring: Keyring,
    private readonly keys: UserDataKeys,
    private readonly snapshots?: SnapshotStore,
  ) {
    this.codec = new UserEventCodec(keys);
    this.loader = new AggregateLoader(store, this.codec, keys, snapshots);
  }

  /**
   * Who completes, for the consumer, what must follow an event that took something from a user
   * (UserSettingsService.completeRemovals): called once per such user of a batch, after the batch
   * is projected, whether or not the command that recorded the event got that far itself.
   */
  onRemovals(handler: RemovalsHandler): void {
    this.removals = handler;
  }

  /**
   * Writes the user's current snapshot (or erasure); false when Redis had it already, or when the
   * user is not registered. A user whose subject holds no event at all (nor a snapshot) is marked
   * as such for a while (markUnregistered), so that a sign-in during a rebuild of Redis is sent to
   * registration rather than answered `unavailable` until the whole rebuild is done. Events that
   * fold to no registration (the skipped, unreadable ones of a newer version, say) mark nothing.
   */
  async rebuild(tenantId: string, userId: string): Promise<boolean> {
    const subject = EventSubjects.user(tenantId, userId);
    const ref = { subject, tenantId, aggregateId: userId };
    const loaded = await this.loader.loadUser(ref);
    const { state, lastSeq } = loaded;
    // A replay (Redis lost) rebuilds long users again and again: the first rebuild leaves a snapshot.
    await this.loader.rememberUser(ref, loaded, state, lastSeq);
    if (!state.registered) {
      if (state.erasedGen === undefined) {
        if (lastSeq === 0) await this.writer.markUnregistered(tenantId, userId);
        return false;
      }
      // The erasure's own time is in its event; a repair of a missed shredding needs only the generation.
      await this.keys.erase(tenantId, userId, state.erasedGen, new Date());
      await this.snapshots?.remove(subject, lastSeq);
      return this.writer.erase(tenantId, userId, lastSeq);
    }
    const key = await this.keys.getOrCreate(tenantId, userId, { minGen: (state.erasedGen ?? 0) + 1 });
    return this.writer.apply(userSnapshot(this.keyring, tenantId, userId, state, lastSeq, key));
  }

  /**
   * rebuild, for passes over many users (the projector's batches, the rebuild of Redis): an outage
   * (NATS, Redis or the key store unreachable, Redis being rebuilt) is thrown as it is, so the
   * delivery or the pass is tried again. Any other failure is the user's own; it is tried again a
   * couple of times (a data key changed concurrently too often passes later), then thrown as
   * UnprojectableUserError, which the caller dead-letters (projector) or skips (rebuild): one user
   * who cannot be read must never hold every other one back.
   */
  async rebuildOrGiveUp(tenantId: string, userId: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.rebuild(tenantId, userId);
      } catch (error) {
        // An outage is retried by the caller for as long as it lasts; a data key erased that the
        // user's events never erased (the key stream restored from a later backup than the event
        // log) says `unavailable` too, but no retry changes it: given up on like any other.
        if (isTransientDependencyError(error) && !(error instanceof UserErasedMeanwhileError)) throw error;
        if (attempt >= USER_ATTEMPTS) {
          const cause = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
          throw new UnprojectableUserError(`the user cannot be projected: ${cause}`, { cause: error });
        }
        await new Promise((resolve) => setTimeout(resolve, USER_RETRY_MS * attempt));
      }
    }
  }

  /**
   * EventConsumer handler: tenant events need nothing here; each user touched is rebuilt once, and
   * only if Redis does not hold them whole at their last event of the batch or later. A command
   * writes its user's projection itself once its event is stored, so the projector's delivery of
   * that event normally finds it there: one pipelined read per batch instead of a load of each
   * aggregate from the stream (registrations in bulk were projected at about 1,000 events/s). A
   * user Redis lost, whose command stopped between its event and its write, whose erasure is not
   * carried out (a tombstone is never whole) or who is missing from the search index is rebuilt
   * as before. The projection's own writes keep the newest snapshot, so a rebuild racing a
   * command stays harmless.
   */
  async handle(deliveries: Delivery[]): Promise<void> {
    const users = new Map<string, { tenantId: string; userId: string; seq: number }>();
    const removals = new Map<string, { tenantId: string; userId: string; resetAt?: number | undefined }>();
    for (const { event, msg } of deliveries) {
      if (!isUserEvent(event)) continue;
      const ids = parseUserSubject(msg.subject);
      if (!ids) throw new PoisonMessageError(`user event on unexpected subject ${msg.subject.slice(0, 200)}`);
      const seq = Math.max(users.get(msg.subject)?.seq ?? 0, msg.info.streamSequence);
      users.set(msg.subject, { ...ids, seq });
      if (REMOVALS.has(event.type)) {
        const earlier = removals.get(msg.subject)?.resetAt;
        const resetAt = event.type === 'UserMfaReset' ? Math.max(earlier ?? 0, Date.parse(event.occurredAt)) : earlier;
        removals.set(msg.subject, { ...ids, resetAt });
      }
    }
    const touched = [...users.values()];
    const standing = touched.length ? await this.writer.standing(touched) : [];
    const pending = touched.filter((u, i) => {
      const { seq, whole } = standing[i]!;
      return seq < u.seq || (seq === u.seq && !whole);
    });
    projected.inc({ outcome: 'current' }, touched.length - pending.length);
    projected.inc({ outcome: 'rebuilt' }, pending.length);
    for (let i = 0; i < pending.length; i += PARALLEL_REBUILDS) {
      await Promise.all(pending.slice(i, i + PARALLEL_REBUILDS).map((u) => this.rebuildOrPoison(u)));
    }
    const handler = this.removals;
    if (handler) {
      const now = new Date();
      for (const { tenantId, userId, resetAt } of removals.values()) {
        await handler(tenantId, userId, { resetAt: resetAt === undefined ? undefined : new Date(resetAt + RESET_REACH_MS) }, now);
      }
    }
  }

  private async rebuildOrPoison({ tenantId, userId }: { tenantId: string; userId: string }): Promise<void> {
    try {
      await this.rebuildOrGiveUp(tenantId, userId);
    } catch (error) {
      // An event that does not parse, a secret sealed with a key this instance does not hold, a
      // data key missing: it fails the same way on every delivery. Dead-letter it (it can be
      // replayed once fixed) rather than retry it until the consumer's delivery limit.
      if (error instanceof UnprojectableUserError) throw new PoisonMessageError(error.message, { cause: error });
      throw error;
    }
  }
}
