import {
  notFound,
  conflict,
  unavailable,
  type UsersBlockReply,
  type UsersBlockRequest,
  type UsersUnblockReply,
  type UsersUnblockRequest,
  EventSubjects,
  parseEvent,
  Streams,
  type EventOf,
  type FraudUserEvent,
  type TenantSettings,
} from '@mfa/contracts';
import { ConcurrencyError, isTransientDependencyError, readAggregate, readOnce, type NatsClients } from '@mfa/messaging';
import type { UserProjectionWriter } from '@mfa/projection';
import { counter, type Logger } from '@mfa/telemetry';
import type { BlockEnds } from '../adapters/block-ends.js';
import type { FraudLog } from '../adapters/fraud-log.js';
import type { UserDirectory } from '../adapters/user-directory.js';
import { decideBlock, type Actor, type BlockCommand, type BlockState } from '../domain/user-block.js';

const MAX_APPEND_ATTEMPTS = 5;
/** Users whose block ended, read from each shard of BlockEnds per round of the automatic unblock's pass. */
const DUE_PER_ROUND = 500;
/** How recent an unblock must be for the projection to lift lockouts (see `project`). */
const UNBLOCK_NEWS_MS = 5 * 60_000;
const autoUnblocks = counter('mfa_auto_unblocks_total', 'Blocks that reached their end and were recorded as automatic unblocks');

/**
 * users.block and users.unblock, and the automatic unblock at a block's end. The user's fraud
 * aggregate is the record (MFA_FRAUD); Redis holds its projection for auth-challenge's start
 * script (`mfa:{tag}:blocked`), written here right after the event and kept by the block
 * projector consumer whatever happens in between.
 */
export class BlocksService {
  constructor(
    private readonly log: FraudLog,
    private readonly directory: UserDirectory,
    private readonly projection: UserProjectionWriter,
    private readonly nats: Pick<NatsClients, 'js' | 'jsm'>,
    readonly logger: Logger,
    /** When blocks end, for the automatic unblock's pass; without it the pass reads the last event of every user ever blocked. */
    private readonly ends?: BlockEnds,
  ) {}

  async block(request: UsersBlockRequest, now: Date, by?: Actor): Promise<UsersBlockReply> {
    await this.requireUser(request.tenantId, request.userId);
    const events = await this.execute(request.tenantId, request.userId, now, () => ({
      type: 'Block',
      data: { userId: request.userId, reason: request.reason, source: 'admin', ...(by ? { by } : {}) },
    }));
    // The automatic unblock of a block that had ended comes first, when it was not recorded yet.
    const event = events.find((e) => e.type === 'UserBlocked');
    if (event?.type !== 'UserBlocked') throw new Error('a block recorded no UserBlocked');
    return { userId: request.userId, blockedUntil: event.data.until };
  }

  /** The user's block as recorded: the last event of the user's subject. */
  async blockState(tenantId: string, userId: string): Promise<BlockState> {
    return (await this.dependency(() => this.log.load(tenantId, userId))).state;
  }

  /** The fraud alert recorded at MFA_FRAUD sequence `seq`, or undefined when that is not one. */
  async alertAt(seq: number): Promise<EventOf<'FraudReported'> | undefined> {
    const msg = await this.dependency(() => this.nats.jsm.streams.getMessage(Streams.fraud.name, { seq }));
    if (!msg) return undefined;
    try {
      const event = parseEvent(msg.json());
      return event.type === 'FraudReported' ? event : undefined;
    } catch {
      return undefined;
    }
  }

