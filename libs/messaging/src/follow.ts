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
  type OrderedConsumerOptions,
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
 * Until the new consumer is heard from (a message or a heartbeat, not merely made) it is in
 * `stalledConsumers`, so the service's `/health` answers 503.
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
 * What a follower and a one-off read share: an ordered consumer (one replica, on one server) that
 * is dropped and made again when its server goes silent, starting after the last message handed
 * over, so that nothing is skipped and nothing is handed over twice. A new one is placed by the
 * cluster on a live server. Each consumer is a generation: messages of an older one still on the
 * way are ignored.
 */
abstract class ResumableConsumer {
  protected lastSeq = 0;
  protected consumer: Consumer | undefined;
  protected messages: ConsumerMessages | undefined;
  /** Bumped with each consumer: messages of an older one are ignored. */
  protected generation = 0;
  protected lastHeard = Date.now();
  /**
   * The last message or heartbeat from the server: unlike lastHeard, not reset by a consumer just
   * made, which proves only that the JetStream API answers, not that its server delivers.
   */
  protected lastProgress = Date.now();
  /** The first open() succeeded: until then a follower's own retries (provision) make the consumer, not its watchdog. */
  protected opened = false;
  protected done = false;
  protected readonly nc: NatsConnection;
  /** Short API timeouts while making the consumer again: the next attempt follows instead of waiting. */
  protected readonly api: JetStreamClient;

  constructor(
    js: JetStreamClient,
    protected readonly stream: string,
    protected readonly filter: string,
  ) {
    this.nc = (js as unknown as { nc: NatsConnection }).nc;
    this.api = jetstream(this.nc, { ...js.getOptions(), timeout: FOLLOW_API_TIMEOUT_MS });
  }

  /** Where a consumer starts: `resume` once a message has been handed over. */
  protected abstract start(resume: boolean): Partial<OrderedConsumerOptions>;
  /** Consumes a consumer just made, as generation `generation`. */
  protected abstract consume(consumer: Consumer, generation: number): Promise<ConsumerMessages>;
  /** Every notification of the consumer of the moment. */
  protected notified(_status: ConsumerNotification): void {}
  /** A message or a heartbeat of the consumer of the moment came. */
  protected progressed(): void {}

  /**
   * Makes an ordered consumer (as start() says) and consumes it. Resolves with the messages it has
   * to deliver at its start.
   */
  async open(js: JetStreamClient): Promise<number> {
    const consumer = await js.consumers.get(this.stream, { filter_subjects: this.filter, ...this.start(this.lastSeq > 0) });
    const info = await consumer.info(true);
    if (this.done) {
      void consumer.delete().catch(() => undefined);
      return info.num_pending;
    }
    const generation = ++this.generation;
    const messages = await this.consume(consumer, generation);
    this.consumer = consumer;
    this.messages = messages;
    this.opened = true;
    this.lastHeard = Date.now();
    void this.listen(generation, messages);
    return info.num_pending;
  }

  /**
   * Whether a message of consumer `generation` is to be handed over: it is the current consumer's
   * and comes after the last message handed over (a consumer made again may start before it).
   */
  protected accept(generation: number, msg: JsMsg): boolean {
    if (generation !== this.generation || this.done) return false;
    this.lastHeard = this.lastProgress = Date.now();
    this.progressed();
    if (msg.seq <= this.lastSeq) return false;
    this.lastSeq = msg.seq;
    return true;
  }

  /** The server's heartbeats and pull expiries say it is there. */
  private async listen(generation: number, messages: ConsumerMessages): Promise<void> {
    try {
      for await (const status of messages.status()) {
        if (generation !== this.generation) return;
        // A consumer nats.js made again has yet to be heard from: not progress.
        if (status.type === 'heartbeat' || status.type === 'discard') {
          this.lastHeard = this.lastProgress = Date.now();
          this.progressed();
        } else if (status.type === 'ordered_consumer_recreated') this.lastHeard = Date.now();
        this.notified(status);
      }
    } catch {
      // The consumer stopped; the owner's watchdog decides what follows.
    }
  }

  protected silent(): boolean {
    return Date.now() - this.lastHeard >= FOLLOW_SILENCE_MS;
  }

