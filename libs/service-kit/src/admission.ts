import type { IncomingMessage, ServerResponse } from 'node:http';
import { counter, gauge } from '@mfa/telemetry';
import { RequestGate } from './nats/request-gate.js';

/**
 * Admission of a process's requests under overload (issue 18; MISSION.md part 3, "Deadlines"):
 * one RequestGate per process, whose slots the NATS requests (NatsTransport) and the gated HTTP
 * routes (auth-challenge's device API) share. A request takes a few milliseconds of CPU and waits
 * on Redis and JetStream; 256 at once keep two cores busy, and past that more concurrency only
 * makes every request slower (an overloaded event loop answers all of them late). Sharing the
 * slots is what lets the requests that finish a sign-in (a verify, a status poll, a phone's
 * answer to a push) be served before new sign-ins, whichever door they came in by.
 */
export const REQUEST_CONCURRENCY = 256;
/** Waiting requests kept at most: more than an IdP's 5 s could see served at this process's rate. */
export const MAX_WAITING = 20_000;
/** Bytes of request bodies waiting at most (64 MiB): about 300,000 sign-in requests, or 64 imports. */
const MAX_WAITING_BYTES = 64 * 1024 * 1024;
/** What a waiting HTTP request holds beyond its body (its request, response and socket objects), roughly. */
const WAITING_REQUEST_OVERHEAD_BYTES = 2048;
/** The oldest waiting this long: the newest are served first (they have the most time left). */
const LIFO_AFTER_MS = 100;
/** Less time left than this when its turn comes: dropped, it could not be answered in time. */
const MIN_TIME_LEFT_MS = 100;

/** Requests dropped unanswered, by NATS subject or HTTP route, and why. */
export const droppedRequests = counter('mfa_requests_dropped_total', 'Requests dropped before any work was done for them, by subject or route and reason: unanswered, or answered unavailable (503 over HTTP) when their caller still waited', ['subject', 'reason']);
const waitingGauge = gauge('mfa_requests_waiting', 'Requests waiting for their turn (RequestGate): above 0 only when the process is saturated');

let shared: RequestGate | undefined;

/** The process's gate (created on first use). */
export function processRequestGate(): RequestGate {
  if (!shared) {
    const gate = new RequestGate({ limit: REQUEST_CONCURRENCY, maxWaiting: MAX_WAITING, maxWaitingBytes: MAX_WAITING_BYTES, lifoAfterMs: LIFO_AFTER_MS, minTimeLeftMs: MIN_TIME_LEFT_MS });
    Object.assign(waitingGauge, { collect: () => waitingGauge.set(gate.waiting) });
    shared = gate;
  }
  return shared;
}

export interface HttpAdmissionOptions {
  /** The route's name in `mfa_requests_dropped_total{subject}`. */
  route: string;
  /**
   * Served before waiting requests without it (requests that finish a sign-in already started):
   * all of the route's requests, or those the function picks.
   */
  first?: boolean | ((req: IncomingMessage) => boolean);
  /**
   * How long a request may wait for its turn, from its arrival: HTTP carries no deadline, so this
   * stands for the client's timeout. One that waited this long is answered 503 `unavailable` with
   * Retry-After instead of being served after its client has likely given up.
   */
  waitMs: number;
}

/**
 * Express (and Nest) middleware that takes a slot of the process's gate for each request, until
 * its response is sent or its connection closes. A request whose client went away while it
 * waited is dropped untouched; one that waited `waitMs` is answered 503 without being handled.
 */
export function admitHttpRequests(options: HttpAdmissionOptions): (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void {
  const gate = processRequestGate();
  const firstOf = typeof options.first === 'function' ? options.first : () => options.first === true;
  const refuse = (res: ServerResponse) => {
    if (res.headersSent || res.destroyed) return;
    const body = JSON.stringify({ error: { code: 'unavailable', message: 'the service is saturated; try again in a moment' } });
    res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'retry-after': '1' });
    res.end(body);
  };
  return (req, res, next) => {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      gate.exit();
    };
    if (gate.tryEnter()) {
      res.once('finish', release);
      res.once('close', release);
      next();
      return;
    }
    // Waiting. The gate drops what waited too long only when its queue moves; the client is told
    // at its wait's end even if nothing moves (every slot held by slow requests).
    let refused = false;
    const timer = setTimeout(() => {
      refused = true;
      droppedRequests.inc({ subject: options.route, reason: 'deadline_waiting' });
      refuse(res);
    }, options.waitMs);
    gate.enqueue({
      deadline: Date.now() + options.waitMs,
      first: firstOf(req),
      // What the waiting request holds (its body, read already, and its own objects): counted
      // against the waiting bytes' cap, as a NATS request's body is.
      bytes: (Number(req.headers['content-length']) || 0) + WAITING_REQUEST_OVERHEAD_BYTES,
      run: () => {
        clearTimeout(timer);
        if (refused || req.socket.destroyed) {
          // Answered already, or nobody left to answer: no work. The slot is given back after this
          // turn: exit() starts the next waiting request, and a queue of such requests must not
          // become a recursion as deep as the queue.
          if (!refused) droppedRequests.inc({ subject: options.route, reason: 'client_gone' });
          queueMicrotask(release);
          return;
        }
        res.once('finish', release);
        res.once('close', release);
        next();
      },
      drop: (reason) => {
        clearTimeout(timer);
        if (refused) return;
        droppedRequests.inc({ subject: options.route, reason: reason === 'deadline' ? 'deadline_waiting' : 'overload' });
        refuse(res);
      },
    });
  };
}