  /** The MFA_FRAUD sequence of the user's last fraud alert, 0 when none: an alert published now comes after it. */
  async lastAlertSeq(tenantId: string, userId: string): Promise<number> {
    const msg = await this.dependency(() => this.nats.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudAlert(tenantId, userId) }));
    return msg?.seq ?? 0;
  }

  /** The user's fraud alert `alertId` recorded after MFA_FRAUD sequence `afterSeq` (the first copy), if any. */
  async findAlert(tenantId: string, userId: string, alertId: string, afterSeq: number): Promise<{ alert: EventOf<'FraudReported'>; seq: number } | undefined> {
    const { events } = await this.dependency(() => readAggregate(this.nats.jsm, Streams.fraud.name, EventSubjects.fraudAlert(tenantId, userId), this.logger, afterSeq));
    const found = events.find((e) => e.event.type === 'FraudReported' && e.event.data.alertId === alertId);
    return found ? { alert: found.event as EventOf<'FraudReported'>, seq: found.seq } : undefined;
  }

  /**
   * The auto-block of the fraud alert recorded at MFA_FRAUD sequence `alertSeq`, until `until` (what
   * the alert says): once, whoever completes the alert and however often. The user's events after
   * the alert say whether it blocked already, or whether an administrator has spoken since.
   */
  async blockForAlert(alert: { tenantId: string; userId: string; alertId: string; seq: number; until: number; by?: Actor }, now: Date): Promise<void> {
    const { tenantId, userId, alertId, seq, until, by } = alert;
    const subject = EventSubjects.fraudUser(tenantId, userId);
    await this.execute(tenantId, userId, now, async (lastSeq) => {
      const since =
        lastSeq > seq ? (await readAggregate(this.nats.jsm, Streams.fraud.name, subject, this.logger, seq)).events.filter((e) => e.seq <= lastSeq).map((e) => e.event as FraudUserEvent) : [];
      // An administrator's unblock first after the alert lifted a block only if the user's event
      // before the alert was one in force (otherwise it cleared lockouts only). Rare (an unblock
      // between a report and its completion), so the user's whole history is read for it then.
      const first = since[0];
      const before =
        first?.type === 'UserUnblocked' && !first.data.automatic
          ? (await readAggregate(this.nats.jsm, Streams.fraud.name, subject, this.logger)).events.filter((e) => e.seq < seq).at(-1)?.event as FraudUserEvent | undefined
          : undefined;
      return { type: 'BlockForAlert', data: { userId, alertId, until, since, ...(before ? { before } : {}), ...(by ? { by } : {}) } };
    });
  }

  async unblock(request: UsersUnblockRequest, now: Date, by?: Actor): Promise<UsersUnblockReply> {
    await this.requireUser(request.tenantId, request.userId);
    const lockedOut = await this.dependency(() => this.projection.hasLockouts(request.tenantId, request.userId));
    await this.execute(request.tenantId, request.userId, now, () => ({
      type: 'Unblock',
      data: { userId: request.userId, reason: request.reason, lockedOut, ...(by ? { by } : {}) },
    }));
    return { userId: request.userId, unblocked: true };
  }

  /**
   * Records an automatic unblock for every block whose end has passed, dated at that end: nothing
   * has to run at that moment (auth-challenge stops denying when the Redis key expires by itself),
   * and the history still shows when the block ended. Any instance may run it; a user's subject
   * that moved on meanwhile is left as it is. The users come from BlockEnds (the blocks due), which
   * is filled from the log when it is missing or incomplete.
   */
  async expireDue(now: Date): Promise<number> {
    const ends = this.ends;
    if (!ends) {
      let recorded = 0;
      for (const user of await this.lastBlocks((until) => until <= now.getTime())) recorded += await this.expire(user, now);
      return recorded;
    }
    if (!(await ends.built())) {
      for (const { tenantId, userId, until } of await this.lastBlocks(() => true)) await ends.add(tenantId, userId, until);
      await ends.markBuilt();
    }
    let recorded = 0;
    for (;;) {
      const due = await ends.due(now, DUE_PER_ROUND);
      for (const { tenantId, userId } of due) {
        const { state, lastSeq } = await this.log.load(tenantId, userId);
        const last = state.blocked ? { tenantId, userId, until: state.until, seq: lastSeq } : undefined;
        if (last && last.until > now.getTime()) await ends.add(tenantId, userId, last.until);
        else if (last) recorded += await this.expire(last, now);
        await ends.removeEnded(tenantId, userId, now);
      }
      // A round that found a full shard's worth may have left more.
      if (due.length < DUE_PER_ROUND) return recorded;
    }
  }

  /** The users whose last event is a block with an end `until` accepts, from the last message of every user's subject. */
  private async lastBlocks(until: (ms: number) => boolean): Promise<Array<{ tenantId: string; userId: string; until: number; seq: number }>> {
    const found: Array<{ tenantId: string; userId: string; until: number; seq: number }> = [];
    await readOnce(this.nats.js, Streams.fraud.name, EventSubjects.allFraudUsers, { policy: 'last_per_subject' }, (msg) => {
      let event: FraudUserEvent;
      try {
        event = parseEvent(msg.json()) as FraudUserEvent;
      } catch {
        return;
      }
      if (event.type === 'UserBlocked' && until(Date.parse(event.data.until))) {
        found.push({ tenantId: event.tenantId, userId: event.data.userId, until: Date.parse(event.data.until), seq: msg.seq });
      }
    });
    return found;
  }

  /** Records the automatic unblock of the user's block that ended at `until`, if it is still the user's last event (sequence `seq`). */
  private async expire({ tenantId, userId, until, seq }: { tenantId: string; userId: string; until: number; seq: number }, now: Date): Promise<number> {
    const decided = decideBlock({ type: 'Expire', data: { userId } }, { blocked: true, until, reason: '' }, now);
    try {
      const appended = await this.log.append(tenantId, userId, decided, seq);
      await this.project(tenantId, appended);
      autoUnblocks.inc(appended.length);
      return appended.length;
    } catch (error) {
      if (!(error instanceof ConcurrencyError)) throw error;
      return 0;
    }
  }

  /**
   * Applies one user's events, each with its MFA_FRAUD stream sequence, to the Redis projection
   * (the consumer and the command path), and notes when each block ends (BlockEnds). An event
   * older than the one projected last for the user changes nothing: the consumer's instances, and
   * its retries after a back-off, do not apply a user's events in stream order, and a late block
   * must not come back after a later unblock (nor a late unblock lift a later block). Only an
   * administrator's unblock lifts the lockouts (the cap on wrong codes in a row and the window's
   * lockout, docs/api.md users.unblock); a block that ends by itself leaves them as they are. And
   * only when it is news (recorded in the last minutes): a consumer replaying the log must not wipe
   * counters that wrong codes set after an old unblock.
   */
  async project(tenantId: string, events: ReadonlyArray<{ event: FraudUserEvent; seq: number }>, now = Date.now()): Promise<void> {
    for (const { event, seq } of events) {
      if (event.type === 'UserBlocked') {
        const until = Date.parse(event.data.until);
        if (until > now) await this.projection.block(tenantId, event.data.userId, until, seq);
        else await this.projection.unblock(tenantId, event.data.userId, seq);
        // An ended one too: the pass then looks whether its automatic unblock is recorded.
        await this.ends?.add(tenantId, event.data.userId, until);
      } else {
        const applied = await this.projection.unblock(tenantId, event.data.userId, seq);
        if (applied && !event.data.automatic && now - Date.parse(event.occurredAt) < UNBLOCK_NEWS_MS) {
          await this.projection.clearLockouts(tenantId, event.data.userId);
        }
      }
    }
  }

  /** Decides `command` on the user's current state and appends what it decided, trying again when the user's subject moved on meanwhile. */
  private async execute(
    tenantId: string,
    userId: string,
    now: Date,
    command: (lastSeq: number) => BlockCommand | Promise<BlockCommand>,
  ): Promise<FraudUserEvent[]> {
    for (let attempt = 1; attempt <= MAX_APPEND_ATTEMPTS; attempt++) {
      const { state, lastSeq } = await this.dependency(() => this.log.load(tenantId, userId));
      const decided = decideBlock(await this.dependency(async () => command(lastSeq)), state, now);
      if (decided.length === 0) return [];
      try {
        const appended = await this.dependency(() => this.log.append(tenantId, userId, decided, lastSeq));
        // Right away for the next start; the block projector consumer does it too, whatever fails here.
        await this.project(tenantId, appended).catch((error: unknown) =>
          this.logger.warn('the block is recorded; Redis will have it from the block projector', { error }),
        );
        return appended.map((a) => a.event);
      } catch (error) {
        if (!(error instanceof ConcurrencyError)) throw error;
      }
    }
    throw conflict('the user changed concurrently too often; try again');
  }

  /** The tenant's settings, or not_found for an unknown tenant. */
  async requireTenant(tenantId: string): Promise<TenantSettings> {
    const settings = await this.dependency(() => this.directory.tenantSettings(tenantId));
    if (!settings) throw notFound('unknown tenant');
    return settings;
  }

  async requireRegistered(tenantId: string, userId: string): Promise<void> {
    if (!(await this.dependency(() => this.directory.userRegistered(tenantId, userId)))) throw notFound('unknown user');
  }

  private async requireUser(tenantId: string, userId: string): Promise<void> {
    await this.requireTenant(tenantId);
    await this.requireRegistered(tenantId, userId);
  }

  /** A dependency that cannot be reached is `unavailable` to the caller (try again). */
  async dependency<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof ConcurrencyError || !isTransientDependencyError(error)) throw error;
      throw unavailable('the event log or Redis is unavailable; try again', error);
    }
  }
}
