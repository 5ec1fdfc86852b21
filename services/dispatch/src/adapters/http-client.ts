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
): Promise<{ status: number; text: string }> {
  const transport = url.protocol === 'https:' ? https : http;
  const agent = url.protocol === 'https:' ? agents['https:'] : agents['http:'];
  return new Promise((resolve, reject) => {
    const req = transport.request(
      url,
      { method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(body) } },
      (res) => {
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
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    const deadline = setTimeout(() => req.destroy(new HttpTimeoutError(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (error) => {
      clearTimeout(deadline);
      reject(error);
    });
    req.end(body);
  });
}
