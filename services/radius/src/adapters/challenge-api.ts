import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import {
  ERROR_CODES,
  Headers,
  Subjects,
  type ChallengeStartRequest,
  type ChallengeStartReply,
  type ChallengeStatusReply,
  type ChallengeVerifyReply,
  type ErrorCode,
} from '@mfa/contracts';
import { requestSentAgainWithoutResponders } from '@mfa/messaging';
import type { RadiusClient } from '../domain/clients.js';

/** A reply of the challenge API: the answer, a contract error, or nothing (no responder, timeout, not JSON). */
export type ApiResult<T> = { ok: T } | { error: ErrorCode; message: string; retryAfterSeconds?: number } | { unreachable: string };

/** How long one request may take: the IdPs' budget (docs/api.md, "Deadlines"). */
const REQUEST_MS = 5_000;
/**
 * How much longer than its deadline a reply is waited for. auth-challenge takes up no decision with
 * less than 250 ms left, stops retrying its event 100 ms before the deadline and sends no reply
 * after it; but a busy event loop here runs an expired timer before it reads the socket, so a
 * reply that arrived in time could be thrown away: the sign-in decided (approved and reported)
 * while the NAS heard nothing, and its retransmission got the same silence from the duplicate
 * cache. The grace lets in a reply sent before the deadline that this loop has not read yet.
 */
const REPLY_GRACE_MS = 1_000;
/** auth-challenge takes up no decision with less than this left before the deadline (docs/api.md). */
const DECISION_FLOOR_MS = 250;

/**
 * The public challenge API over NATS, called as the RADIUS client's tenant: with the client's own
 * API key, or the platform key acting for that tenant (the tenant id always comes from the
 * client's entry, never from the packet). Every request carries Mfa-Deadline, so a service that
 * takes it up too late drops it untouched.
 */
export class ChallengeApi {
  constructor(
    private readonly nc: NatsConnection,
    private readonly platformKey: string | undefined,
    /** The deadline each request carries and the grace its reply has after it (tests shorten them). */
    private readonly timing: { requestMs: number; replyGraceMs: number } = { requestMs: REQUEST_MS, replyGraceMs: REPLY_GRACE_MS },
  ) {}

  start(client: RadiusClient, body: ChallengeStartRequest): Promise<ApiResult<ChallengeStartReply & { sentTo?: string }>> {
    return this.call(client, Subjects.challengeStart, body);
  }

  verify(client: RadiusClient, challengeId: string, code: string): Promise<ApiResult<ChallengeVerifyReply>> {
    return this.call(client, Subjects.challengeVerify, { tenantId: client.tenantId, challengeId, code });
  }

  /** `until` (Unix ms): the caller's own end of waiting, when it comes before the usual deadline. */
  status(client: RadiusClient, challengeId: string, until?: number): Promise<ApiResult<ChallengeStatusReply>> {
    return this.call(client, Subjects.challengeStatus, { tenantId: client.tenantId, challengeId }, until);
  }

  /** The longest one request can take: its deadline and the grace of its reply. */
  get longestCallMs(): number {
    return this.timing.requestMs + this.timing.replyGraceMs;
  }

  /** How long after its deadline a reply is still taken. */
  get replyGraceMs(): number {
    return this.timing.replyGraceMs;
  }

  private async call<T>(client: RadiusClient, subject: string, body: unknown, until = Infinity): Promise<ApiResult<T>> {
    const h = natsHeaders();
    const key = client.apiKey ?? this.platformKey;
    if (key) h.set('Authorization', `Bearer ${key}`);
    const { requestMs, replyGraceMs } = this.timing;
    const now = Date.now();
    const deadline = Math.min(now + requestMs, until);
    h.set(Headers.deadline, String(deadline));
    let reply: unknown;
    try {
      // Sent again while nobody subscribes (auth-challenge reconnecting after a NATS node died),
      // until auth-challenge would no longer decide it (250 ms before the deadline).
      const msg = await requestSentAgainWithoutResponders(this.nc, subject, JSON.stringify(body), {
        timeout: Math.max(1, deadline - now + replyGraceMs),
        headers: h,
        retryMs: Math.max(0, deadline - now - DECISION_FLOOR_MS),
      });
      reply = msg.json();
    } catch (error) {
      return { unreachable: (error as Error).message };
    }
    if (typeof reply !== 'object' || reply === null) return { unreachable: 'the reply is not a JSON object' };
    const failure = (reply as { error?: unknown }).error;
    if (typeof failure === 'object' && failure !== null) {
      const { code, message, retryAfterSeconds } = failure as { code?: unknown; message?: unknown; retryAfterSeconds?: unknown };
      const known = (ERROR_CODES as readonly unknown[]).includes(code) ? (code as ErrorCode) : 'internal';
      return {
        error: known,
        message: typeof message === 'string' ? message : '',
        ...(typeof retryAfterSeconds === 'number' ? { retryAfterSeconds } : {}),
      };
    }
    return { ok: reply as T };
  }
}
