import type { NatsConnection } from '@nats-io/nats-core';
import {
  DeliverPolicy,
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  type Consumer,
  type ConsumerMessages,
  type ConsumerNotification,
  type JetStreamClient,
  type JsMsg,
} from '@nats-io/jetstream';
import { counter, createLogger, gauge, type Logger } from '@mfa/telemetry';
import { stalledConsumers } from './consumer.js';
import { provision } from './topology.js';

/**
 * Pulls of a follower stay open this long; the server sends an idle heartbeat every half of it.
 * nats.js's default (30 s, a heartbeat every 15 s) noticed a dead server after 30 s at best.
 */
const FOLLOW_EXPIRES_MS = 2_000;
/**
 * Nothing from the server for this long (no message, heartbeat or pull expiry): the server holding
 * the ordered consumer is gone or cut off, and the follower makes a new one.
 */
const FOLLOW_SILENCE_MS = 3 * (FOLLOW_EXPIRES_MS / 2);
/** Each JetStream call while making the consumer again; the next attempt follows at once. */
const FOLLOW_API_TIMEOUT_MS = 2_000;
const FOLLOW_RETRY_MS = 250;

const followerRestarts = counter(
  'mfa_follower_restarts_total',
  'Ordered consumers of in-memory state (API clients, tenant settings, per-IP locks and throttles) made again from the last message seen, after their server went silent',
  ['stream', 'filter'],
);
const followerStalled = gauge(
  'mfa_follower_stalled',
  '1 while a follower of in-memory state receives nothing from its server and is being made again (its /health answers 503 meanwhile)',
  ['stream', 'filter'],
);
const followerErrors = counter(
  'mfa_follower_message_errors_total',
  "Messages a follower's handler threw on (logged and skipped; the follower goes on)",
  ['stream', 'filter'],
);

/** Stalled followers by their name in `stalledConsumers` (several may share one: counted). */
const stalledFollowers = new Map<string, number>();
function markStalled(name: string, labels: { stream: string; filter: string }, stalled: boolean): void {
  const count = (stalledFollowers.get(name) ?? 0) + (stalled ? 1 : -1);
  if (count > 0) {
    stalledFollowers.set(name, count);
    stalledConsumers.add(name);
  } else {
    stalledFollowers.delete(name);
    stalledConsumers.delete(name);
  }
  followerStalled.set(labels, count > 0 ? 1 : 0);
}

let fallbackLog: Logger | undefined;

export interface FollowOptions {
  /** Only the last message of each subject, then live. */
  lastPerSubject?: boolean;
  /** Where a message the handler threw on, and a follower made again, are logged. */
  log?: Logger;
}

/**
 * Follows every message of `filter` in `stream`, from the start and then live, through an ordered
 * (ephemeral) consumer: for state each instance keeps whole in its own memory (tenant settings, API
 * clients), where a durable consumer would share the messages among instances. Resolves once the
 * messages present at the start have been handed to `onMessage` (or after `timeoutMs`); the
 * returned subscription keeps delivering until closed. `onCaughtUp` is called once those messages
 * are in, however long that takes: what a cache that must not answer from partial state waits for.
 * `lastPerSubject`: only the last message of each subject, then live (aggregates whose every event
 * carries their whole state).
 *
 * An ordered consumer has one replica, on one server. When that server dies for good, nats.js
 * keeps asking it for the consumer's info, which no other server answers with "not found", so it
 * never makes the consumer again: the state in memory would stop at that point (a revoked API key
 * staying valid). The follower therefore watches its server itself: after FOLLOW_SILENCE_MS without
 * a message or a heartbeat it drops the consumer and makes a new one, which the cluster places on
 * a live server, starting after the last message handed over (nothing skipped, nothing twice).
 * Meanwhile it is in `stalledConsumers`, so the service's `/health` answers 503.
 *
 * A message `onMessage` throws on is logged, counted (`mfa_follower_message_errors_total`) and
 * skipped: nats.js would otherwise stop the consumer for good on the first exception.
 */
