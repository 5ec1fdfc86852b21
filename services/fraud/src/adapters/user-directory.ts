import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Headers, Streams } from '@mfa/contracts';

/**
 * What fraud needs to know of tenants and users (user-settings owns them): whether they exist,
 * from the last event of their subject in MFA_USER_SETTINGS (one direct get, its type header).
 */
export class UserDirectory {
  constructor(private readonly jsm: JetStreamManager) {}

  async tenantExists(tenantId: string): Promise<boolean> {
    return (await this.jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) })) !== null;
  }

  /** Registered and not erased since. */
  async userRegistered(tenantId: string, userId: string): Promise<boolean> {
    const last = await this.jsm.direct.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.user(tenantId, userId) });
    return last !== null && last.header?.get(Headers.eventType) !== 'UserErased';
  }
}
