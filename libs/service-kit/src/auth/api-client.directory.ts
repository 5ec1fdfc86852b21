import { Inject, Injectable, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { ConsumerMessages } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, type Scope } from '@mfa/contracts';
import { isIssuedClientId } from '@mfa/crypto';
import { followSubjects, type NatsClients } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import { LookupBudget } from '../lookup-budget.js';
import { JetStreamTopology } from '../messaging.module.js';
import { LOGGER, NATS } from '../tokens.js';
import { AUTH_OPTIONS, type AuthOptions } from './auth.options.js';

/** The streams the auth module uses in every service that imports it. */
const AUTH_STREAMS = [Streams.userSettings, Streams.state, Streams.audit];

const lookups = counter('mfa_api_client_lookups_total', 'Event-log lookups of API client ids not (yet) in memory', ['outcome']);

/** An API client as every service holds it in memory. */
export interface ApiClientRecord {
  clientId: string;
  tenantId: string;
  name: string;
  scopes: readonly Scope[];
  scopeSet: ReadonlySet<Scope>;
  keyHash: Buffer;
  createdAt: string;
  revokedAt?: string;
  /** Stream sequence of the client's last event. */
  seq: number;
}

/** How long a caller waits for an event it knows of to reach this instance's memory. */
const CATCH_UP_MS = 1_000;
/** Lookups of unknown client ids per second (a flood of made-up ids costs at most this many gets). */
const LOOKUPS_PER_SECOND = 20;

/**
 * The API clients of every tenant, in each instance's memory, kept from the client events
 * (MFA_USER_SETTINGS, `mfa.evt.client.>`) by an ordered consumer: checking a key costs no round
 * trip, and a revocation reaches every instance as fast as JetStream delivers (milliseconds).
 * A key whose client is not known yet (created a moment ago on another instance) is looked up
 * once in the log, within a small budget, and waited for.
 *
 * Last use is kept in memory and written at most every MFA_CLIENT_USAGE_FLUSH_SECONDS per client to MFA_STATE
 * (`mfa.state.client-used.<id>`, one message per subject), never per request.
 */
