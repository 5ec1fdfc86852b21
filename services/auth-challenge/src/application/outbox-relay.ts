import { hostname } from 'node:os';
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { EventPublisher } from '@mfa/messaging';
import { LOGGER, REDIS } from '@mfa/service-kit';
import { counter, gauge, type Logger } from '@mfa/telemetry';
import { Outbox, parseDecisionRecord } from '../adapters/outbox.js';
import { ChallengeService } from './challenge.service.js';

/** How often the relay looks at the outboxes (one instance at a time, under a lease). */
const RELAY_EVERY_MS = 5_000;
const LEASE_KEY = 'mfa:outbox:relay';
const LEASE_MS = 30_000;
/**
 * A decision younger than this may still be in the hands of the instance that took it (publishing,
 * retrying until the caller's deadline, or its removal batched): left to it.
 */
const RELAY_AFTER_MS = 10_000;

const relayed = counter('mfa_outbox_relayed_total', 'Challenge events published by the outbox relay, by outcome', ['outcome']);
const pendingGauge = gauge('mfa_outbox_pending', 'Decisions in the outboxes at the last relay pass (events not acknowledged yet)');

/**
 * Publishes the events of decisions that stayed in the outbox: the instance that took them could
 * not publish them before its caller's deadline (JetStream unavailable), or died between the
 * script and the ack. Every instance runs it; a lease in Redis lets one pass run at a time, and
 * another instance takes over when the holder dies. The event is rebuilt from the record exactly
 * as the deciding instance built it (same id: JetStream de-duplicates a publish that did land).
 */
@Injectable()
export class OutboxRelay implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly owner = `${hostname()}:${process.pid}`;

  constructor(
    @Inject(Outbox) private readonly outbox: Outbox,
    @Inject(ChallengeService) private readonly challenges: ChallengeService,
    @Inject(EventPublisher) private readonly publisher: EventPublisher,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => void this.pass(), RELAY_EVERY_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One pass over every slot's outbox, if no other instance holds the lease. Returns the events published. */
  async pass(now = Date.now): Promise<number> {
    if (this.running) return 0;
    let published = 0;
    this.running = (async () => {
      try {
        if ((await this.redis.set(LEASE_KEY, this.owner, 'PX', LEASE_MS, 'NX')) !== 'OK') return;
      } catch {
        return; // Redis unreachable: the next pass tries again.
      }
      let seen = 0;
      try {
        for await (const { key, name, raw } of this.outbox.pending()) {
          seen++;
          const record = parseDecisionRecord(raw);
          if (record && record.c.n > now() - RELAY_AFTER_MS) continue;
          const built = record ? this.challenges.eventOfRecord(record) : undefined;
          if (!built) {
            // Never publishable: kept out of the way, and said loudly (an operator must look).
            this.log.error('an outbox entry cannot be turned into an event: removed', { name: name.slice(0, 200) });
            relayed.inc({ outcome: 'unreadable' });
            await this.outbox.removeNow(key, name);
            continue;
          }
          const ack = await this.publisher.publish(built.subject, built.event);
          await this.outbox.removeNow(key, name);
          relayed.inc({ outcome: ack.duplicate ? 'duplicate' : 'published' });
          published++;
        }
        pendingGauge.set(seen);
        if (published > 0) this.log.warn('the outbox relay published events the deciding instance had not', { published });
      } catch (error) {
        this.log.warn('outbox relay pass interrupted; the next one goes on', { error });
      } finally {
        await this.redis.del(LEASE_KEY).catch(() => undefined);
      }
    })().finally(() => {
      this.running = undefined;
    });
    await this.running;
    return published;
  }
}
