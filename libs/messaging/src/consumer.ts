import { headers as natsHeaders } from '@nats-io/nats-core';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream, type ConsumerMessages, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { Headers, parseEvent, type AnyEvent, type ConsumerDefinition, EventSubjects } from '@mfa/contracts';
import { contextFromCarrier, counter, gauge, SpanKind, withSpan, type Logger } from '@mfa/telemetry';
import { isTransientDependencyError } from './transient.js';
import { jetStreamApiCode, JetStreamCodes } from './jetstream-errors.js';
import { provision } from './topology.js';

/**
 * How long one pull request stays open on the server. The server sends an idle heartbeat every
 * half of it; two missed in a row (a consumer leader that died, an election) and the pull is
 * started anew (see `resume`).
 */
const PULL_EXPIRES_MS = 2_000;
/**
 * Look-ups of the consumer while it is being found again: nats-server 2.9 answers nothing for the
 * 4–9 s a consumer's election takes, so each look-up gives up after this and the next follows.
 */
const LOOKUP_TIMEOUT_MS = 1_000;
const LOOKUP_RETRY_MS = 250;
/**
 * Delay of the nak that returns buffered messages at stop. The server keeps sending to a pull
 * request until it expires (nats-server 2.9 cannot cancel one), so a message redelivered at once
 * could go back to this stopping instance's dead pull and then wait a whole ack wait; after the
 * pull has expired it goes to another instance.
 */
const RETURN_DELAY_MS = PULL_EXPIRES_MS + 500;
/**
 * Messages whose failures (other than outages) this instance remembers, by stream sequence: a
 * message that keeps failing is rarely more than a few; an instance that meets more forgets the
 * oldest (which then count again from zero).
 */
const FAILURES_REMEMBERED = 10_000;

/** Thrown by a handler for a message that can never succeed: it goes to the dead-letter subject. */
export class PoisonMessageError extends Error {
  override name = 'PoisonMessageError';
}

export interface Delivery {
  event: AnyEvent;
  msg: JsMsg;
}

interface ConsumerOptions {
  js: JetStreamClient;
  definition: ConsumerDefinition;
  log: Logger;
  /** Called with one or more deliveries; all are acked when it resolves. */
  handle: (deliveries: Delivery[]) => Promise<void>;
  /** Largest batch handed to `handle` (1 = one at a time). */
  batchSize?: number;
  /** Batches handled at once (for independent messages such as SMS sends). */
  concurrency?: number;
  /** Upper bound of the nak back-off. */
  maxBackoffMs?: number;
  /**
   * Creates the durable consumer again (the transport's ensureConsumer): called when the server
   * says it is gone (deleted by hand, or lost with a JetStream store), so consuming resumes.
   */
  recreate?: () => Promise<void>;
  /**
   * How long a partial batch may wait for more messages (projections: fewer, larger
   * transactions under load, for a bounded added lag). 0 hands over whatever has arrived.
   */
  maxWaitMs?: number;
  /**
   * Waits for the server to confirm each ack, and acks again until it does (within the ack wait):
   * for handlers with an outside effect (an SMS, a call, a push), where an ack lost with a NATS
   * node would have the message handled a second time once the ack wait ends.
   */
  confirmAcks?: boolean;
}

/**
 * How often a handler at work on one message for long (a back-off, an offboarding, a wait for
 * import workers) tells JetStream it still works (`msg.working()`): well within every consumer's
 * ack wait (30 s at the shortest, Consumers in @mfa/contracts), so a slow reply costs no redelivery.
 */
export const WORKING_EVERY_MS = 5_000;

/** One confirmation of an ack is waited for this long before the ack is sent again. */
const ACK_CONFIRM_TIMEOUT_MS = 2_000;
const ACK_BODY = '+ACK';

const consumed = counter('mfa_events_consumed_total', 'Events consumed, by consumer and outcome', ['consumer', 'outcome']);
const pending = gauge(
  'mfa_consumer_pending_messages',
  "Messages of a durable consumer's stream not delivered yet, as the last delivery said (the consumer's lag)",
  ['consumer'],
);
const unconfirmedAcks = counter(
  'mfa_consumer_acks_unconfirmed_total',
  'Acks of consumers that confirm them (dispatch: SMS, calls, push) the server did not confirm within the ack wait: those messages may come again',
  ['consumer'],
);
const recreated = counter('mfa_consumers_recreated_total', 'Durable consumers found gone and created again, by consumer', ['consumer']);
const keptWaiting = counter(
  'mfa_consumer_buffered_kept_total',
  'Messages pulled ahead that waited in a consumer\'s buffer for half its ack wait and were told to the server as in progress (so they are not delivered again meanwhile)',
  ['consumer'],
);
const duplicatesDropped = counter(
  'mfa_consumer_redeliveries_dropped_total',
  'Copies of a message delivered again while this instance still held it (buffered or being handled): dropped, the one held is handled',
  ['consumer'],
);