export async function followSubjects(
  js: JetStreamClient,
  stream: string,
  filter: string,
  onMessage: (msg: JsMsg) => void,
  timeoutMs = 10_000,
  onCaughtUp: () => void = () => undefined,
  options: FollowOptions = {},
): Promise<ConsumerMessages> {
  const follower = new Follower(js, stream, filter, onMessage, onCaughtUp, options);
  // At boot on a new cluster JetStream may not answer yet: tried again as provisioning calls are.
  const pending = await provision(`following ${filter} on ${stream}`, () => follower.open(js));
  if (pending === 0) follower.caughtUp();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([follower.ready, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
  clearTimeout(timer);
  return follower;
}

/**
 * One follower: the ordered consumer of the moment, made again on a live server whenever its own
 * goes silent. It is the ConsumerMessages the caller closes.
 */
class Follower implements ConsumerMessages {
  readonly ready: Promise<void>;
  private resolveReady: () => void = () => undefined;
  private told = false;
  private lastSeq = 0;
  private handled = 0;
  private consumer: Consumer | undefined;
  private messages: ConsumerMessages | undefined;
  /** Bumped with each consumer: messages of an older one are ignored. */
  private generation = 0;
  private lastHeard = Date.now();
  private stalled = false;
  private restarting = false;
  /** The first open() succeeded: until then its own retries (provision) make the consumer, not the watchdog. */
  private opened = false;
  private done = false;
  private readonly watchdog: NodeJS.Timeout;
  private readonly closedPromise: Promise<void>;
  private resolveClosed: () => void = () => undefined;
  private readonly listeners = new Set<(n: ConsumerNotification | undefined) => void>();
  private readonly nc: NatsConnection;
  /** Short API timeouts while making the consumer again: the next attempt follows instead of waiting. */
  private readonly api: JetStreamClient;
  private readonly labels: { stream: string; filter: string };
  private readonly name: string;
  private readonly log: Logger;

  constructor(
    js: JetStreamClient,
    private readonly stream: string,
    private readonly filter: string,
    private readonly onMessage: (msg: JsMsg) => void,
    private readonly onCaughtUp: () => void,
    private readonly options: FollowOptions,
  ) {
    this.ready = new Promise<void>((resolve) => (this.resolveReady = resolve));
    this.closedPromise = new Promise<void>((resolve) => (this.resolveClosed = resolve));
    this.nc = (js as unknown as { nc: NatsConnection }).nc;
    this.api = jetstream(this.nc, { ...js.getOptions(), timeout: FOLLOW_API_TIMEOUT_MS });
    this.labels = { stream, filter };
    this.name = `follower of ${filter} on ${stream}`;
    this.log = options.log ?? (fallbackLog ??= createLogger('messaging'));
    this.watchdog = setInterval(() => this.check(), FOLLOW_EXPIRES_MS / 4);
    this.watchdog.unref();
  }

  caughtUp(): void {
    this.resolveReady();
    if (this.told) return;
    this.told = true;
    this.onCaughtUp();
  }

  /**
   * Makes an ordered consumer starting after the last message handed over (or as asked, before
   * the first) and consumes it. Resolves with the messages it has to deliver at its start.
   */
  async open(js: JetStreamClient): Promise<number> {
    const first = this.lastSeq === 0;
    const consumer = await js.consumers.get(this.stream, {
      filter_subjects: this.filter,
      ...(first && this.options.lastPerSubject ? { deliver_policy: DeliverPolicy.LastPerSubject } : {}),
      ...(first ? {} : { opt_start_seq: this.lastSeq + 1 }),
    });
    const info = await consumer.info(true);
    if (this.done) {
      void consumer.delete().catch(() => undefined);
      return info.num_pending;
    }
    const generation = ++this.generation;
    const messages = await consumer.consume({
      expires: FOLLOW_EXPIRES_MS,
      callback: (msg) => this.deliver(generation, msg),
    });
    this.consumer = consumer;
    this.messages = messages;
    this.opened = true;
    this.lastHeard = Date.now();
    void this.listen(generation, messages);
    return info.num_pending;
  }

  private deliver(generation: number, msg: JsMsg): void {
    if (generation !== this.generation || this.done) return;
    this.lastHeard = Date.now();
    // A consumer made again starts after the last message handed over: never one twice.
    if (msg.seq <= this.lastSeq) return;
    this.lastSeq = msg.seq;
    this.handled++;
    try {
      this.onMessage(msg);
    } catch (error) {
      followerErrors.inc(this.labels);
      this.log.error('a followed message could not be handled: skipped', { stream: this.stream, filter: this.filter, seq: msg.seq, subject: msg.subject, error });
    }
    if (msg.info.pending === 0) this.caughtUp();
  }

  /** The server's heartbeats and pull expiries say it is there; everything is passed on to status(). */
  private async listen(generation: number, messages: ConsumerMessages): Promise<void> {
    try {
      for await (const status of messages.status()) {
        if (generation !== this.generation) return;
        if (status.type === 'heartbeat' || status.type === 'discard' || status.type === 'ordered_consumer_recreated') this.lastHeard = Date.now();
        for (const listener of this.listeners) listener(status);
      }
    } catch {
      // The consumer stopped; the watchdog decides what follows.
    }
  }

  /** Every quarter of a pull: a follower whose server fell silent is made again. */
  private check(): void {
    // A first open() slower than the silence (JetStream slow at boot) is not raced by a second one,
    // whose consumer would be left behind unclosed.
    if (this.done || this.restarting || !this.opened) return;
    if (this.nc.isClosed()) {
      void this.close();
      return;
    }
    if (Date.now() - this.lastHeard < FOLLOW_SILENCE_MS) return;
    this.restarting = true;
    void this.restart().finally(() => (this.restarting = false));
  }

  private async restart(): Promise<void> {
    if (!this.stalled) {
      this.stalled = true;
      markStalled(this.name, this.labels, true);
    }
    this.log.warn('no heartbeat from the server of a follower: making its consumer again', { stream: this.stream, filter: this.filter, afterSeq: this.lastSeq });
    this.generation++;
    const old = this.messages;
    const oldConsumer = this.consumer;
    this.messages = undefined;
    this.consumer = undefined;
    await old?.close().catch(() => undefined);
    // Its server may be gone for good; if not, it would expire by itself (inactive threshold).
    void oldConsumer?.delete().catch(() => undefined);
    while (!this.done) {
      try {
        await this.open(this.api);
        if (this.done) return;
        followerRestarts.inc(this.labels);
        this.stalled = false;
        markStalled(this.name, this.labels, false);
        this.log.warn('follower consuming again', { stream: this.stream, filter: this.filter, afterSeq: this.lastSeq });
        return;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) {
          this.log.error('the stream of a follower is gone: trying again', { stream: this.stream, filter: this.filter, error });
        }
        await new Promise((r) => setTimeout(r, FOLLOW_RETRY_MS));
      }
    }
  }

  // ConsumerMessages: what the callers of followSubjects use (close) and the rest of the type.

  async close(): Promise<void | Error> {
    if (!this.done) {
      this.done = true;
      this.generation++;
      clearInterval(this.watchdog);
      if (this.stalled) {
        this.stalled = false;
        markStalled(this.name, this.labels, false);
      }
      const messages = this.messages;
      const consumer = this.consumer;
      this.messages = undefined;
      this.consumer = undefined;
      await messages?.close().catch(() => undefined);
      void consumer?.delete().catch(() => undefined);
      for (const listener of this.listeners) listener(undefined);
      this.listeners.clear();
      this.resolveClosed();
    }
    return undefined;
  }

  closed(): Promise<void | Error> {
    return this.closedPromise;
  }

  stop(): void {
    void this.close();
  }

  getProcessed(): number {
    return this.handled;
  }

  getPending(): number {
    return 0;
  }

  getReceived(): number {
    return this.handled;
  }

  [Symbol.asyncIterator](): AsyncIterator<JsMsg> {
    throw new Error('a follower hands its messages to its callback; it cannot be iterated');
  }

  /** The notifications of the consumer of the moment, until the follower is closed. */
  status(): AsyncIterable<ConsumerNotification> {
    const queue: ConsumerNotification[] = [];
    let wake: (() => void) | undefined;
    let ended = this.done;
    const listener = (n: ConsumerNotification | undefined) => {
      if (n === undefined) ended = true;
      else queue.push(n);
      wake?.();
    };
    if (!ended) this.listeners.add(listener);
    return {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<ConsumerNotification>> => {
          while (queue.length === 0 && !ended) await new Promise<void>((r) => (wake = r));
          const value = queue.shift();
          return value === undefined ? { done: true, value: undefined } : { done: false, value };
        },
        return: async (): Promise<IteratorResult<ConsumerNotification>> => {
          this.listeners.delete(listener);
          ended = true;
          return { done: true, value: undefined };
        },
      }),
    };
  }
}

