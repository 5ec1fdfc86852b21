import { unavailable } from '@mfa/contracts';
import type { DeletedTenants } from '@mfa/messaging';

/** Which tenants are deleted (tenants.delete): @mfa/messaging's DeletedTenants, in memory. */
export type TenantsDeleted = Pick<DeletedTenants, 'isDeleted'>;

/**
 * A send whose tenant is deleted (tenants.delete): nothing reaches a provider, no outcome is
 * recorded, and the request is acknowledged (never tried again). Thrown where the send finds it
 * out, caught where the request came in.
 */
export class TenantDeletedRefusal extends Error {
  override readonly name = 'TenantDeletedRefusal';

  constructor() {
    super('the tenant is deleted: nothing is sent for it');
  }
}

/**
 * Refuses (TenantDeletedRefusal) a send for a deleted tenant. Asked before the first attempt and
 * again before each attempt after it (a back-off, the next provider), so that a deletion that comes
 * while a send waits stops it. Whether the tenant is deleted comes from memory; while that memory
 * is not current (boot, a reconnection) it is read from the log, and a read that fails leaves the
 * request for later rather than sending for a tenant that could not be checked.
 */
export async function refuseDeletedTenant(tenants: TenantsDeleted, tenantId: string): Promise<void> {
  let deleted: boolean;
  try {
    deleted = await tenants.isDeleted(tenantId);
  } catch (error) {
    throw unavailable('whether the tenant is deleted could not be read (MFA_USER_SETTINGS); trying again later', error);
  }
  if (deleted) throw new TenantDeletedRefusal();
}