/**
 * Durable consumers of this process that should be consuming and are not (the server lost or
 * deleted them, and creating them again has not succeeded yet). Every service's NATS health check
 * answers 503 while it is not empty.
 */
export const stalledConsumers = new Set<string>();
/** How long to wait before trying again to create a consumer that could not be created. */
const RECREATE_RETRY_MS = 1_000;

/**
 * A durable pull consumer with explicit acks. Messages are handed over in batches (what arrived
 * together), acked after the handler resolves, nak'ed with exponential back-off when it throws,
 * and dead-lettered (published to `mfa.dlq.<durable>` with the reason, then terminated) when they
 * cannot be parsed, when the handler says they are poison, or when they failed `maxDeliver` times
 * for reasons other than an unreachable dependency. An outage (database, Redis, NATS down) is
 * retried for as long as it lasts and never dead-letters anything; the server-side consumer has
 * no delivery limit for that reason.
 *
 * Only failures that are not outages count towards `maxDeliver`, as this instance saw them (the
 * server's delivery count also counts outage retries, ack waits that ran out and messages returned
 * at shutdown). An instance forgets a message's count once it is acked, so with several instances
 * sharing the consumer a message may fail up to `maxDeliver` times on each before one of them
 * dead-letters it.
 *
 * A batch that fails for an outage is returned whole (nak with back-off) and comes back as a
 * batch; one that fails otherwise is retried message by message so one poison message never drags
 * its neighbours to the dead-letter subject.
 *
 * Messages pulled ahead wait in a buffer while the handlers are busy: each one that has waited
 * half the ack wait is told to the server as in progress (again every half ack wait), as long as
 * the handlers make progress, so it is not delivered a second time meanwhile. A copy delivered
 * again while this instance still holds the message (buffered or being handled) is dropped.
 */
export class EventConsumer {
  private messages: ConsumerMessages | undefined;
  /** Pulled, not started yet; `touched`: when it was delivered or last told to the server as in progress. */
  private buffer: Array<{ msg: JsMsg; touched: number }> = [];
  /** Stream sequences buffered or being handled: a redelivered copy of one of them is dropped. */
  private readonly held = new Set<number>();
  /** Failures other than outages, by stream sequence, as this instance saw them. */
  private readonly failures = new Map<number, number>();
  /** When a batch last finished (or the consumer started): the handlers are not stuck. */
  private lastProgress = Date.now();
  private keepAlive: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private readonly idle: Array<() => void> = [];
  private stopped = false;
  private readonly batchSize: number;
  private readonly concurrency: number;
  private readonly maxWaitMs: number;
  private waitTimer: NodeJS.Timeout | undefined;
  /** The JetStream client the consumer is looked up and pulled with: the service's, with short API timeouts. */
  private readonly lookup: JetStreamClient;
  private readonly nc: NatsConnection;

  constructor(private readonly options: ConsumerOptions) {
    this.batchSize = options.batchSize ?? 1;
    this.concurrency = options.concurrency ?? 1;
    this.maxWaitMs = options.maxWaitMs ?? 0;
    this.nc = (options.js as unknown as { nc: NatsConnection }).nc;
    this.lookup = jetstream(this.nc, { ...options.js.getOptions(), timeout: LOOKUP_TIMEOUT_MS });
  }

  get name(): string {
    return this.options.definition.durable;
  }

  /**
   * Starts consuming. At boot the consumer may have been created a moment ago on a cluster that
   * is still electing its leader (a replicated consumer on a new cluster): its look-up then times
   * out, so it is tried again, as the provisioning calls are, for PROVISIONING_PATIENCE_MS.
   */
  start(): Promise<void> {
    const { definition } = this.options;
    if (!this.keepAlive) {
      this.keepAlive = setInterval(() => this.keepBufferedAlive(), Math.max(100, this.ackWaitMs / 4));
      this.keepAlive.unref();
    }
    return provision(`starting consumer ${definition.durable} on ${definition.stream}`, () => this.open());
  }

  private get ackWaitMs(): number {
    return this.options.definition.ackWaitSeconds * 1000;
  }