  /** Stops the consumer of the moment and deletes it (if its server is gone for good, it would expire by itself). */
  protected async drop(): Promise<void> {
    this.generation++;
    const messages = this.messages;
    const consumer = this.consumer;
    this.messages = undefined;
    this.consumer = undefined;
    if (messages) await this.stopMessages(messages);
    void consumer?.delete().catch(() => undefined);
  }

  protected async stopMessages(messages: ConsumerMessages): Promise<void> {
    await messages.close().catch(() => undefined);
  }
}

/**
 * One follower: the ordered consumer of the moment, made again on a live server whenever its own
 * goes silent. It is the ConsumerMessages the caller closes.
 */
class Follower extends ResumableConsumer implements ConsumerMessages {
  readonly ready: Promise<void>;
  private resolveReady: () => void = () => undefined;
  private told = false;
  private handled = 0;
  private stalled = false;
  private restarting = false;
  private readonly watchdog: NodeJS.Timeout;
  private readonly closedPromise: Promise<void>;
  private resolveClosed: () => void = () => undefined;
  private readonly listeners = new Set<(n: ConsumerNotification | undefined) => void>();
  private readonly labels: { stream: string; filter: string };
  private readonly name: string;
  private readonly log: Logger;

  constructor(
    js: JetStreamClient,
    stream: string,
    filter: string,
    private readonly onMessage: (msg: JsMsg) => void,
    private readonly onCaughtUp: () => void,
    private readonly options: FollowOptions,
  ) {
    super(js, stream, filter);
    this.ready = new Promise<void>((resolve) => (this.resolveReady = resolve));
    this.closedPromise = new Promise<void>((resolve) => (this.resolveClosed = resolve));
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

  /** As asked before the first message; after the last message handed over once one was. */
  protected start(resume: boolean): Partial<OrderedConsumerOptions> {
    if (resume) return { opt_start_seq: this.lastSeq + 1 };
    return this.options.lastPerSubject ? { deliver_policy: DeliverPolicy.LastPerSubject } : {};
  }

  protected consume(consumer: Consumer, generation: number): Promise<ConsumerMessages> {
    return consumer.consume({ expires: FOLLOW_EXPIRES_MS, callback: (msg) => this.deliver(generation, msg) });
  }

  protected override notified(status: ConsumerNotification): void {
    for (const listener of this.listeners) listener(status);
  }

  /**
   * Healthy again once its new consumer is heard from, not once it is made: one whose pulls never
   * reach its server (cut off from it over the routes, pulls refused) would clear /health between
   * each of its restarts while the follower receives nothing.
   */
  protected override progressed(): void {
    if (!this.stalled) return;
    this.stalled = false;
    markStalled(this.name, this.labels, false);
  }

  private deliver(generation: number, msg: JsMsg): void {
    if (!this.accept(generation, msg)) return;
    this.handled++;
    try {
      this.onMessage(msg);
    } catch (error) {
      followerErrors.inc(this.labels);
      this.log.error('a followed message could not be handled: skipped', { stream: this.stream, filter: this.filter, seq: msg.seq, subject: msg.subject, error });
    }
    if (msg.info.pending === 0) this.caughtUp();
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
    if (!this.silent()) return;
    this.restarting = true;
    void this.restart().finally(() => (this.restarting = false));
  }

  private async restart(): Promise<void> {
    if (!this.stalled) {
      this.stalled = true;
      markStalled(this.name, this.labels, true);
    }
    this.log.warn('no heartbeat from the server of a follower: making its consumer again', { stream: this.stream, filter: this.filter, afterSeq: this.lastSeq });
    await this.drop();
    while (!this.done) {
      try {
        await this.open(this.api);
        if (this.done) return;
        followerRestarts.inc(this.labels);
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
      clearInterval(this.watchdog);
      if (this.stalled) {
        this.stalled = false;
        markStalled(this.name, this.labels, false);
      }
      await this.drop();
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

/** How long readOnce waits, by default, for a stream that stopped answering before it fails. */
const READ_UNREACHABLE_MS = 30_000;

const readRestarts = counter(
  'mfa_stream_read_restarts_total',
  'One-off reads of a stream (rebuilds, listings) whose ordered consumer was made again from the last message read, after its server went silent',
  ['stream'],
);

/**
 * A one-off read of a stream (readOnce) that heard nothing from the stream for longer than its
 * bound, however often its consumer was made again: it stopped part-way, after `afterSeq`.
 * isTransientDependencyError counts it as an outage: the caller tries again later.
 */
export class StreamUnreachableError extends Error {
  override readonly name = 'StreamUnreachableError';

  constructor(
    readonly stream: string,
    readonly filter: string,
    readonly afterSeq: number,
    waitedMs: number,
    options?: { cause?: unknown },
  ) {
    super(`reading ${filter} on ${stream}: no server answered for ${Math.round(waitedMs / 1000)} s (read up to sequence ${afterSeq})`, options);
  }
}

export type ReadFrom = { policy: 'all' } | { policy: 'last_per_subject' } | { policy: 'since'; time: Date };

export interface ReadOnceOptions {
  /** Leaves bodies on the server when the subjects are all that is needed. */
  headersOnly?: boolean;
  /** How long nothing may be heard from the stream (while its consumer is made again) before the read fails; 30 s unless told. */
  unreachableMs?: number;
  /** Where a consumer made again is logged. */
  log?: Logger;
}

/**
 * Reads the messages of `filter` that are in `stream` now, through an ordered consumer, and stops:
 * for one-off passes over the log such as a rebuild. `deliver` chooses where to start (every
 * message, the last one of each subject, or from a time); `headersOnly` leaves bodies on the
 * server when the subjects are all that is needed. `onMessage` is awaited before the next message
 * is asked for; what it throws ends the read and is thrown. Resolves with the number of messages
 * read, once the consumer says none is left (messages published meanwhile may be read too); a
 * stream that does not exist yet holds none.
 *
 * As a follower does, the read watches the server of its consumer: after FOLLOW_SILENCE_MS without
 * a message or a heartbeat (the server died or is cut off; not while `onMessage` runs) it makes a
 * new consumer, which the cluster places on a live server, and goes on after the last message
 * handed over: none twice, none skipped. From the last message of each subject, the new consumer
 * asks for the last message of each subject again and those already handed over are skipped: a
 * subject whose last message changed meanwhile is then read with its newer one only (a caller
 * that collects by subject keeps the newer). When no message or heartbeat has come for
 * `unreachableMs` (30 s), however often its consumer was made again meanwhile, the read fails with
 * StreamUnreachableError.
 */
export async function readOnce(
  js: JetStreamClient,
  stream: string,
  filter: string,
  deliver: ReadFrom,
  onMessage: (msg: JsMsg) => void | Promise<void>,
  options: ReadOnceOptions = {},
): Promise<number> {
  return new OnceReader(js, stream, filter, deliver, onMessage, options).run(js);
}

/** One readOnce: the ordered consumer of the moment, made again on a live server whenever its own goes silent. */
class OnceReader extends ResumableConsumer {
  private read = 0;
  /** onMessage runs: the server owes no heartbeat meanwhile (the next pull waits for it). */
  private busy = false;
  /** Messages the consumer of the moment had to deliver at its start. */
  private remaining = 0;
  /** Making the consumer again; left rejected when the stream stayed unreachable. */
  private recovering: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly unreachableMs: number;

  constructor(
    js: JetStreamClient,
    stream: string,
    filter: string,
    private readonly deliver: ReadFrom,
    private readonly onMessage: (msg: JsMsg) => void | Promise<void>,
    private readonly options: ReadOnceOptions,
  ) {
    super(js, stream, filter);
    this.log = options.log ?? (fallbackLog ??= createLogger('messaging'));
    this.unreachableMs = options.unreachableMs ?? READ_UNREACHABLE_MS;
  }

  protected start(resume: boolean): Partial<OrderedConsumerOptions> {
    const headers = this.options.headersOnly ? { headers_only: true } : {};
    // Made again, a consumer from a start sequence would hand over messages that were not the last
    // of their subject when the read began: the server finds the last ones again, and accept()
    // skips those handed over already (they come in stream order).
    if (this.deliver.policy === 'last_per_subject') return { deliver_policy: DeliverPolicy.LastPerSubject, ...headers };
    if (resume) return { opt_start_seq: this.lastSeq + 1, ...headers };
    if (this.deliver.policy === 'since') return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: this.deliver.time.toISOString(), ...headers };
    return headers;
  }

  /**
   * Not close(): an iterator closes once it reaches the stop in its queue, which one left (a return
   * from the loop, a dropped consumer's messages still buffered) never does.
   */
  protected override async stopMessages(messages: ConsumerMessages): Promise<void> {
    messages.stop();
  }

  /** Iterated, not a callback: the next pull is sent once onMessage has taken what came before. */
  protected consume(consumer: Consumer): Promise<ConsumerMessages> {
    return consumer.consume({ expires: FOLLOW_EXPIRES_MS });
  }

  async run(js: JetStreamClient): Promise<number> {
    try {
      this.remaining = await this.open(js);
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return 0;
      throw error;
    }
    const watchdog = setInterval(() => this.check(), FOLLOW_EXPIRES_MS / 4);
    watchdog.unref();
    try {
      while (this.remaining > 0) {
        const generation = this.generation;
        const messages = this.messages!;
        try {
          for await (const msg of messages) {
            // Still buffered from a consumer dropped meanwhile.
            if (generation !== this.generation) break;
            if (this.accept(generation, msg)) {
              this.busy = true;
              await this.onMessage(msg);
              this.busy = false;
              this.lastHeard = this.lastProgress = Date.now();
              this.read++;
            }
            if (msg.info.pending === 0) return this.read;
          }
        } catch (error) {
          if (this.busy) throw error;
          // The consumer failed (nats.js gave up on it): made again below.
        }
        // The consumer stopped: the watchdog is making it again, or did, or nats.js gave up on it.
        if (this.recovering) await this.recovering;
        else if (generation === this.generation) {
          // A consumer that fails as soon as it is made (a pull the server refuses) is not made
          // again in a tight loop.
          await new Promise((r) => setTimeout(r, FOLLOW_RETRY_MS));
          if (this.recovering) await this.recovering;
          else if (generation === this.generation) await this.recover();
        }
      }
      return this.read;
    } finally {
      clearInterval(watchdog);
      this.done = true;
      await this.drop();
    }
  }

  /**
   * Every quarter of a pull: a consumer whose server fell silent is made again, and a read that
   * heard nothing past its bound fails (consumers that are made but never deliver, whoever made
   * them again, do not keep it going).
   */
  private check(): void {
    if (this.done || this.busy || this.recovering || !(this.silent() || this.unreachable())) return;
    // The run loop awaits the same promise (its messages end with the consumer dropped).
    void this.recover().catch(() => undefined);
  }

  private unreachable(): boolean {
    return Date.now() - this.lastProgress >= this.unreachableMs;
  }

  private recover(): Promise<void> {
    this.recovering ??= this.restart();
    return this.recovering;
  }

  private async restart(): Promise<void> {
    if (!this.unreachable()) this.log.warn('no heartbeat from the server of a stream read: making its consumer again', { stream: this.stream, filter: this.filter, afterSeq: this.lastSeq });
    // From the last message or heartbeat, not from the last consumer made: one made again that
    // never delivers does not start the bound over.
    const since = this.lastProgress;
    await this.drop();
    let failure: unknown;
    for (;;) {
      if (this.nc.isClosed() || this.unreachable()) {
        throw new StreamUnreachableError(this.stream, this.filter, this.lastSeq, Date.now() - since, { cause: this.nc.isClosed() ? new Error('the NATS connection is closed') : failure });
      }
      try {
        this.remaining = await this.open(this.api);
        readRestarts.inc({ stream: this.stream });
        this.log.warn('stream read going on', { stream: this.stream, filter: this.filter, afterSeq: this.lastSeq });
        this.recovering = undefined;
        return;
      } catch (error) {
        failure = error;
        await new Promise((r) => setTimeout(r, FOLLOW_RETRY_MS));
      }
    }
  }
}
