import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import { EventSubjects, parseEvent, Streams } from '@mfa/contracts';
import type { Subscription } from '@nats-io/nats-core';
import { isTransientDependencyError, readOnce, type NatsClients } from '@mfa/messaging';
import { PROJECTION_MISSING_SUBJECT, PROJECTION_REBUILD_LEASE_KEY, RedisKeys, STEPS_RESTORED_KEY, UserProjectionWriter } from '@mfa/projection';
import { LOGGER, NATS, REDIS, RedisLease } from '@mfa/service-kit';
import { counter, gauge, type Logger } from '@mfa/telemetry';
import { parseUserSubject, UnprojectableUserError, UserProjector } from './user-projector.js';
import { OathTokensService, parseOathSubject } from './oath-tokens.service.js';

/** How often every instance checks that Redis still holds the complete projection. */
const CHECK_EVERY_MS = 1_000;
/** The rebuild lease (PROJECTION_REBUILD_LEASE_KEY): one instance rebuilds; if it dies, another takes over once it lapses. */
const LEASE_MS = 15_000;
/** Users rebuilt at once: overlaps their round trips without flooding NATS or Redis. */
const PARALLEL_USERS = 64;
/**
 * How far back accepted TOTP steps are restored. A step is accepted at most one step after its
 * own (RFC 6238 drift window), so only approvals of the last few minutes can still be replayed:
 * three periods of a 60-second token (180 s), with room for clocks apart between this host and
 * the stream's leader (a step restored needlessly costs nothing: the guard only ever rises).
 */
const STEP_HISTORY_MS = 10 * 60_000;
/**
 * How far back wrong codes are read to restore the brute-force counters: the longest lockout
 * window plus the longest lockout the configuration allows (a day each). The counters each wrong
 * code left are in its event (ChallengeCodeRejected / ChallengeAttemptsExhausted `guard`).
 */
const FAILURE_HISTORY_MS = 2 * 86_400_000;
/** Users projected on demand at once (signals from auth-challenge); more wait for the rebuild. */
const ON_DEMAND_IN_FLIGHT = 32;
const ID_MAX = 256;

const rebuilds = counter('mfa_projection_rebuilds_total', 'Rebuilds of the Redis user projection from the event log, by outcome', ['outcome']);
const rebuildUsers = gauge('mfa_projection_rebuild_users', 'Users projected by the last rebuild of the Redis projection');
const rebuildSeconds = gauge('mfa_projection_rebuild_seconds', 'Duration of the last rebuild of the Redis projection');
const rebuildSkipped = gauge(
  'mfa_projection_rebuild_skipped',
  'Users and hardware tokens the last rebuild of the Redis projection could not project (their events or data key do not read; logged)',
  ['kind'],
);

/**
 * Keeps Redis a rebuildable cache of the event log, while the services run. Every second each
 * instance checks the projection marker; a Redis without it has lost the projection (restarted
 * empty, flushed, replaced) or never had it, and one instance (a lease in Redis) rebuilds it:
 *
 * 1. the TOTP time steps accepted in the last minutes, from ChallengeApproved events, so that a
 *    code accepted before the loss is never accepted after it (a code is accepted at most one
 *    step after its own: two 60-second steps and some margin cover every token), the blocks in
 *    force (the fraud service's events), and the users' lockout counters, from the counters each
 *    wrong code recorded in its event;
 * 2. every user: the last event of each user subject names the user, whose aggregate is loaded
 *    and written as a snapshot (UserProjector.rebuild; older snapshots never overwrite newer
 *    ones, so the live projector consumer and commands can run meanwhile);
 * 3. the markers: every hash slot's, then the global one.
 *
 * Until a slot's marker is back, auth-challenge answers `unavailable` for a user it does not find
 * there, never `registration_required` (start script, `projection_missing`), and says so on
 * PROJECTION_MISSING_SUBJECT: any instance then projects that user at once (once the steps are
 * restored), so users signing in are back within a retry or two, however many users the rebuild
 * still has to go. A signal for a slot whose marker is gone while the global marker stands (one
 * node of a Redis Cluster came back empty) removes the global marker: the next check rebuilds.
 */