  /**
   * Tells the server that messages waiting in the buffer for half the ack wait are in progress, so
   * their ack wait starts again instead of running out (which would deliver them a second time,
   * here or elsewhere, while they wait here). Only while batches finish: handlers stuck for a whole
   * ack wait leave the buffered messages to run out and go to another instance.
   */
  private keepBufferedAlive(): void {
    if (this.stopped || this.buffer.length === 0) return;
    const now = Date.now();
    if (this.inFlight >= this.concurrency && now - this.lastProgress > this.ackWaitMs) return;
    for (const entry of this.buffer) {
      if (now - entry.touched < this.ackWaitMs / 2) continue;
      entry.msg.working();
      entry.touched = now;
      keptWaiting.inc({ consumer: this.name });
    }
  }

  /** A message as it arrives: buffered, unless this instance holds it already (a redelivered copy). */
  private receive(msg: JsMsg): void {
    const seq = msg.info.streamSequence;
    if (this.held.has(seq)) {
      const buffered = this.buffer.find((entry) => entry.msg.info.streamSequence === seq);
      // The newer delivery replaces a buffered one (its ack wait starts now); one being handled is
      // acked or nak'ed by its handling (the server takes either by stream sequence).
      if (buffered) {
        buffered.msg = msg;
        buffered.touched = Date.now();
      }
      duplicatesDropped.inc({ consumer: this.name });
      return;
    }
    this.held.add(seq);
    this.buffer.push({ msg, touched: Date.now() });
    this.pump();
  }

  /** Looks the consumer up once and starts its pull. */
  private async open(): Promise<void> {
    if (this.stopped) return;
    const { definition } = this.options;
    const consumer = await this.lookup.consumers.get(definition.stream, definition.durable);
    const messages = await consumer.consume({
      max_messages: Math.max(64, this.batchSize * this.concurrency * 2),
      // Short pull expiry: missed heartbeats are noticed within seconds, so a consumer that was
      // deleted and recreated (e.g. to replay a projection) is picked up again quickly.
      expires: PULL_EXPIRES_MS,
      callback: (msg) => {
        // A message the server sent before it saw the pull close: straight back.
        if (this.stopped) {
          msg.nak(RETURN_DELAY_MS);
          return;
        }
        this.receive(msg);
      },
    });
    if (this.stopped) {
      // stop() ran while this pull was being set up (a resume).
      await messages.close().catch(() => undefined);
      return;
    }
    this.messages = messages;
    stalledConsumers.delete(this.name);
    void this.watch(messages);
  }

