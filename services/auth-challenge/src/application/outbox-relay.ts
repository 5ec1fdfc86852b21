import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import { EventPublisher } from '@mfa/messaging';
import { LOGGER, REDIS, RedisLease } from '@mfa/service-kit';
import { counter, gauge, type Logger } from '@mfa/telemetry';
import { Outbox, parseDecisionRecord } from '../adapters/outbox.js';
import { ChallengeService } from './challenge.service.js';

/** How often an instance publishes the events it answered without (JetStream did not take them in time). */
const OWN_EVERY_MS = 2_000;
/** The decisions an instance publishes at once when it relays its own (ownPass). */
const OWN_IN_FLIGHT = 64;
/** How often one instance (under a lease) looks at every slot's outbox, for decisions of instances that died. */
const FULL_PASS_EVERY_MS = 15_000;
const LEASE_KEY = 'mfa:outbox:relay';
const LEASE_MS = 60_000;
/**
 * A decision younger than this may still be in the hands of the instance that took it (publishing,
 * retrying until the caller's deadline, or its removal batched): a full pass leaves it alone.
 */
const RELAY_AFTER_MS = 10_000;

const relayed = counter('mfa_outbox_relayed_total', 'Challenge events published by the outbox relay, by outcome', ['outcome']);
const pendingGauge = gauge(
  'mfa_outbox_pending',
  'Decisions left in the outboxes for 10 s or more at the last full relay pass (events JetStream had not acknowledged), on the instance holding the relay lease; 0 on the others',
);

/**
 * Publishes the events of decisions that stayed in the outbox. Every instance, every 2 s, the
 * decisions it answered itself without their event (JetStream did not acknowledge in time). And
 * every 15 s, one instance (a lease in Redis; another takes over when the holder dies) looks at
 * every slot's outbox, a fixed 16,384 keys read 64 at a time, for decisions of instances that
 * died between their script and their publish. The event is rebuilt from the record exactly as the
 * deciding instance built it (same id: JetStream de-duplicates a publish that did land).
 */
@Injectable()
export class OutboxRelay implements OnApplicationBootstrap, OnApplicationShutdown {
  private timers: NodeJS.Timeout[] = [];
  private running: Promise<unknown> | undefined;
  private readonly lease: RedisLease;

  constructor(
    @Inject(Outbox) private readonly outbox: Outbox,
    @Inject(ChallengeService) private readonly challenges: ChallengeService,
    @Inject(EventPublisher) private readonly publisher: EventPublisher,
    @Inject(REDIS) redis: RedisClient,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    this.lease = new RedisLease(redis, LEASE_KEY, LEASE_MS);
  }

  onApplicationBootstrap(): void {
    this.timers = [
      setInterval(() => void this.exclusive(() => this.ownPass()), OWN_EVERY_MS),
      setInterval(() => void this.exclusive(() => this.fullPass()), FULL_PASS_EVERY_MS),
    ];
    for (const timer of this.timers) timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    await this.running?.catch(() => undefined);
  }

  /** One pass at a time per instance. */
  private async exclusive<T>(pass: () => Promise<T>): Promise<T | undefined> {
    if (this.running) return undefined;
    const run = pass();
    this.running = run.finally(() => {
      this.running = undefined;
    });
    return run;
  }

  /**
   * The decisions this instance answered without their event, oldest first, OWN_IN_FLIGHT at a
   * time: after a long outage the outboxes may hold many (up to OUTBOX_MAX_PER_SLOT a slot, and a
   * full slot refuses its users until its entries go), so they are not published one round trip
   * after another; a challenge's decisions still in the order they were taken (its start before
   * its resend or outcome: batchesOf). A batch with a failure ends the pass (JetStream still not
   * taking events); what it published is kept. Returns the events published.
   */
  async ownPass(): Promise<number> {
    let published = 0;
    for (const entries of batchesOf([...this.outbox.deferred], OWN_IN_FLIGHT)) {
      const batch = await Promise.allSettled(
        entries.map(async ([id, { key, name }]) => {
          const raw = await this.outbox.read(key, name);
          const done = raw !== undefined && (await this.relay(key, name, raw));
          this.outbox.deferred.delete(id);
          return done;
        }),
      );
      for (const result of batch) if (result.status === 'fulfilled' && result.value) published++;
      const failed = batch.find((result) => result.status === 'rejected');
      if (failed) {
        this.log.warn('the outbox relay could not publish yet; trying again', { error: failed.reason });
        break;
      }
    }
    if (published > 0) this.log.warn('events published from the outbox after JetStream came back', { published });
    return published;
  }

