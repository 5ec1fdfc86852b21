import { z } from 'zod';
import { TenantId, TenantSettings } from '@mfa/contracts';

const settings = TenantSettings.shape;

/**
 * tenants.configure as this service parses it. The contract's `TenantSettings.partial()` keeps
 * each field's default, so zod fills every omitted field with its default value and a partial
 * update could not be told from "reset to defaults". Same fields, same rules, minus the defaults.
 */
export const TenantsConfigureCommand = z.object({
  tenantId: TenantId,
  settings: z.object({
    codeLifetimeSeconds: settings.codeLifetimeSeconds.unwrap().optional(),
    maxAttempts: settings.maxAttempts.unwrap().optional(),
    enabledMethods: settings.enabledMethods.unwrap().optional(),
  }),
});
export type TenantsConfigureCommand = z.infer<typeof TenantsConfigureCommand>;