  /**
   * Notices the server saying the consumer is gone (creates it again and consumes anew), and the
   * consumer's leader going silent (pulls anew as soon as the consumer answers again).
   */
  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const status of messages.status()) {
      if (this.stopped || this.messages !== messages) return;
      if (status.type === 'heartbeats_missed' && status.count >= 2) {
        await messages.close().catch(() => undefined);
        await this.resume();
        return;
      }
      if (status.type !== 'consumer_deleted' && status.type !== 'consumer_not_found') continue;
      await messages.close().catch(() => undefined);
      await this.recreateAndStart(status.type);
      return;
    }
  }

  /**
   * The pull's heartbeats stopped: the server holding the consumer's leadership died or an
   * election is on. nats.js would look the consumer up again only after its API timeout and a
   * back-off of a whole pull expiry (10 s and more after an election that took 5); here it is
   * looked up every quarter second, each look-up given a second, and consumed as soon as it
   * answers (measured on nats-server 2.9.10: deliveries resume ~0.1–0.5 s after the election).
   */
  private async resume(): Promise<void> {
    this.options.log.info('no heartbeat from the consumer leader: pulling again once it answers', { consumer: this.name });
    while (!this.stopped) {
      try {
        await this.open();
        return;
      } catch (error) {
        if (jetStreamApiCode(error) === JetStreamCodes.ConsumerNotFound) {
          await this.recreateAndStart('consumer_not_found');
          return;
        }
        await new Promise((r) => setTimeout(r, LOOKUP_RETRY_MS));
      }
    }
  }

  private async recreateAndStart(why: string): Promise<void> {
    stalledConsumers.add(this.name);
    this.options.log.error('durable consumer gone: creating it again', { consumer: this.name, status: why });
    while (!this.stopped) {
      try {
        await this.options.recreate?.();
        await this.open();
        recreated.inc({ consumer: this.name });
        this.options.log.warn('durable consumer created again and consuming', { consumer: this.name });
        return;
      } catch (error) {
        this.options.log.warn('durable consumer could not be created again yet', { consumer: this.name, error });
        await new Promise((r) => setTimeout(r, RECREATE_RETRY_MS));
      }
    }
  }

  private pump(flush = false): void {
    while (!this.stopped && this.inFlight < this.concurrency && this.buffer.length > 0) {
      if (!flush && this.maxWaitMs > 0 && this.buffer.length < this.batchSize) {
        this.waitTimer ??= setTimeout(() => {
          this.waitTimer = undefined;
          this.pump(true);
        }, this.maxWaitMs);
        return;
      }
      clearTimeout(this.waitTimer);
      this.waitTimer = undefined;
      const now = Date.now();
      const batch: JsMsg[] = [];
      for (const entry of this.buffer.splice(0, this.batchSize)) {
        // Its ack wait ran out while it waited (the handlers were stuck): the server delivers it
        // again, here or to another instance; handling this copy too would handle it twice.
        if (now - entry.touched >= this.ackWaitMs) this.held.delete(entry.msg.info.streamSequence);
        else batch.push(entry.msg);
      }
      if (batch.length === 0) continue;
      this.inFlight++;
      void this.process(batch).finally(() => {
        for (const msg of batch) this.held.delete(msg.info.streamSequence);
        this.lastProgress = Date.now();
        this.inFlight--;
        if (this.inFlight === 0 && (this.buffer.length === 0 || this.stopped)) this.idle.splice(0).forEach((r) => r());
        this.pump();
      });
    }
  }

  private async process(batch: JsMsg[]): Promise<void> {
    const last = batch.at(-1);
    if (last) pending.set({ consumer: this.name }, last.info.pending);
    const deliveries: Delivery[] = [];
    for (const msg of batch) {
      try {
        deliveries.push({ msg, event: parseEvent(msg.json()) });
      } catch (error) {
        await this.deadLetter(msg, `unparseable event: ${(error as Error).message}`);
      }
    }
    if (deliveries.length === 0) return;
    try {
      await this.runHandler(deliveries);
      if (this.options.confirmAcks) await Promise.all(deliveries.map((d) => this.confirmedAck(d.msg)));
      else for (const d of deliveries) d.msg.ack();
      for (const d of deliveries) this.failures.delete(d.msg.info.streamSequence);
      consumed.inc({ consumer: this.name, outcome: 'ack' }, deliveries.length);
    } catch (error) {
      // An outage (or a stop) fails the whole batch for a reason none of its messages is to blame
      // for: returned whole, it comes back as a batch once the dependency answers. Any other error
      // may be one message's: each is tried alone, so only the guilty one fails.
      if (deliveries.length > 1 && !this.stopped && !isTransientDependencyError(error)) {
        for (const d of deliveries) await this.processOne(d);
      } else {
        for (const d of deliveries) await this.fail(d, error);
      }
    }
  }

  private async processOne(delivery: Delivery): Promise<void> {
    try {
      await this.runHandler([delivery]);
      if (this.options.confirmAcks) await this.confirmedAck(delivery.msg);
      else delivery.msg.ack();
      this.failures.delete(delivery.msg.info.streamSequence);
      consumed.inc({ consumer: this.name, outcome: 'ack' });
    } catch (error) {
      await this.fail(delivery, error);
    }
  }

  /**
   * Acks and waits for the server's confirmation; without one (the ack or its answer lost with a
   * NATS node), acks again over the connection, which resends once it has reconnected, until
   * shortly before the ack wait ends. Acking twice is harmless.
   */
  private async confirmedAck(msg: JsMsg): Promise<void> {
    const until = Date.now() + this.options.definition.ackWaitSeconds * 1000 - ACK_CONFIRM_TIMEOUT_MS;
    const reply = (msg as JsMsg & { reply?: string }).reply;
    for (let attempt = 0; ; attempt++) {
      try {
        if (attempt === 0) await msg.ackAck({ timeout: ACK_CONFIRM_TIMEOUT_MS });
        else if (reply) await this.nc.request(reply, ACK_BODY, { timeout: ACK_CONFIRM_TIMEOUT_MS });
        return;
      } catch (error) {
        if (this.stopped || !reply || Date.now() >= until) {
          unconfirmedAcks.inc({ consumer: this.name });
          this.options.log.warn('the server did not confirm an ack: the message may be delivered again', { consumer: this.name, attempts: attempt + 1, error });
          return;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  private runHandler(deliveries: Delivery[]): Promise<void> {
    const first = deliveries[0]!;
    return withSpan(
      `${this.name} process`,
      {
        kind: SpanKind.CONSUMER,
        parent: contextFromCarrier(first.event.metadata),
        attributes: {
          'messaging.system': 'nats',
          'messaging.consumer.group.name': this.name,
          'messaging.batch.message_count': deliveries.length,
          'mfa.event.type': first.event.type,
        },
      },
      () => this.options.handle(deliveries),
    );
  }

  private async fail(delivery: Delivery, error: unknown): Promise<void> {
    const { msg, event } = delivery;
    const seq = msg.info.streamSequence;
    const deliveries = msg.info.deliveryCount;
    if (this.stopped) {
      // Stopping: the handler may have been cut short on purpose (the transport's stop signal
      // ends waits between retries). The message goes back, for another instance, uncounted.
      this.options.log.info('event handling ended by the stop: message returned', { consumer: this.name, eventType: event.type, eventId: event.id, deliveries, error });
      msg.nak(RETURN_DELAY_MS);
      consumed.inc({ consumer: this.name, outcome: 'nak' });
      return;
    }
    const outage = isTransientDependencyError(error);
    const failures = outage ? (this.failures.get(seq) ?? 0) : this.countFailure(seq);
    if (error instanceof PoisonMessageError || (!outage && failures >= this.options.definition.maxDeliver)) {
      const why = error instanceof PoisonMessageError ? 'poison' : `failed ${failures} deliveries`;
      this.failures.delete(seq);
      await this.deadLetter(msg, `${why}: ${(error as Error)?.message ?? String(error)}`, event);
      return;
    }
    const delay = Math.min(this.options.maxBackoffMs ?? 30_000, 250 * 2 ** (deliveries - 1));
    this.options.log.warn(outage ? 'dependency unavailable, will retry' : 'event handling failed, will retry', {
      consumer: this.name,
      eventType: event.type,
      eventId: event.id,
      deliveries,
      failures,
      retryInMs: delay,
      error,
    });
    msg.nak(delay);
    consumed.inc({ consumer: this.name, outcome: 'nak' });
  }

  /** One more failure of the message that is not an outage; the oldest remembered one is forgotten past the bound. */
  private countFailure(seq: number): number {
    const failures = (this.failures.get(seq) ?? 0) + 1;
    this.failures.delete(seq);
    this.failures.set(seq, failures);
    if (this.failures.size > FAILURES_REMEMBERED) this.failures.delete(this.failures.keys().next().value!);
    return failures;
  }

  /** Publishes the original bytes to the dead-letter subject, then terminates the message. */
  private async deadLetter(msg: JsMsg, reason: string, event?: AnyEvent): Promise<void> {
    const h = natsHeaders();
    h.set(Headers.deadLetterReason, reason.slice(0, 1024));
    h.set(Headers.deadLetterStream, msg.info.stream);
    h.set(Headers.deadLetterSequence, String(msg.info.streamSequence));
    h.set(Headers.deadLetterSubject, msg.subject);
    h.set(Headers.deadLetterDeliveries, String(msg.info.deliveryCount));
    try {
      await this.options.js.publish(EventSubjects.deadLetter(this.name), msg.data, {
        headers: h,
        msgID: `${msg.info.stream}:${msg.info.streamSequence}:${this.name}`,
      });
    } catch (error) {
      // Could not record it: leave it to be redelivered rather than lose it.
      this.options.log.error('dead-lettering failed; message left for redelivery', { consumer: this.name, error });
      msg.nak(5_000);
      return;
    }
    this.options.log.error('message dead-lettered', {
      consumer: this.name,
      stream: msg.info.stream,
      sequence: msg.info.streamSequence,
      subject: msg.subject,
      eventType: event?.type,
      eventId: event?.id,
      reason,
    });
    // Plain term: nats-server 2.9 ignores a terminate that carries a reason (the reason is in the
    // dead-letter headers anyway).
    msg.term();
    consumed.inc({ consumer: this.name, outcome: 'dead_letter' });
  }

  /**
   * Stops pulling and starts no new batch; messages buffered but not started are nak'ed at once,
   * so another instance takes them instead of waiting for them behind slow work here; batches in
   * flight finish (and ack).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    stalledConsumers.delete(this.name);
    clearTimeout(this.waitTimer);
    clearInterval(this.keepAlive);
    await this.messages?.close().catch(() => undefined);
    for (const { msg } of this.buffer.splice(0)) msg.nak(RETURN_DELAY_MS);
    if (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
    // Anything that arrived while the pull closed.
    for (const { msg } of this.buffer.splice(0)) msg.nak(RETURN_DELAY_MS);
    this.held.clear();
  }
}
