// tenants.configure is parsed with the contract's schema (partial settings, no defaults filled in).
import { TenantsConfigureRequest } from '@mfa/contracts';

export const TenantsConfigureCommand = TenantsConfigureRequest;
export type TenantsConfigureCommand = TenantsConfigureRequest;
