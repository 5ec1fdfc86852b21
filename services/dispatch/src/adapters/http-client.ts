import http from 'node:http';
import https from 'node:https';
import { MAX_SEND_CONCURRENCY } from '../config.js';

/**
 * A keep-alive HTTP client for the providers' REST APIs (Twilio, FCM). node:http rather than fetch:
 * per request it costs a fraction of fetch's CPU (no web streams, no per-call dispatcher setup),
 * which is what bounds SMS throughput. Connections are reused across sends.
 */
// Sockets per provider host: as many as sends may be in flight (SMS_CONCURRENCY and
// PUSH_CONCURRENCY bound them), so that a send never queues for a socket behind the others.
const agents = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: MAX_SEND_CONCURRENCY, maxFreeSockets: 256 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: MAX_SEND_CONCURRENCY, maxFreeSockets: 256 }),
};

class HttpTimeoutError extends Error {
  override name = 'TimeoutError';
}

/** Errors of requests that had been handed to the network whole before they failed (requestLeftWhole). */
const leftWhole = new WeakSet<object>();

/**
 * Whether a request postBody rejected with `error` had left whole (headers and body handed to the
 * OS) before it failed: the server may have acted on it, so sending it again may do it twice. A
 * request refused at connect, or cut before its last byte, did not (a server acts on no half a
 * request).
 */
export function requestLeftWhole(error: unknown): boolean {
  return typeof error === 'object' && error !== null && leftWhole.has(error);
}

/**
 * POSTs a body (a form, JSON) and reads the answer, all within `timeoutMs` in total: connecting, sending, waiting
 * and reading (a socket idle timeout alone would let a provider that trickles bytes hold the
 * message past the consumer's ack wait, and JetStream would hand it to another instance to send
 * again).
 */
export function postBody(
  url: URL,
  headers: Record<string, string>,
  body: string,
  timeoutMs: number,
): Promise<{ status: number; text: string; retryAfter?: string | undefined }> {
  const transport = url.protocol === 'https:' ? https : http;
  const agent = url.protocol === 'https:' ? agents['https:'] : agents['http:'];
  return new Promise((resolve, reject) => {
    let sent = false;
    let answered = false;
    const fail = (error: Error) => {
      clearTimeout(deadline);
      // A kept-alive socket the server had closed as we wrote on it: reset before any answer began.
      // The server never read the request (Node documents this race: req.reusedSocket), so it is
      // safe to send again; any other error after the last byte left may follow a request acted on.
      const staleSocket = req.reusedSocket && !answered && (error as NodeJS.ErrnoException).code === 'ECONNRESET';
      if (sent && !staleSocket) leftWhole.add(error);
      reject(error);
    };
    const req = transport.request(
      url,
      { method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(body) } },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          // A provider answer is small; refuse to buffer an unbounded one.
          if (size > 1_000_000) req.destroy(new Error('response larger than 1 MB'));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          clearTimeout(deadline);
          const retryAfter = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ...(retryAfter ? { retryAfter } : {}) });
        });
        res.on('error', fail);
      },
    );
    const deadline = setTimeout(() => req.destroy(new HttpTimeoutError(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
    // The last byte went to the OS: from here on the server may act on the request.
    req.on('finish', () => (sent = true));
    req.on('error', fail);
    req.end(body);
  });
}

/** The most of a Retry-After taken into account: longer than any code lives. */
const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * A Retry-After header (RFC 9110: delay-seconds, or an HTTP-date) as milliseconds from `now`;
 * undefined when absent or unreadable (the usual back-off applies).
 */
export function retryAfterMs(header: string | undefined, now: number): number | undefined {
  if (header === undefined) return undefined;
  const value = header.trim();
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), MAX_RETRY_AFTER_MS) : undefined;
}
