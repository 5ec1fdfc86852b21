import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import { EventPublisher } from '@mfa/messaging';
import { LOGGER, REDIS, RedisLease } from '@mfa/service-kit';
import { counter, gauge, type Logger } from '@mfa/telemetry';
import { Outbox, parseDecisionRecord } from '../adapters/outbox.js';
import { ChallengeService } from './challenge.service.js';

/** How often an instance publishes the events it answered without (JetStream did not take them in time). */
const OWN_EVERY_MS = 2_000;
/** The decisions a relay pass publishes at once, its own (ownPass) or every slot's (fullPass). */
const IN_FLIGHT = 64;
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
 * died between their script and their publish. Both publish 64 events at a time, a challenge's in
 * the order it took them. The event is rebuilt from the record exactly as the
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
   * The decisions this instance answered without their event, oldest first, IN_FLIGHT at a
   * time: after a long outage the outboxes may hold many (up to OUTBOX_MAX_PER_SLOT a slot, and a
   * full slot refuses its users until its entries go), so they are not published one round trip
   * after another; a challenge's decisions still in the order they were taken (its start before
   * its resend or outcome: batchOf). A batch with a failure ends the pass (JetStream still not
   * taking events); what it published is kept. Returns the events published.
   */
  async ownPass(): Promise<number> {
    let published = 0;
    for (const entries of batchesOf([...this.outbox.deferred], IN_FLIGHT, ([, { name }]) => name)) {
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

  /**
   * Every overdue entry, IN_FLIGHT at a time (a dead instance may leave up to OUTBOX_MAX_PER_SLOT in
   * each slot, whose users are refused while it is full), a challenge's decisions in the order they
   * were taken: a slot's outbox is read whole (a challenge's decisions are all in its user's slot)
   * and put in decision order (inDecisionOrder), then batched with the slots after it (batchOf).
   * Held meanwhile: the slot just read, and the decisions of fewer than IN_FLIGHT challenges (a
   * batch not full yet, a challenge's later decisions), never the whole backlog. A batch with a
   * failure ends the pass; what it published is kept. Stops before the next slot or batch once
   * `leased` aborts: another instance may be running a pass by then.
   */
  private async relayAll(now: () => number, leased: AbortSignal): Promise<number> {
    let published = 0;
    /**
     * Entries the deciding instance has had RELAY_AFTER_MS to publish and remove. The younger ones
     * are requests' own, whose removal is batched (every 20 ms): under load there are always some,
     * and counting them would show a backlog that is none.
     */
    let overdue = 0;
    const publish = async (batch: readonly PendingEntry[]) => {
      leased.throwIfAborted();
      const results = await Promise.allSettled(batch.map(({ key, name, raw }) => this.relay(key, name, raw)));
      for (const result of results) if (result.status === 'fulfilled' && result.value) published++;
      const failed = results.find((result) => result.status === 'rejected');
      if (failed) throw failed.reason;
    };
    try {
      // Overdue entries read and not published yet, in order.
      let waiting: PendingEntry[] = [];
      for await (const slot of slotsOf(this.outbox.pending())) {
        leased.throwIfAborted();
        // A young decision may still be its instance's to publish: it waits, and so do the later
        // decisions of its challenge (the instances' clocks may differ: a start can look young
        // while its outcome, decided elsewhere, looks overdue).
        const young = new Set<string>();
        for (const entry of inDecisionOrder(slot)) {
          const challenge = nameOf(entry).split(':', 1)[0]!;
          const record = parseDecisionRecord(entry.raw);
          if (record && record.c.n > now() - RELAY_AFTER_MS) {
            young.add(challenge);
            continue;
          }
          overdue++;
          if (!young.has(challenge)) waiting.push(entry);
        }
        // Full batches go now; one that is not may still take entries of the next slots.
        for (;;) {
          const { batch, rest } = batchOf(waiting, IN_FLIGHT, nameOf);
          if (batch.length < IN_FLIGHT) break;
          waiting = rest;
          await publish(batch);
        }
      }
      for (const batch of batchesOf(waiting, IN_FLIGHT, nameOf)) await publish(batch);
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

type PendingEntry = { key: string; name: string; raw: string };
const nameOf = ({ name }: PendingEntry) => name;

/** The entries of `pending`, a slot's outbox at a time (pending yields them slot by slot). */
async function* slotsOf(pending: AsyncIterable<PendingEntry>): AsyncGenerator<PendingEntry[]> {
  let slot: PendingEntry[] = [];
  for await (const entry of pending) {
    if (slot.length > 0 && slot[0]!.key !== entry.key) {
      yield slot;
      slot = [];
    }
    slot.push(entry);
  }
  if (slot.length > 0) yield slot;
}

/**
 * The next batch of decisions to publish at once, from `entries` in their order: up to `size`, in
 * order, passing over a decision of a challenge the batch holds already ("<challengeId>:<decision>[:<n>]"
 * by `nameOf`), and every later one of that challenge. Those wait in `rest`, in order, for a later
 * batch: the events of one challenge are published one at a time in the order they were decided,
 * without holding back those of the other challenges.
 */
export function batchOf<T>(entries: readonly T[], size: number, nameOf: (entry: T) => string): { batch: T[]; rest: T[] } {
  const batch: T[] = [];
  const rest: T[] = [];
  const held = new Set<string>();
  for (const entry of entries) {
    const challenge = nameOf(entry).split(':', 1)[0]!;
    if (batch.length < size && !held.has(challenge)) batch.push(entry);
    else rest.push(entry);
    held.add(challenge);
  }
  return { batch, rest };
}

/** All of `entries` in batches (batchOf), one after another. */
export function batchesOf<T>(entries: readonly T[], size: number, nameOf: (entry: T) => string): T[][] {
  const batches: T[][] = [];
  for (let rest = entries; rest.length > 0; ) {
    const next = batchOf(rest, size, nameOf);
    batches.push(next.batch);
    rest = next.rest;
  }
  return batches;
}

/**
 * A slot's outbox entries in the order their challenges took them. The outbox is a hash, which
 * Redis reads back in no particular order, so the order comes from the records. Their time (`c.n`)
 * is the deciding instance's clock, and two instances' clocks may differ a little; so what the
 * state machine fixes comes first: a challenge's start before anything else of it, and its outcome
 * (any verify decision but a rejected code: each ends the challenge) after everything else; in
 * between, rejected codes and resends by time, each kind in the order of its numbers (a
 * rejection's attempt, a resend's). An entry that is no record (the relay removes it) has nothing
 * to order: it goes first.
 */
export function inDecisionOrder<T extends { name: string; raw: string }>(entries: readonly T[]): T[] {
  const keyed = entries.map((entry) => {
    const record = parseDecisionRecord(entry.raw);
    const phase = !record ? -1 : record.c.k === 'start' ? 0 : record.c.k === 'resend' || record.r[0] === 'rejected' ? 1 : 2;
    const [challenge, decision, number] = entry.name.split(':');
    return { entry, phase, at: record?.c.n ?? 0, n: Number(number ?? 0) || 0, numbered: phase === 1 && number !== undefined ? `${challenge}:${decision}` : undefined };
  });
  keyed.sort((a, b) => a.phase - b.phase || a.at - b.at || a.n - b.n || (a.entry.name < b.entry.name ? -1 : a.entry.name > b.entry.name ? 1 : 0));
  // A challenge's rejections are numbered by its script (their attempts), and so are its resends:
  // each keeps the places its kind took in the order by time, in the order of its numbers, which
  // no clock can get wrong.
  const places = new Map<string, number[]>();
  for (const [i, { numbered }] of keyed.entries()) {
    if (numbered === undefined) continue;
    const at = places.get(numbered) ?? [];
    at.push(i);
    places.set(numbered, at);
  }
  for (const at of places.values()) {
    const inOrder = at.map((i) => keyed[i]!).sort((a, b) => a.n - b.n);
    at.forEach((i, j) => (keyed[i] = inOrder[j]!));
  }
  return keyed.map(({ entry }) => entry);
}
