import {
  applySettingsPatch,
  defaultTenantSettings,
  invalidRequest,
  sameSettings,
  settingsProblems,
  type TenantSettings,
  type TenantSettingsPatch,
} from '@mfa/contracts';
import { domainEvent, type Decider, type DomainEvent } from './events.js';

export type TenantState = { exists: false } | { exists: true; settings: TenantSettings };

export type TenantEvent = DomainEvent<'TenantCreated' | 'TenantSettingsChanged'>;

export type TenantCommand =
  /** Merges the given settings into the current ones (or the defaults, creating the tenant). */
  | { type: 'ConfigureTenant'; data: { settings: TenantSettingsPatch } }
  /** Creates the tenant with default settings if it does not exist yet (auto-create on register). */
  | { type: 'ProvisionTenant'; data: Record<string, never> };

const TENANT_EVENT_TYPES: ReadonlySet<string> = new Set<TenantEvent['type']>(['TenantCreated', 'TenantSettingsChanged']);

function isTenantEvent(event: { type: string }): event is TenantEvent {
  return TENANT_EVENT_TYPES.has(event.type);
}

const initialTenantState = (): TenantState => ({ exists: false });

/** The patch applied, checked as a whole: rules across fields are refused with every problem named. */
function merge(current: TenantSettings, patch: TenantSettingsPatch): TenantSettings {
  const merged = applySettingsPatch(current, patch);
  const problems = settingsProblems(merged);
  if (problems.length > 0) throw invalidRequest(problems.join('; '));
  return merged;
}

function decideTenant(command: TenantCommand, state: TenantState, now: Date): TenantEvent[] {
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
    default: {
      const unknown: never = command;
      throw new Error(`unknown command ${(unknown as { type: string }).type}`);
    }
  }
}

function evolveTenant(_state: TenantState, event: TenantEvent): TenantState {
  switch (event.type) {
    case 'TenantCreated':
    case 'TenantSettingsChanged':
      return { exists: true, settings: event.data.settings };
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