@Injectable()
export class ProjectionRecovery implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly lease: RedisLease;
  private signals: Subscription | undefined;
  private readonly onDemand = new Set<string>();

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(REDIS) private readonly redis: RedisClient,
    @Inject(UserProjectionWriter) private readonly writer: UserProjectionWriter,
    @Inject(UserProjector) private readonly projector: UserProjector,
    @Inject(OathTokensService) private readonly tokens: OathTokensService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    this.lease = new RedisLease(redis, PROJECTION_REBUILD_LEASE_KEY, LEASE_MS);
  }

  onApplicationBootstrap(): void {
    this.signals = this.nats.nc.subscribe(PROJECTION_MISSING_SUBJECT, {
      queue: 'user-settings',
      callback: (error, msg) => {
        if (!error) void this.projectOnDemand(msg.data);
      },
    });
    void this.check();
    this.timer = setInterval(() => void this.check(), CHECK_EVERY_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    this.signals?.unsubscribe();
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** Starts a rebuild if the projection is missing and no other instance holds the lease. */
  async check(): Promise<void> {
    if (this.running) return this.running;
    try {
      if (await this.writer.isComplete()) return;
    } catch {
      return; // Redis unreachable: the next check tries again.
    }
    if (!(await this.lease.acquire())) return;
    this.running = this.lease.hold((leased) => this.rebuild(leased)).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /**
   * `leased` aborts when this instance lost the lease (a pause past it, a Redis failover): another
   * instance may be rebuilding by then, so every step and loop stops at its next turn, and above
   * all no marker is written by an instance that no longer knows what the other one did.
   */
  private async rebuild(leased: AbortSignal): Promise<void> {
    const started = Date.now();
    this.log.warn('Redis does not hold the user projection: rebuilding it from the event log');
    try {
      await this.redis.del(STEPS_RESTORED_KEY);
      const approvedAt = new Map<string, number>();
      const steps = await this.restoreTotpSteps(new Date(started - STEP_HISTORY_MS), approvedAt, leased);
      const { blocks, unblockedAt } = await this.restoreBlocks(new Date(started), leased);
      const guards = await this.restoreFailureGuards(new Date(started), approvedAt, unblockedAt, leased);
      leased.throwIfAborted();
      // Each slot's steps marker first: a user's snapshot is written with its tokens only once
      // its slot's steps are back (the apply script reads the marker of the user's slot), so a
      // command or the projector writing a user meanwhile cannot make a code accepted before the
      // loss good again. Then the global key, which lets single users be projected on demand.
      await this.writer.markStepsRestored();
      await this.redis.set(STEPS_RESTORED_KEY, '1');
      const { users, skipped } = await this.projectAllUsers(leased);
      const skippedTokens = await this.reindexOathTokens(leased);
      leased.throwIfAborted();
      await this.writer.markComplete();
      const seconds = (Date.now() - started) / 1000;
      rebuilds.inc({ outcome: 'done' });
      rebuildUsers.set(users);
      rebuildSeconds.set(seconds);
      rebuildSkipped.set({ kind: 'user' }, skipped);
      rebuildSkipped.set({ kind: 'oath_token' }, skippedTokens);
      this.log.warn('user projection rebuilt', {
        users,
        skippedUsers: skipped,
        hardwareTokensSkipped: skippedTokens,
        totpSteps: steps,
        blocks,
        failureCounters: guards,
        seconds,
        usersPerSecond: Math.round(users / Math.max(seconds, 0.001)),
      });
    } catch (error) {
      rebuilds.inc({ outcome: 'failed' });
      if (leased.aborted) this.log.warn('rebuilding the user projection stopped: this instance lost the lease (another one may rebuild)', { error: leased.reason });
      else this.log.error('rebuilding the user projection failed; retrying', { error });
    }
  }

  /** One user auth-challenge could not find, projected ahead of the rebuild (see the class comment). */
  private async projectOnDemand(data: Uint8Array): Promise<void> {
    let ids: { tenantId?: unknown; userId?: unknown };
    try {
      ids = JSON.parse(Buffer.from(data).toString('utf8')) as typeof ids;
    } catch {
      return;
    }
    const { tenantId, userId } = ids;
    if (typeof tenantId !== 'string' || typeof userId !== 'string' || !tenantId || !userId || tenantId.length > ID_MAX || userId.length > ID_MAX) return;
    const id = `${tenantId}\u0000${userId}`;
    if (this.onDemand.has(id) || this.onDemand.size >= ON_DEMAND_IN_FLIGHT) return;
    this.onDemand.add(id);
    try {
      const [stepsRestored, complete, slotComplete] = await Promise.all([
        this.redis.exists(STEPS_RESTORED_KEY),
        this.writer.isComplete(),
        this.redis.exists(RedisKeys.slotMarker(this.writer.tagOf(tenantId, userId))),
      ]);
      if (complete && !slotComplete) {
        this.log.warn('a hash slot lost its projection while the projection is marked complete: rebuilding');
        await this.redis.del(RedisKeys.userProjectionMarker);
        return;
      }
      // Before the steps are back, a user projected could replay a code accepted before the loss.
      if (stepsRestored === 1) await this.projector.rebuild(tenantId, userId);
    } catch (error) {
      this.log.warn('projecting a user on demand failed; the rebuild will', { error });
    } finally {
      this.onDemand.delete(id);
    }
  }

  /** Also notes, in `approvedAt`, each user's last approval read (it resets their failure counters). */
  private async restoreTotpSteps(since: Date, approvedAt: Map<string, number>, leased: AbortSignal): Promise<number> {
    let restored = 0;
    await readOnce(this.nats.js, Streams.challenges.name, EventSubjects.challengeApproved, { policy: 'since', time: since }, async (msg) => {
      leased.throwIfAborted();
      let event;
      try {
        event = parseEvent(msg.json());
      } catch {
        return; // Not for this pass: the reporting consumer dead-letters what does not parse.
      }
      if (event.type !== 'ChallengeApproved') return;
      approvedAt.set(`${event.tenantId}\u0000${event.data.userId}`, Date.parse(event.occurredAt));
      if (event.data.tokenId === undefined || event.data.step === undefined) return;
      if (await this.writer.restoreTotpStep(event.tenantId, event.data.userId, event.data.tokenId, event.data.step)) restored++;
    });
    return restored;
  }

  /**
   * The lockout counters as each user's last wrong code left them, unless an approval read by the
   * steps pass, or an administrator's unblock, came after it. Approvals older than the steps pass
   * are not read (they are most of the log): failures such a success had reset count again, which
   * errs towards locking (the window counter still ends at its own time).
   */
  private async restoreFailureGuards(now: Date, approvedAt: ReadonlyMap<string, number>, unblockedAt: ReadonlyMap<string, number>, leased: AbortSignal): Promise<number> {
    const last = new Map<string, { tenantId: string; userId: string; at: number; guard: { failures: number; resetAt: number; consecutive: number } }>();
    const since = new Date(now.getTime() - FAILURE_HISTORY_MS);
    for (const subject of [EventSubjects.challengeCodeRejected, EventSubjects.challengeAttemptsExhausted]) {
      await readOnce(this.nats.js, Streams.challenges.name, subject, { policy: 'since', time: since }, (msg) => {
        leased.throwIfAborted();
        let event;
        try {
          event = parseEvent(msg.json());
        } catch {
          return;
        }
        if ((event.type !== 'ChallengeCodeRejected' && event.type !== 'ChallengeAttemptsExhausted') || !event.data.guard) return;
        const id = `${event.tenantId}\u0000${event.data.userId}`;
        const at = Date.parse(event.occurredAt);
        if ((last.get(id)?.at ?? -1) <= at) last.set(id, { tenantId: event.tenantId, userId: event.data.userId, at, guard: event.data.guard });
      });
    }
    let restored = 0;
    for (const [id, { tenantId, userId, at, guard }] of last) {
      leased.throwIfAborted();
      if ((approvedAt.get(id) ?? -1) >= at) continue;
      if (guard.resetAt <= now.getTime() && guard.consecutive === 0) continue;
      if ((unblockedAt.get(id) ?? -1) >= at) continue;
      if (await this.writer.restoreFailureGuard(tenantId, userId, guard, now)) restored++;
    }
    return restored;
  }

  /**
   * The blocks in force (the fraud service's UserBlocked, the last event of each user's fraud
   * subject), and when each user was last unblocked by an administrator (UserUnblocked: lockouts
   * lifted too; an automatic unblock at a block's end lifts none). A block
   * lifted while this pass wrote it is looked up again and removed, so a stale read never blocks
   * anyone who is not.
   */
  private async restoreBlocks(now: Date, leased: AbortSignal): Promise<{ blocks: number; unblockedAt: Map<string, number> }> {
    const unblockedAt = new Map<string, number>();
    const blocked: Array<{ tenantId: string; userId: string; until: number; seq: number }> = [];
    await readOnce(this.nats.js, Streams.fraud.name, EventSubjects.allFraudUsers, { policy: 'last_per_subject' }, (msg) => {
      leased.throwIfAborted();
      let event;
      try {
        event = parseEvent(msg.json());
      } catch {
        return;
      }
      // An administrator's unblock lifts the lockouts; a block's automatic end lifts none (fraud).
      if (event.type === 'UserUnblocked' && event.data.automatic !== true) unblockedAt.set(`${event.tenantId}\u0000${event.data.userId}`, Date.parse(event.occurredAt));
      if (event.type === 'UserBlocked' && Date.parse(event.data.until) > now.getTime()) {
        blocked.push({ tenantId: event.tenantId, userId: event.data.userId, until: Date.parse(event.data.until), seq: msg.seq });
      }
    });
    for (const b of blocked) {
      leased.throwIfAborted();
      await this.writer.block(b.tenantId, b.userId, b.until, b.seq);
    }
    for (const b of blocked) {
      leased.throwIfAborted();
      const last = await this.nats.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudUser(b.tenantId, b.userId) });
      if (last && last.seq !== b.seq) {
        const event = parseEvent(last.json());
        if (event.type === 'UserUnblocked') await this.writer.unblock(b.tenantId, b.userId, last.seq);
      }
    }
    return { blocks: blocked.length, unblockedAt };
  }

  /**
   * The hardware token inventory index (oath.tokens.list), from each token's aggregate. An outage
   * fails the pass (no marker while a token may be missing); a token that fails otherwise is
   * logged and skipped, as a user is. Returns the tokens skipped.
   */
  private async reindexOathTokens(leased: AbortSignal): Promise<number> {
    const tokens: Array<{ tenantId: string; serialNumber: string }> = [];
    await readOnce(this.nats.js, Streams.userSettings.name, EventSubjects.allOathTokens, { policy: 'last_per_subject' }, (msg) => {
      leased.throwIfAborted();
      const ids = parseOathSubject(msg.subject);
      if (ids) tokens.push(ids);
    }, { headersOnly: true });
    const now = new Date();
    let next = 0;
    let skipped = 0;
    let failed: unknown;
    const worker = async () => {
      while (next < tokens.length && failed === undefined && !leased.aborted) {
        const { tenantId, serialNumber } = tokens[next++]!;
        try {
          await this.tokens.reindex(tenantId, serialNumber, now);
        } catch (error) {
          if (isTransientDependencyError(error)) {
            failed = error;
          } else {
            skipped++;
            this.log.error('a hardware token cannot be indexed: skipped by the rebuild', { tenantId, error: describe(error) });
          }
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_USERS }, worker));
    if (failed !== undefined) throw failed;
    leased.throwIfAborted();
    return skipped;
  }

  /** Every user of the log, each once: the users seen and those skipped (see UserProjector.rebuildOrGiveUp). */
  private async projectAllUsers(leased: AbortSignal): Promise<{ users: number; skipped: number }> {
    const users: Array<{ tenantId: string; userId: string }> = [];
    await readOnce(this.nats.js, Streams.userSettings.name, EventSubjects.allUsers, { policy: 'last_per_subject' }, (msg) => {
      leased.throwIfAborted();
      const ids = parseUserSubject(msg.subject);
      if (ids) users.push(ids);
    }, { headersOnly: true });
    let next = 0;
    let skipped = 0;
    let failed: unknown;
    const worker = async () => {
      while (next < users.length && failed === undefined && !leased.aborted) {
        const { tenantId, userId } = users[next++]!;
        try {
          await this.projector.rebuildOrGiveUp(tenantId, userId);
        } catch (error) {
          // A user who cannot be read (the live projector dead-letters them the same way) must not
          // keep every other user out: skipped, logged and counted; the rebuild completes without
          // them (their sign-ins answer registration_required until they are fixed and replayed).
          // An outage (NATS or Redis failing) fails the rebuild, which starts over: no marker while
          // a user may be missing only because a dependency did not answer.
          if (error instanceof UnprojectableUserError) {
            skipped++;
            this.log.error('a user cannot be projected: skipped by the rebuild', { tenantId, subject: EventSubjects.user(tenantId, userId), error: describe(error) });
          } else {
            failed = error;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_USERS }, worker));
    if (failed !== undefined) throw failed;
    leased.throwIfAborted();
    return { users: users.length, skipped };
  }
}

/** What a log line says of a failure: its kind and message, never its cause chain or the values it held. */
function describe(error: unknown): { name: string; message: string } {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: typeof error, message: String(error) };
}
