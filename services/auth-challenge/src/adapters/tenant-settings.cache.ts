import { Inject, Injectable } from '@nestjs/common';
import type { ConsumerMessages } from '@nats-io/jetstream';
import { defaultTenantSettings, EventSubjects, parseEvent, Streams, type TenantSettings } from '@mfa/contracts';
import { followSubjects, type NatsClients } from '@mfa/messaging';
import { LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';

/**
 * Tenant settings, kept in memory from the tenant events through an ordered (ephemeral)
 * consumer: the hot path reads them without a round trip. A tenant not yet seen gets the
 * defaults, which is exactly what a just-created tenant has. An ordered consumer rather than a
 * @JetStreamConsumer handler: every instance needs every tenant event in its own memory, while a
 * durable consumer shares its messages among instances.
 */
@Injectable()
export class TenantSettingsCache {
  private readonly settings = new Map<string, TenantSettings>();
  private messages: ConsumerMessages | undefined;
  private readonly defaults = defaultTenantSettings();

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

  /** Resolves once the events present at start are folded in (or after `timeoutMs`). */
  async start(timeoutMs = 10_000): Promise<void> {
    this.messages = await followSubjects(
      this.nats.js,
      Streams.userSettings.name,
      EventSubjects.allTenants,
      (msg) => {
        try {
          const event = parseEvent(msg.json());
          if (event.type === 'TenantCreated' || event.type === 'TenantSettingsChanged') {
            this.settings.set(event.tenantId, event.data.settings);
          }
        } catch (error) {
          this.log.error('unreadable tenant event skipped by the settings cache', { seq: msg.seq, error });
        }
      },
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
  }
}
