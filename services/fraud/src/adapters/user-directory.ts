import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Headers, parseEvent, Streams, type TenantSettings } from '@mfa/contracts';

/**
 * What fraud needs to know of tenants and users (user-settings owns them), from the last event of
 * their subject in MFA_USER_SETTINGS: one direct get each.
 */
export class UserDirectory {
  constructor(private readonly jsm: JetStreamManager) {}

  /** The tenant's current settings (every tenant event carries them all), or undefined for an unknown tenant. */
  async tenantSettings(tenantId: string): Promise<TenantSettings | undefined> {
    const last = await this.jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) });
    if (!last) return undefined;
    const event = parseEvent(last.json());
    if (event.type !== 'TenantCreated' && event.type !== 'TenantSettingsChanged') throw new Error(`unexpected ${event.type} on a tenant subject`);
    return event.data.settings;
  }

  /** Registered and not erased since. */
  async userRegistered(tenantId: string, userId: string): Promise<boolean> {
    const last = await this.jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.user(tenantId, userId) });
    return last !== null && last.header?.get(Headers.eventType) !== 'UserErased';
  }
}
