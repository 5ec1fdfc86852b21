import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import { HASH_SLOTS, slotOutboxKey } from '@mfa/projection';
import { LOGGER, REDIS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';

/**
 * What the scripts keep in the outbox of the user's hash slot for each decision (see KEEP in
 * scripts.ts): the request's context, as auth-challenge passed it, and the script's reply. The
 * event of the decision is a pure function of this record (ChallengeService.eventOfRecord), so the
 * instance that took the decision and the relay build the same event, with the same id.
 */
export interface DecisionRecord {
  c: DecisionContext;
  r: string[];
}

export type DecisionContext = StartDecisionContext | VerifyDecisionContext | ResendDecisionContext;

export interface StartDecisionContext {
  k: 'start';
  /** tenant, user, challenge id, now (ms), expiresAt (ms), max attempts, server (the RADIUS client's for a RADIUS sign-in). */
  t: string;
  u: string;
  id: string;
  n: number;
  e: number;
  m: number;
  s: { name: string; ip: string };
  ip?: string;
  app?: string;
  rq?: string;
  /** The SMS code sealed for dispatch (only when the challenge may become an SMS one). */
  code?: string;
  /** Personal data the tenant leaves out of reports (`reportFields`): 'd' display name, 'e' e-mail. */
  om?: string;
  /** The tenant's voice settings at start, when voice is enabled: caller ID, PIN mode (1/0), fraud code ('' = alerts off). */
  vo?: [string, number, string];
  /** 'radius': started by the RADIUS front (context.radius); absent for the NATS API. */
  v?: 'radius';
}

export interface VerifyDecisionContext {
  k: 'verify';
  t: string;
  id: string;
  n: number;
  s: { name: string; ip: string };
  /** TOTP: the time step of the matching code. */
  st?: number;
  /** Push: the device whose signed answer this is (its device id). */
  dv?: string;
}

/** challenge.resend: tenant, challenge id, now (ms), server. */
export interface ResendDecisionContext {
  k: 'resend';
  t: string;
  id: string;
  n: number;
  s: { name: string; ip: string };
}

/**
 * The name of a decision in the outbox, as the scripts write it: "<challengeId>:<decision>", and
 * for a rejected code ":<attempt>", for a resend ":<its number>" (a challenge has several).
 */
export function decisionName(challengeId: string, decision: string, attempt?: number | string): string {
  return decision === 'rejected' || decision === 'resent' ? `${challengeId}:${decision}:${attempt}` : `${challengeId}:${decision}`;
}

/** The name of the decision a script reply records (the attempt of a rejection, the number of a resend: its 4th field). */
export const decisionNameOfReply = (challengeId: string, reply: readonly string[]): string => decisionName(challengeId, reply[0] ?? '', reply[3]);

export function parseDecisionRecord(raw: string): DecisionRecord | undefined {
  try {
    const record = JSON.parse(raw) as DecisionRecord;
    const c = record?.c;
    if (!c || (c.k !== 'start' && c.k !== 'verify' && c.k !== 'resend') || typeof c.t !== 'string' || typeof c.id !== 'string' || typeof c.n !== 'number') return undefined;
    if (!Array.isArray(record.r) || !record.r.every((v) => typeof v === 'string')) return undefined;
    return record;
  } catch {
    return undefined;
  }
}

/** Acknowledged decisions removed at once: one pipeline instead of one write per request. */
const DONE_BATCH = 256;
const DONE_EVERY_MS = 20;
/**
 * Slot outboxes looked at per round trip by a full pass: small, so that the requests' own scripts
 * interleave with the pass instead of waiting behind thousands of commands.
 */
const SCAN_BATCH = 64;

/**
 * The slot outboxes in Redis. A decision whose event JetStream acknowledged is removed (batched,
 * off the request's path); whatever stays is found by `pending` (every slot's outbox, a fixed
 * 16,384 keys however many users there are) and published by the relay.
 */
@Injectable()
export class Outbox implements OnApplicationShutdown {
  private done: Array<[string, string]> = [];
  private timer: NodeJS.Timeout | undefined;
  /** Decisions this instance answered without their event stored: the relay tries them first. */
  readonly deferred = new Map<string, { key: string; name: string }>();

  constructor(
    @Inject(REDIS) private readonly redis: RedisClient,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** The event of this decision is stored: its outbox entry (in the outbox of hash slot `slot`) can go. */
  remove(slot: number, name: string): void {
    this.done.push([slotOutboxKey(slot), name]);
    if (this.done.length >= DONE_BATCH) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), DONE_EVERY_MS);
  }

  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.done;
    this.done = [];
    if (batch.length === 0) return;
    const byKey = new Map<string, string[]>();
    for (const [key, name] of batch) byKey.set(key, [...(byKey.get(key) ?? []), name]);
    // One HDEL per slot's outbox, all sent in one write per Redis node by auto-pipelining (the
    // outboxes of a batch are in many slots: no explicit pipeline, which a cluster confines to one).
    // Left behind if Redis does not answer: the relay publishes them again, which JetStream
    // de-duplicates within its window and the consumers by event id after it.
    await Promise.all([...byKey].map(([key, names]) => this.redis.hdel(key, ...names))).catch((error: unknown) =>
      this.log.warn('removing acknowledged decisions from the outbox failed; the relay will', { error }),
    );
  }

  /** This instance answered a decision whose event is not stored yet. */
  defer(slot: number, name: string): void {
    const key = slotOutboxKey(slot);
    this.deferred.set(`${key} ${name}`, { key, name });
  }

  /** One entry, or undefined once it is gone (published and removed by another instance). */
  async read(key: string, name: string): Promise<string | undefined> {
    return (await this.redis.hget(key, name)) ?? undefined;
  }

  /** Removes one entry now (the relay, after publishing it). */
  async removeNow(key: string, name: string): Promise<void> {
    await this.redis.hdel(key, name);
  }

  /** Every entry of every slot's outbox, slot by slot. */
  async *pending(): AsyncGenerator<{ key: string; name: string; raw: string }> {
    for (let first = 0; first < HASH_SLOTS; first += SCAN_BATCH) {
      const keys = Array.from({ length: Math.min(SCAN_BATCH, HASH_SLOTS - first) }, (_, i) => slotOutboxKey(first + i));
      // One HLEN per slot's outbox, in one write per Redis node (auto-pipelining; see flush).
      const lengths = await Promise.all(keys.map((key) => this.redis.hlen(key)));
      for (let i = 0; i < keys.length; i++) {
        if (lengths[i] === 0) continue;
        const entries = await this.redis.hgetall(keys[i]!);
        for (const [name, raw] of Object.entries(entries)) yield { key: keys[i]!, name, raw };
      }
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await this.flush();
  }
}
