/**
 * What an operator may do, from the roles of their ID token (MISSION, "Console"): the platform
 * operator everything on every tenant; a tenant admin reads and changes one tenant; a tenant
 * reader only reads it. Unknown role strings are ignored; no known role, no access.
 */
export interface Access {
  platform: boolean;
  /** Per tenant: `admin` may change, `reader` may only read. */
  tenants: ReadonlyMap<string, 'admin' | 'reader'>;
}

const TENANT_ROLE = /^tenant-(admin|reader):(.{1,128})$/;

export function accessFromRoles(claim: unknown): Access | undefined {
  const roles = Array.isArray(claim) ? claim.filter((r): r is string => typeof r === 'string') : typeof claim === 'string' ? [claim] : [];
  let platform = false;
  const tenants = new Map<string, 'admin' | 'reader'>();
  for (const role of roles) {
    if (role === 'platform-operator') platform = true;
    const m = TENANT_ROLE.exec(role);
    if (m) {
      const [, kind, tenantId] = m;
      // An admin role wins over a reader role of the same tenant.
      if (kind === 'admin' || !tenants.has(tenantId!)) tenants.set(tenantId!, kind as 'admin' | 'reader');
    }
  }
  if (!platform && tenants.size === 0) return undefined;
  return { platform, tenants };
}

export const canRead = (access: Access, tenantId: string): boolean => access.platform || access.tenants.has(tenantId);
export const canChange = (access: Access, tenantId: string): boolean => access.platform || access.tenants.get(tenantId) === 'admin';

/** The roles as stored in a session (JSON-safe). */
export const rolesOf = (access: Access): string[] => [
  ...(access.platform ? ['platform-operator'] : []),
  ...[...access.tenants].map(([tenantId, kind]) => `tenant-${kind}:${tenantId}`),
];
