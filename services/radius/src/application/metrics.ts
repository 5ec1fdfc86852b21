import { counter, gauge, histogram } from '@mfa/telemetry';

/** Requests that passed the client and Message-Authenticator checks, by client and packet type. */
export const requests = counter('mfa_radius_requests_total', 'RADIUS requests taken (known client, valid Message-Authenticator)', ['client', 'type']);
/** Answers sent, by client and kind (accept, reject, challenge). */
export const answers = counter('mfa_radius_answers_total', 'RADIUS answers', ['client', 'answer']);
/** Datagrams that got no answer, by reason (unknown_client, malformed, missing/bad Message-Authenticator, …). */
export const drops = counter('mfa_radius_drops_total', 'RADIUS datagrams dropped without an answer', ['reason']);

/**
 * Adds the datagrams the kernel dropped for the socket (its receive buffer full) to `drops`, as
 * `receive_buffer_full`, at each scrape: `read` gives the socket's count since it was opened.
 */
export function countKernelDrops(read: () => Promise<number | undefined>): void {
  let counted = 0;
  drops.inc({ reason: 'receive_buffer_full' }, 0);
  Object.assign(drops, {
    collect: async () => {
      const now = await read();
      if (now === undefined || now <= counted) return;
      drops.inc({ reason: 'receive_buffer_full' }, now - counted);
      counted = now;
    },
  });
}
export const retransmissions = counter('mfa_radius_retransmissions_total', 'Retransmitted requests answered from the duplicate cache', ['client']);
/** From the datagram's arrival to its answer (push and calls included: up to RADIUS_WAIT_SECONDS). */
export const latency = histogram('mfa_radius_request_duration_seconds', 'Time to answer a RADIUS request', ['answer'], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60]);
export const waiting = gauge('mfa_radius_waiting', 'Requests waiting for a push or a call to be answered');
