import {
  ContractError,
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
  type FraudUserEvent,
  type TenantSettings,
} from '@mfa/contracts';
import { ConcurrencyError, isTransientDependencyError, readOnce, type NatsClients } from '@mfa/messaging';
import type { UserProjectionWriter } from '@mfa/projection';
import { counter, type Logger } from '@mfa/telemetry';
import type { FraudLog } from '../adapters/fraud-log.js';
import type { UserDirectory } from '../adapters/user-directory.js';
import { decideBlock, evolveBlock, initialBlockState, type Actor, type BlockCommand } from '../domain/user-block.js';

const MAX_APPEND_ATTEMPTS = 5;
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
    private readonly nats: Pick<NatsClients, 'js'>,
    private readonly logger: Logger,
  ) {}

  async block(request: UsersBlockRequest, now: Date, by?: Actor): Promise<UsersBlockReply> {
    await this.requireUser(request.tenantId, request.userId);
    const [event] = await this.execute(request.tenantId, request.userId, now, () => ({
      type: 'Block',
      data: { userId: request.userId, reason: request.reason, source: 'admin', ...(by ? { by } : {}) },
    }));
    if (event?.type !== 'UserBlocked') throw new Error('a block recorded no UserBlocked');
    return { userId: request.userId, blockedUntil: event.data.until };
  }

  /**
   * The tenant's auto-block after a fraud report: blocked for 90 days with the reason "fraud
   * reported", unless a block is already in force (then that one stands). The user exists.
   */
  async blockForFraud(tenantId: string, userId: string, now: Date, by?: Actor): Promise<{ until: string }> {
    try {
      const [event] = await this.execute(tenantId, userId, now, () => ({
        type: 'Block',
        data: { userId, reason: 'fraud reported', source: 'fraud_report', ...(by ? { by } : {}) },
      }));
      if (event?.type !== 'UserBlocked') throw new Error('a block recorded no UserBlocked');
      return { until: event.data.until };
    } catch (error) {
      // Already blocked (the decider's conflict): that block stands.
      if (!(error instanceof ContractError && error.code === 'conflict')) throw error;
      const { state } = await this.dependency(() => this.log.load(tenantId, userId));
      if (!state.blocked) throw error;
      return { until: new Date(state.until).toISOString() };
    }
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
   * that moved on meanwhile is left as it is.
   */
  async expireDue(now: Date): Promise<number> {
    const due: Array<{ tenantId: string; userId: string; event: FraudUserEvent; seq: number }> = [];
    await readOnce(this.nats.js, Streams.fraud.name, EventSubjects.allFraudUsers, { policy: 'last_per_subject' }, (msg) => {
      let event: FraudUserEvent;
      try {
        event = parseEvent(msg.json()) as FraudUserEvent;
      } catch {
        return;
      }
      if (event.type === 'UserBlocked' && Date.parse(event.data.until) <= now.getTime()) {
        due.push({ tenantId: event.tenantId, userId: event.data.userId, event, seq: msg.seq });
      }
    });
    let recorded = 0;
    for (const { tenantId, userId, event, seq } of due) {
      const decided = decideBlock({ type: 'Expire', data: { userId } }, evolveBlock(initialBlockState(), event), now);
      try {
        const appended = await this.log.append(tenantId, userId, decided, seq);
        await this.project(tenantId, appended);
        recorded += appended.length;
        autoUnblocks.inc(appended.length);
      } catch (error) {
        if (!(error instanceof ConcurrencyError)) throw error;
      }
    }
    return recorded;
  }

  /**
   * Applies one user's events, each with its MFA_FRAUD stream sequence, to the Redis projection
   * (the consumer and the command path). An event older than the one projected last for the user
   * changes nothing: the consumer's instances, and its retries after a back-off, do not apply a
   * user's events in stream order, and a late block must not come back after a later unblock (nor
   * a late unblock lift a later block). An unblock lifts the lockout counters only when it is news
   * (recorded in the last minutes): a consumer replaying the log must not wipe counters that wrong
   * codes set after an old unblock.
   */
  async project(tenantId: string, events: ReadonlyArray<{ event: FraudUserEvent; seq: number }>, now = Date.now()): Promise<void> {
    for (const { event, seq } of events) {
      if (event.type === 'UserBlocked') {
        const until = Date.parse(event.data.until);
        if (until > now) await this.projection.block(tenantId, event.data.userId, until, seq);
        else await this.projection.unblock(tenantId, event.data.userId, seq);
      } else {
        const applied = await this.projection.unblock(tenantId, event.data.userId, seq);
        if (applied && now - Date.parse(event.occurredAt) < UNBLOCK_NEWS_MS) await this.projection.clearLockouts(tenantId, event.data.userId);
      }
    }
  }

  private async execute(tenantId: string, userId: string, now: Date, command: () => BlockCommand): Promise<FraudUserEvent[]> {
    for (let attempt = 1; attempt <= MAX_APPEND_ATTEMPTS; attempt++) {
      const { state, lastSeq } = await this.dependency(() => this.log.load(tenantId, userId));
      const decided = decideBlock(command(), state, now);
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
