import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, type TenantSettings } from '@mfa/contracts';

/**
 * A tenant's current settings as user-settings last recorded them (every tenant event carries them
 * all), from the last event of its subject in MFA_USER_SETTINGS: one direct get. Undefined for a
 * tenant that does not exist, or is deleted (tenants.delete: TenantDeleted, then TenantErased). For
 * the services that need to know a tenant without owning it.
 */
export async function tenantSettingsOf(jsm: JetStreamManager, tenantId: string): Promise<TenantSettings | undefined> {
  const last = await jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) });
  if (!last) return undefined;
  const event = parseEvent(last.json());
  if (event.type === 'TenantDeleted' || event.type === 'TenantErased') return undefined;
  if (event.type !== 'TenantCreated' && event.type !== 'TenantSettingsChanged') throw new Error(`unexpected ${event.type} on a tenant subject`);
  return event.data.settings;
}
