import { defaultTenantSettings, type TenantSettings } from '@mfa/contracts';
import { domainEvent, type Decider, type DomainEvent } from './events.js';

export type TenantState = { exists: false } | { exists: true; settings: TenantSettings };

export type TenantEvent = DomainEvent<'TenantCreated' | 'TenantSettingsChanged'>;

export type TenantCommand =
  /** Merges the given settings into the current ones (or the defaults, creating the tenant). */
  | { type: 'ConfigureTenant'; data: { settings: Partial<TenantSettings> } }
  /** Creates the tenant with default settings if it does not exist yet (auto-create on register). */
  | { type: 'ProvisionTenant'; data: Record<string, never> };

const TENANT_EVENT_TYPES: ReadonlySet<string> = new Set<TenantEvent['type']>(['TenantCreated', 'TenantSettingsChanged']);

function isTenantEvent(event: { type: string }): event is TenantEvent {
  return TENANT_EVENT_TYPES.has(event.type);
}

const initialTenantState = (): TenantState => ({ exists: false });

function merge(current: TenantSettings, patch: Partial<TenantSettings>): TenantSettings {
  const merged: TenantSettings = { ...current };
  if (patch.codeLifetimeSeconds !== undefined) merged.codeLifetimeSeconds = patch.codeLifetimeSeconds;
  if (patch.maxAttempts !== undefined) merged.maxAttempts = patch.maxAttempts;
  // A method listed twice means nothing more than once; dropping repeats keeps "no change" detectable.
  if (patch.enabledMethods !== undefined) merged.enabledMethods = [...new Set(patch.enabledMethods)];
  return merged;
}

function sameSettings(a: TenantSettings, b: TenantSettings): boolean {
  return (
    a.codeLifetimeSeconds === b.codeLifetimeSeconds &&
    a.maxAttempts === b.maxAttempts &&
    a.enabledMethods.length === b.enabledMethods.length &&
    a.enabledMethods.every((m, i) => b.enabledMethods[i] === m)
  );
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
