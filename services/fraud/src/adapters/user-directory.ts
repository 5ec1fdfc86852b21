import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Headers, Streams, type TenantSettings } from '@mfa/contracts';
import { tenantSettingsOf } from '@mfa/messaging';

/**
 * What fraud needs to know of tenants and users (user-settings owns them), from the last event of
 * their subject in MFA_USER_SETTINGS: one direct get each.
 */
export class UserDirectory {
  constructor(private readonly jsm: JetStreamManager) {}

  /** The tenant's current settings, or undefined for an unknown tenant. */
  tenantSettings(tenantId: string): Promise<TenantSettings | undefined> {
    return tenantSettingsOf(this.jsm, tenantId);
  }

  /** Registered and not erased since. */
  async userRegistered(tenantId: string, userId: string): Promise<boolean> {
    const last = await this.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.user(tenantId, userId) });
    return last !== null && last.header?.get(Headers.eventType) !== 'UserErased';
  }
}