/**
 * Reads the messages of `filter` that are in `stream` now, through an ordered consumer, and stops:
 * for one-off passes over the log such as a rebuild. `deliver` chooses where to start (every
 * message, the last one of each subject, or from a time); `headersOnly` leaves bodies on the
 * server when the subjects are all that is needed. Resolves with the number of messages read; a
 * stream that does not exist yet holds none.
 */
export async function readOnce(
  js: JetStreamClient,
  stream: string,
  filter: string,
  deliver: { policy: 'all' } | { policy: 'last_per_subject' } | { policy: 'since'; time: Date },
  onMessage: (msg: JsMsg) => void | Promise<void>,
  options: { headersOnly?: boolean } = {},
): Promise<number> {
  const consumer = await js.consumers
    .get(stream, {
    filter_subjects: filter,
    ...(deliver.policy === 'all' ? {} : deliver.policy === 'last_per_subject'
      ? { deliver_policy: DeliverPolicy.LastPerSubject }
      : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: deliver.time.toISOString() }),
    ...(options.headersOnly ? { headers_only: true } : {}),
  })
    .catch((error: unknown) => {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
      throw error;
    });
  if (!consumer || (await consumer.info()).num_pending === 0) return 0;
  let read = 0;
  const messages = await consumer.consume();
  try {
    for await (const msg of messages) {
      await onMessage(msg);
      read++;
      if (msg.info.pending === 0) break;
    }
  } finally {
    messages.stop();
  }
  return read;
}
