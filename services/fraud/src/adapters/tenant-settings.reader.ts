import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, type TenantSettings } from '@mfa/contracts';

/** A tenant's current settings: the last event of its subject (each one carries them all), or undefined for an unknown tenant. */
export class TenantSettingsReader {
  constructor(private readonly jsm: JetStreamManager) {}

  async get(tenantId: string): Promise<TenantSettings | undefined> {
    const last = await this.jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) });
    if (!last) return undefined;
    const event = parseEvent(last.json());
    if (event.type !== 'TenantCreated' && event.type !== 'TenantSettingsChanged') throw new Error(`unexpected ${event.type} on a tenant subject`);
    return event.data.settings;
  }
}