  /** Every slot's outbox, if no other instance holds the lease. Returns the events published. */
  async fullPass(now = Date.now): Promise<number> {
    // Redis unreachable or another instance at it: the next pass tries again. The backlog is the
    // lease holder's to report: a count this instance took while it held the lease would go stale.
    if (!(await this.lease.acquire())) {
      pendingGauge.set(0);
      return 0;
    }
    return this.lease.hold((leased) => this.relayAll(now, leased));
  }

  /** Stops at the next entry once `leased` aborts: another instance may be running a pass by then. */
  private async relayAll(now: () => number, leased: AbortSignal): Promise<number> {
    let published = 0;
    /**
     * Entries the deciding instance has had RELAY_AFTER_MS to publish and remove. The younger ones
     * are requests' own, whose removal is batched (every 20 ms): under load there are always some,
     * and counting them would show a backlog that is none.
     */
    let overdue = 0;
    try {
      for await (const { key, name, raw } of this.outbox.pending()) {
        leased.throwIfAborted();
        const record = parseDecisionRecord(raw);
        if (record && record.c.n > now() - RELAY_AFTER_MS) continue;
        overdue++;
        if (await this.relay(key, name, raw)) published++;
      }
      pendingGauge.set(overdue);
      if (published > 0) this.log.warn('the outbox relay published events the deciding instance had not', { published });
    } catch (error) {
      this.log.warn('outbox relay pass interrupted; the next one goes on', { error });
    }
    return published;
  }

  /** Publishes one entry's event and removes the entry; false for an entry that can never become one. */
  private async relay(key: string, name: string, raw: string): Promise<boolean> {
    const record = parseDecisionRecord(raw);
    let built: ReturnType<ChallengeService['eventOfRecord']>;
    try {
      built = record ? this.challenges.eventOfRecord(record) : undefined;
    } catch (error) {
      // A decision this version does not know (written by a newer instance during an upgrade, or
      // before a rollback): kept for an instance that does, and the pass goes on with the others.
      this.log.warn('an outbox entry this version cannot read is left for a newer instance', { name: name.slice(0, 200), error });
      relayed.inc({ outcome: 'unknown' });
      return false;
    }
    if (!built) {
      // Never publishable: kept out of the way, and said loudly (an operator must look).
      this.log.error('an outbox entry cannot be turned into an event: removed', { name: name.slice(0, 200) });
      relayed.inc({ outcome: 'unreadable' });
      await this.outbox.removeNow(key, name);
      return false;
    }
    const ack = await this.publisher.publish(built.subject, built.event);
    await this.outbox.removeNow(key, name);
    relayed.inc({ outcome: ack.duplicate ? 'duplicate' : 'published' });
    return true;
  }
}

/**
 * Deferred decisions in their order, in batches of at most `size` published at once, a batch ending
 * before a second decision of a challenge it holds already ("<challengeId>:<decision>[:<n>]"), so
 * that the events of one challenge are published in the order they were decided.
 */
export function batchesOf<T extends [string, { name: string }]>(entries: readonly T[], size: number): T[][] {
  const batches: T[][] = [];
  let batch: T[] = [];
  let challenges = new Set<string>();
  for (const entry of entries) {
    const challenge = entry[1].name.split(':', 1)[0]!;
    if (batch.length >= size || challenges.has(challenge)) {
      batches.push(batch);
      batch = [];
      challenges = new Set();
    }
    batch.push(entry);
    challenges.add(challenge);
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
