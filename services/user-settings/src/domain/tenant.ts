import {
  applySettingsPatch,
  conflict,
  defaultTenantSettings,
  invalidRequest,
  notFound,
  sameSettings,
  settingsProblems,
  type TenantSettings,
  type TenantSettingsPatch,
} from '@mfa/contracts';
import { domainEvent, type Decider, type DomainEvent } from './events.js';

/** What tenants.delete did to a tenant: asked at `deletedAt`; once offboarded, when and what was erased. */
export interface TenantDeletion {
  deletedAt: string;
  erasedAt?: string;
  erased?: { users: number; hardwareTokens: number; recordings: number; clients: number };
}

/**
 * A tenant that exists, or not: never created, or deleted (`deletion`: being offboarded until
 * `erasedAt`, after which the id may be created again as a new tenant).
 */
export type TenantState = { exists: false; deletion?: TenantDeletion } | { exists: true; settings: TenantSettings };

export type TenantEvent = DomainEvent<'TenantCreated' | 'TenantSettingsChanged' | 'TenantDeleted' | 'TenantErased'>;

export type TenantCommand =
  /** Merges the given settings into the current ones (or the defaults, creating the tenant). */
  | { type: 'ConfigureTenant'; data: { settings: TenantSettingsPatch } }
  /** Creates the tenant with default settings if it does not exist yet (auto-create on register). */
  | { type: 'ProvisionTenant'; data: Record<string, never> }
  /** tenants.delete: the tenant is unknown from now on, and offboarded. Again while deleting or deleted: nothing. */
  | { type: 'DeleteTenant'; data: Record<string, never> }
  /** The offboarding finished: what it erased. */
  | { type: 'RecordTenantErased'; data: { users: number; hardwareTokens: number; recordings: number; clients: number } };

const TENANT_EVENT_TYPES: ReadonlySet<string> = new Set<TenantEvent['type']>(['TenantCreated', 'TenantSettingsChanged', 'TenantDeleted', 'TenantErased']);

function isTenantEvent(event: { type: string }): event is TenantEvent {
  return TENANT_EVENT_TYPES.has(event.type);
}

/** A tenant deleted and not yet offboarded: nothing may create or change it until it is. */
export const beingDeleted = (state: TenantState): boolean => !state.exists && state.deletion !== undefined && state.deletion.erasedAt === undefined;

const initialTenantState = (): TenantState => ({ exists: false });

/** The patch applied, checked as a whole: rules across fields are refused with every problem named. */
function merge(current: TenantSettings, patch: TenantSettingsPatch): TenantSettings {
  const merged = applySettingsPatch(current, patch);
  const problems = settingsProblems(merged);
  if (problems.length > 0) throw invalidRequest(problems.join('; '));
  return merged;
}

function decideTenant(command: TenantCommand, state: TenantState, now: Date): TenantEvent[] {
  // Created again only once the offboarding erased everything of the deleted tenant.
  if ((command.type === 'ConfigureTenant' || command.type === 'ProvisionTenant') && beingDeleted(state)) {
    throw conflict('the tenant is being deleted: it can be created again once tenants.delete answers deleted');
  }
  switch (command.type) {
    case 'ConfigureTenant': {
      if (!state.exists) {
        return [domainEvent('TenantCreated', { settings: merge(defaultTenantSettings(), command.data.settings) }, now)];
      }
      const settings = merge(state.settings, command.data.settings);
      return sameSettings(settings, state.settings) ? [] : [domainEvent('TenantSettingsChanged', { settings }, now)];
    }
    case 'ProvisionTenant':
      return state.exists ? [] : [domainEvent('TenantCreated', { settings: defaultTenantSettings() }, now)];
    case 'DeleteTenant':
      if (state.exists) return [domainEvent('TenantDeleted', {}, now)];
      if (state.deletion) return [];
      throw notFound('unknown tenant');
    case 'RecordTenantErased':
      if (!beingDeleted(state) || state.exists || !state.deletion) return [];
      return [domainEvent('TenantErased', { deletedAt: state.deletion.deletedAt, ...command.data }, now)];
    default: {
      const unknown: never = command;
      throw new Error(`unknown command ${(unknown as { type: string }).type}`);
    }
  }
}

function evolveTenant(_state: TenantState, event: TenantEvent): TenantState {
  // Each event is the whole state: the loader folds a tenant's last event only.
  switch (event.type) {
    case 'TenantCreated':
    case 'TenantSettingsChanged':
      return { exists: true, settings: event.data.settings };
    case 'TenantDeleted':
      return { exists: false, deletion: { deletedAt: event.occurredAt } };
    case 'TenantErased': {
      const { deletedAt, ...erased } = event.data;
      return { exists: false, deletion: { deletedAt, erasedAt: event.occurredAt, erased } };
    }
    default: {
      const unknown: never = event;
      throw new Error(`unknown event ${(unknown as { type: string }).type}`);
    }
  }
}

export const tenantDecider: Decider<TenantCommand, TenantState, TenantEvent> = {
  decide: decideTenant,
  evolve: evolveTenant,
  initialState: initialTenantState,
  accepts: isTenantEvent,
};
