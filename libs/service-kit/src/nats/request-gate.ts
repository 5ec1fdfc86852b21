/**
 * Admission of requests under overload (issue 18; MISSION.md part 3, "Deadlines"). At most
 * `limit` requests of a process are handled at once; the others wait here, not half-done in the
 * event loop. A waiting request whose deadline has come is dropped untouched when its turn
 * comes: nobody waits for its answer, so no work is done for it.
 *
 * The order is first come, first served while the queue moves; once the oldest waiting request
 * has waited `lifoAfterMs`, the newest is served first (adaptive LIFO): under a sustained
 * overload, first come first served would have every request wait about as long as the queue is
 * deep, until all of them miss their deadline, while the newest still have most of their time
 * left. A burst that clears quickly keeps its order.
 *
 * Requests marked `first` (auth-challenge: the verify and status that finish a sign-in already
 * started) wait in a queue of their own that is served before the others: under overload the
 * requests that are dropped are the new sign-ins, before any work was done for them, not the
 * second half of sign-ins whose first half has been paid for and whose user holds a code.
 */
export interface GatedRequest {
  /** When the caller stops waiting (ms since the epoch), if it said. */
  deadline: number | undefined;
  /** Starts handling the request; the caller calls exit() once it is answered. */
  run: () => void;
  /** Called instead of `run` when the request is dropped. */
  drop: (reason: 'deadline' | 'overload') => void;
  /** Served before every waiting request without it. */
  first?: boolean;
  /** What it holds in memory while it waits (its body), counted against `maxWaitingBytes`. */
  bytes?: number;
}

interface Waiting {
  request: GatedRequest;
  since: number;
}

export interface RequestGateOptions {
  /** Requests handled at once. */
  limit: number;
  /** Waiting requests kept at most; past it the oldest is dropped (it has the least time left). */
  maxWaiting: number;
  /**
   * Bytes the waiting requests may hold at most (their bodies); a request that would go past it
   * is dropped on arrival: a count alone would let large bodies fill the process's memory.
   */
  maxWaitingBytes?: number;
  /** How long the oldest may wait before the newest are served first. */
  lifoAfterMs: number;
  /** A request with less time left than this when its turn comes is dropped: it could not be answered in time. */
  minTimeLeftMs: number;
  now?: () => number;
}

/** Waiting requests, oldest first, in `items[head..]` (an array with a moving head: no O(n) shift). */
class WaitQueue {
  private items: Waiting[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: Waiting): void {
    this.items.push(item);
  }

  peekOldest(): Waiting | undefined {
    return this.items[this.head];
  }

  take(which: 'oldest' | 'newest'): Waiting | undefined {
    if (this.length === 0) return undefined;
    const item = which === 'oldest' ? this.items[this.head++] : this.items.pop();
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

export class RequestGate {
  private running = 0;
  /** Requests marked `first`, served before `others`. */
  private readonly firsts = new WaitQueue();
  private readonly others = new WaitQueue();
  private readonly now: () => number;
  private readonly idlers: Array<() => void> = [];
  private waitingBytes = 0;

  constructor(private readonly options: RequestGateOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Requests being handled. */
  get active(): number {
    return this.running;
  }

  /** Requests waiting for their turn. */
  get waiting(): number {
    return this.firsts.length + this.others.length;
  }

  /**
   * The common case, with nothing allocated: a slot is free and nobody waits, so the caller may
   * start at once (and must call exit() when done). False: enqueue() the request instead.
   */
  tryEnter(): boolean {
    if (this.running >= this.options.limit || this.waiting > 0) return false;
    this.running++;
    return true;
  }

  /** A request started by tryEnter() or run() from the queue is answered (or failed): the next may start. */
  exit(): void {
    this.running--;
    if (this.waiting > 0 || this.idlers.length > 0) this.pump();
  }

  /** A request that found no free slot: it waits its turn (or is dropped). */
  enqueue(request: GatedRequest): void {
    const bytes = request.bytes ?? 0;
    if (this.options.maxWaitingBytes !== undefined && bytes > 0 && this.waitingBytes + bytes > this.options.maxWaitingBytes) {
      request.drop('overload');
      return;
    }
    this.waitingBytes += bytes;
    (request.first ? this.firsts : this.others).push({ request, since: this.now() });
    if (this.waiting > this.options.maxWaiting) {
      // The oldest of those served last: it has the least time left of the least urgent.
      this.leave(this.others.take('oldest') ?? this.firsts.take('oldest'))!.request.drop('overload');
    }
    this.pump();
  }

  /** Bytes held by the requests waiting (see `maxWaitingBytes`). */
  get bytesWaiting(): number {
    return this.waitingBytes;
  }

  /** A request leaves the queue (to run or to be dropped): its bytes no longer wait. */
  private leave(item: Waiting | undefined): Waiting | undefined {
    if (item) this.waitingBytes -= item.request.bytes ?? 0;
    return item;
  }

  /** tryEnter(), else enqueue(). */
  admit(request: GatedRequest): void {
    if (this.tryEnter()) this.run(request);
    else this.enqueue(request);
  }

  private run(request: GatedRequest): void {
    try {
      request.run();
    } catch {
      this.exit();
    }
  }

  private start(request: GatedRequest): void {
    this.running++;
    this.run(request);
  }

  /** Resolves once nothing runs or waits (the transport's close()). */
  idle(): Promise<void> {
    if (this.running === 0 && this.waiting === 0) return Promise.resolve();
    return new Promise((resolve) => this.idlers.push(resolve));
  }

  private pump(): void {
    while (this.running < this.options.limit && this.waiting > 0) {
      const queue = this.firsts.length > 0 ? this.firsts : this.others;
      const now = this.now();
      // Requests whose time has run out leave from the head: they are dropped, never started.
      const oldest = queue.peekOldest()!;
      if (oldest.request.deadline !== undefined && oldest.request.deadline - now < this.options.minTimeLeftMs) {
        this.leave(queue.take('oldest'))!.request.drop('deadline');
        continue;
      }
      const next = this.leave(now - oldest.since >= this.options.lifoAfterMs ? queue.take('newest') : queue.take('oldest'))!;
      const { deadline } = next.request;
      if (deadline !== undefined && deadline - now < this.options.minTimeLeftMs) {
        next.request.drop('deadline');
        continue;
      }
      this.start(next.request);
    }
    if (this.running === 0 && this.waiting === 0) this.idlers.splice(0).forEach((resolve) => resolve());
  }
}