@Injectable()
export class ApiClientDirectory implements OnModuleInit, OnApplicationShutdown {
  private readonly clients = new Map<string, ApiClientRecord>();
  private messages: ConsumerMessages | undefined;
  private processedSeq = 0;
  private readonly waiters = new Set<{ seq: number; resolve: () => void }>();
  private readonly used = new Map<string, number>();
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly lookupBudget = new LookupBudget(LOOKUPS_PER_SECOND);
  /** Told of each client revoked (the Authenticator drops the secret it keeps for it). */
  private readonly revokedListeners: Array<(clientId: string) => void> = [];

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(AUTH_OPTIONS) private readonly options: AuthOptions,
    @Inject(JetStreamTopology) private readonly topology: JetStreamTopology,
  ) {}

  async onModuleInit(): Promise<void> {
    // What this module reads and writes, whichever service it is in and whether or not that
    // service uses these streams itself: the clients, their last use, the audit trail's events.
    await this.topology.ensure(AUTH_STREAMS);
    await this.start();
    this.flushTimer = setInterval(() => void this.flushUsage(), this.options.auth.usageFlushMs ?? 30_000);
    this.flushTimer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.flushTimer);
    await this.flushUsage();
    await this.messages?.close().catch(() => undefined);
  }

  get(clientId: string): ApiClientRecord | undefined {
    return this.clients.get(clientId);
  }

  /** The tenant's clients, revoked ones included, oldest first. */
  list(tenantId: string): ApiClientRecord[] {
    return [...this.clients.values()].filter((c) => c.tenantId === tenantId).sort((a, b) => a.seq - b.seq);
  }

  /** The client if this instance holds it already (no lookup). */
  known(clientId: string): ApiClientRecord | undefined {
    return this.clients.get(clientId);
  }

  /**
   * The client, looking it up in the log when it is not in memory yet (created a moment ago on
   * another instance). Lookups beyond LOOKUPS_PER_SECOND answer undefined without one.
   */
  async find(clientId: string): Promise<ApiClientRecord | undefined> {
    const known = this.clients.get(clientId);
    if (known) return known;
    // An id no key could carry (clients.revoke takes any string) is nobody's: not looked up, so it
    // neither names a wildcard subject (`>`, `*`, dots) nor spends the lookup budget all tenants share.
    if (!isIssuedClientId(clientId)) return undefined;
    if (!this.lookupBudget.take()) {
      lookups.inc({ outcome: 'over_budget' });
      return undefined;
    }
    const last = await this.nats.jsm.streams
      .getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.client(clientId) })
      .catch(() => null);
    lookups.inc({ outcome: last ? 'found' : 'absent' });
    if (!last) return undefined;
    await this.caughtUpTo(last.seq);
    return this.clients.get(clientId);
  }

  /**
   * The stream sequence of the client's last event in the log (0: none, or the log did not answer):
   * with caughtUpTo, waits until this instance holds the client as the log does (another instance's
   * change of it included), which the sequence of its last event held here cannot tell.
   */
  async lastSeqOf(clientId: string): Promise<number> {
    if (!isIssuedClientId(clientId)) return 0;
    const last = await this.nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.client(clientId) }).catch(() => null);
    return last?.seq ?? 0;
  }

  /** Resolves once this instance has folded in the event at `seq` (or after CATCH_UP_MS). */
  caughtUpTo(seq: number): Promise<void> {
    if (this.processedSeq >= seq) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = { seq, resolve: () => resolve() };
      this.waiters.add(waiter);
      setTimeout(() => {
        this.waiters.delete(waiter);
        resolve();
      }, CATCH_UP_MS).unref();
    });
  }

  markUsed(clientId: string, at: number): void {
    this.used.set(clientId, at);
  }

  /** When each client was last used, as written to MFA_STATE by any instance (plus this one's unwritten uses). */
  async lastUsed(clientIds: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    await Promise.all(
      clientIds.map(async (id) => {
        const stored = await this.readUsage(id).catch(() => undefined);
        const local = this.used.get(id);
        const best = Math.max(stored?.at ?? 0, local ?? 0);
        if (best > 0) out.set(id, best);
      }),
    );
    return out;
  }

  private async start(): Promise<void> {
    this.messages = await followSubjects(this.nats.js, Streams.userSettings.name, EventSubjects.allClients, (msg) => {
      try {
        this.apply(parseEvent(msg.json()), msg.seq);
      } catch (error) {
        this.log.error('unreadable API client event skipped', { stream: Streams.userSettings.name, seq: msg.seq, error });
      }
      this.processedSeq = Math.max(this.processedSeq, msg.seq);
      for (const waiter of this.waiters) {
        if (waiter.seq <= this.processedSeq) {
          this.waiters.delete(waiter);
          waiter.resolve();
        }
      }
    });
  }

  private apply(event: ReturnType<typeof parseEvent>, seq: number): void {
    if (event.type === 'ApiClientCreated') {
      const { clientId, name, scopes, keyHash } = event.data;
      this.clients.set(clientId, {
        clientId,
        tenantId: event.tenantId,
        name,
        scopes,
        scopeSet: new Set(scopes),
        keyHash: Buffer.from(keyHash, 'base64url'),
        createdAt: event.occurredAt,
        seq,
      });
    } else if (event.type === 'ApiClientRevoked') {
      const client = this.clients.get(event.data.clientId);
      // A revocation for another tenant's client id is ignored: ids are global, tenants are not.
      if (client && client.tenantId === event.tenantId) {
        this.clients.set(client.clientId, { ...client, revokedAt: client.revokedAt ?? event.occurredAt, seq });
        for (const listener of this.revokedListeners) listener(client.clientId);
      }
    }
  }

  /** Calls `listener` with the id of each client revoked from now on. */
  onRevoked(listener: (clientId: string) => void): void {
    this.revokedListeners.push(listener);
  }

  private async readUsage(clientId: string): Promise<{ at: number; seq: number } | undefined> {
    const msg = await this.nats.jsm.direct.getMessage(Streams.state.name, { last_by_subj: EventSubjects.clientLastUsed(clientId) });
    if (!msg) return undefined;
    const at = Number((msg.json() as { lastUsedAt?: number }).lastUsedAt);
    return Number.isFinite(at) ? { at, seq: msg.seq } : undefined;
  }

  /** Writes each use newer than the stored one; a lost race with another instance is retried next time. */
  private async flushUsage(): Promise<void> {
    const pending = [...this.used];
    this.used.clear();
    await Promise.all(
      pending.map(async ([clientId, at]) => {
        try {
          const stored = await this.readUsage(clientId);
          if (stored && stored.at >= at) return;
          await this.nats.js.publish(EventSubjects.clientLastUsed(clientId), JSON.stringify({ lastUsedAt: at }), {
            expect: { lastSubjectSequence: stored?.seq ?? 0 },
          });
        } catch (error) {
          if (!this.used.has(clientId)) this.used.set(clientId, at);
          this.log.debug('API client last use not written; retried at the next flush', { clientId, error });
        }
      }),
    );
  }
}
