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
 * no delivery limit for that reason. A failing batch is retried message by message so one
 * poison message never drags its neighbours to the dead-letter subject.
 */
export class EventConsumer {
  private messages: ConsumerMessages | undefined;
  private buffer: JsMsg[] = [];
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
    return provision(`starting consumer ${definition.durable} on ${definition.stream}`, () => this.open());
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
        this.buffer.push(msg);
        this.pump();
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
      const batch = this.buffer.splice(0, this.batchSize);
      this.inFlight++;
      void this.process(batch).finally(() => {
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
      consumed.inc({ consumer: this.name, outcome: 'ack' }, deliveries.length);
    } catch (error) {
      if (deliveries.length > 1) {
        for (const d of deliveries) await this.processOne(d);
      } else {
        await this.fail(deliveries[0]!, error);
      }
    }
  }

  private async processOne(delivery: Delivery): Promise<void> {
    try {
      await this.runHandler([delivery]);
      if (this.options.confirmAcks) await this.confirmedAck(delivery.msg);
      else delivery.msg.ack();
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
    const deliveries = msg.info.deliveryCount;
    const outage = isTransientDependencyError(error);
    if (error instanceof PoisonMessageError || (!outage && deliveries >= this.options.definition.maxDeliver)) {
      const why = error instanceof PoisonMessageError ? 'poison' : `failed ${deliveries} deliveries`;
      await this.deadLetter(msg, `${why}: ${(error as Error)?.message ?? String(error)}`, event);
      return;
    }
    const delay = Math.min(this.options.maxBackoffMs ?? 30_000, 250 * 2 ** (deliveries - 1));
    this.options.log.warn(outage ? 'dependency unavailable, will retry' : 'event handling failed, will retry', {
      consumer: this.name,
      eventType: event.type,
      eventId: event.id,
      deliveries,
      retryInMs: delay,
      error,
    });
    msg.nak(delay);
    consumed.inc({ consumer: this.name, outcome: 'nak' });
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
    await this.messages?.close().catch(() => undefined);
    for (const msg of this.buffer.splice(0)) msg.nak(RETURN_DELAY_MS);
    if (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
    // Anything that arrived while the pull closed.
    for (const msg of this.buffer.splice(0)) msg.nak(RETURN_DELAY_MS);
  }
}
