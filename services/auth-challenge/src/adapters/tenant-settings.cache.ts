import { Inject, Injectable } from '@nestjs/common';
import type { ConsumerMessages } from '@nats-io/jetstream';
import { defaultTenantSettings, EventSubjects, parseEvent, Streams, type AnyEvent, type TenantSettings } from '@mfa/contracts';
import { followSubjects, type NatsClients } from '@mfa/messaging';
import { LookupBudget, LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';

/** Lookups of tenants not in memory per second (a flood of made-up tenant ids costs at most this many gets). */
const LOOKUPS_PER_SECOND = 20;

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
  private messages: ConsumerMessages | undefined;
  private readonly defaults = defaultTenantSettings();
  private caughtUp = false;
  private readonly lookupBudget = new LookupBudget(LOOKUPS_PER_SECOND);

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

  /** Whether every tenant event present at boot has been folded in. */
  get ready(): boolean {
    return this.caughtUp;
  }

  /** Reads a tenant not in memory from the log (its last event holds its settings); whether it exists. */
  async lookup(tenantId: string): Promise<boolean> {
    if (this.settings.has(tenantId)) return true;
    if (!this.lookupBudget.take()) return false;
    const last = await this.nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) }).catch(() => null);
    // The consumer may have delivered a newer event meanwhile: it wins.
    if (last && !this.settings.has(tenantId)) this.fold(() => parseEvent(last.json()), last.seq);
    return this.settings.has(tenantId);
  }

  private fold(read: () => AnyEvent, seq: number): void {
    try {
      const event = read();
      if (event.type === 'TenantCreated' || event.type === 'TenantSettingsChanged') {
        this.settings.set(event.tenantId, event.data.settings);
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
