import { Inject, Injectable } from '@nestjs/common';
import type { ConsumerMessages, StoredMsg } from '@nats-io/jetstream';
import { defaultTenantSettings, EventSubjects, parseEvent, Streams, type AnyEvent, type TenantSettings } from '@mfa/contracts';
import { followSubjects, isNoMessageFound, type NatsClients } from '@mfa/messaging';
import { LookupBudget, LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';

/** Lookups of tenants not in memory per second (a flood of made-up tenant ids costs at most this many gets). */
const LOOKUPS_PER_SECOND = 20;
/** How long a tenant the log did not hold is taken as absent without a lookup, and how many such answers are kept. */
const ABSENT_FOR_MS = 1_000;
const ABSENT_KEPT = 10_000;

/**
 * Tenant settings, kept in memory from the tenant events through an ordered (ephemeral)
 * consumer: the hot path reads them without a round trip. An ordered consumer rather than a
 * @JetStreamConsumer handler: every instance needs every tenant event in its own memory, while a
 * durable consumer shares its messages among instances.
 *
 * Never answers from partial state: until the events present at boot are folded in, `ready` is
 * false and the service answers `unavailable` (a tenant's stricter settings must not give way to
 * the defaults). A tenant not in memory (created a moment ago on another instance) is read from
 * the log once (`lookup`), within a budget, before it is taken for unknown.
 */
@Injectable()
export class TenantSettingsCache {
  private readonly settings = new Map<string, TenantSettings>();
  /**
   * Tenants deleted (tenants.delete) and not created again: unknown to every request, although
   * their users' projections stay in Redis until the offboarding erases each of them.
   */
  private readonly deleted = new Set<string>();
  private messages: ConsumerMessages | undefined;
  private readonly defaults = defaultTenantSettings();
  private caughtUp = false;
  private readonly lookupBudget = new LookupBudget(LOOKUPS_PER_SECOND);
  /** Tenants the log did not hold, until when that answer is reused (ms). */
  private readonly absentUntil = new Map<string, number>();

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  get(tenantId: string): TenantSettings {
    return this.settings.get(tenantId) ?? this.defaults;
  }

  has(tenantId: string): boolean {
    return this.settings.has(tenantId);
  }

  /** Whether the tenant is deleted (its TenantDeleted or TenantErased is the last event folded in). */
  isDeleted(tenantId: string): boolean {
    return this.deleted.has(tenantId);
  }

  /** Whether every tenant event present at boot has been folded in. */
  get ready(): boolean {
    return this.caughtUp;
  }

  /**
   * Reads a tenant not in memory from the log (its last event holds its settings): `known`, `absent`
   * (the log holds no such tenant), or `unread` (over the lookup budget, or the log did not answer).
   */
  async lookup(tenantId: string): Promise<'known' | 'absent' | 'unread'> {
    if (this.settings.has(tenantId)) return 'known';
    // A tenant the log did not hold a moment ago is taken as absent for a second without asking
    // again: requests for one made-up tenant spend one lookup a second, not the budget.
    const now = Date.now();
    if ((this.absentUntil.get(tenantId) ?? 0) > now) return 'absent';
    if (!this.lookupBudget.take()) return 'unread';
    let last: StoredMsg | null;
    try {
      last = await this.nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) });
    } catch (error) {
      if (!isNoMessageFound(error)) return this.settings.has(tenantId) ? 'known' : 'unread';
      last = null;
    }
    // The consumer may have delivered a newer event meanwhile: it wins. A deleted tenant's last
    // event folds into nothing: absent.
    if (last && !this.settings.has(tenantId)) this.fold(() => parseEvent(last.json()), last.seq);
    if (this.settings.has(tenantId)) return 'known';
    if (this.absentUntil.size >= ABSENT_KEPT) this.absentUntil.clear();
    this.absentUntil.set(tenantId, now + ABSENT_FOR_MS);
    return 'absent';
  }

  private fold(read: () => AnyEvent, seq: number): void {
    try {
      const event = read();
      if (event.type === 'TenantCreated' || event.type === 'TenantSettingsChanged') {
        this.settings.set(event.tenantId, event.data.settings);
        this.deleted.delete(event.tenantId);
      } else if (event.type === 'TenantDeleted' || event.type === 'TenantErased') {
        // tenants.delete: unknown from now on, also for the users it still has in Redis.
        this.settings.delete(event.tenantId);
        this.deleted.add(event.tenantId);
      }
    } catch (error) {
      this.log.error('unreadable tenant event skipped by the settings cache', { stream: Streams.userSettings.name, seq, error });
    }
  }

  /** Resolves once the events present at start are folded in (or after `timeoutMs`). */
  async start(timeoutMs = 10_000): Promise<void> {
    this.messages = await followSubjects(
      this.nats.js,
      Streams.userSettings.name,
      EventSubjects.allTenants,
      (msg) => this.fold(() => parseEvent(msg.json()), msg.seq),
      timeoutMs,
      () => {
        this.caughtUp = true;
      },
    );
  }

  async stop(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
  }
}
