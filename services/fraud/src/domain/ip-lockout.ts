import { conflict, lockKeyInRanges, type EventOf, type FraudIpEvent, type TenantSettings } from '@mfa/contracts';
import type { Actor } from './user-block.js';

/**
 * Per-IP lockout, the pure half. An address's aggregate (one subject per tenant and lock key) is
 * its lock; what leads to one is a sliding window of denials from the address across users,
 * counted in Redis (adapters/ip-counters.ts), which this decider reads.
 */

export type IpLockoutPolicy = TenantSettings['ipLockout'];

/** An address's lock as the last event of its subject leaves it. */
export type IpLockState =
  | { locked: false }
  | { locked: true; until: number; dryRun: boolean; lockedAt: number; failures: number; users: number };

export const initialIpLockState = (): IpLockState => ({ locked: false });

export function evolveIpLock(_state: IpLockState, event: FraudIpEvent): IpLockState {
  return event.type === 'IpLocked'
    ? {
        locked: true,
        until: Date.parse(event.data.until),
        dryRun: event.data.dryRun,
        lockedAt: Date.parse(event.occurredAt),
        failures: event.data.failures,
        users: event.data.users,
      }
    : { locked: false };
}

/** What the window holds after a denial was counted: denials from the address, and distinct users among them. */
export interface IpWindow {
  failures: number;
  users: number;
}

export type IpCommand =
  | { type: 'CountDenial'; data: { ip: string; window: IpWindow } }
  | { type: 'Unlock'; data: { ip: string; reason: string; by?: Actor } };

type IpEventData = { type: 'IpLocked'; data: EventOf<'IpLocked'>['data'] } | { type: 'IpUnlocked'; data: EventOf<'IpUnlocked'>['data'] };

/**
 * A denial reaching the threshold locks the address for `durationMinutes` (only records it in a
 * dry run), unless the lockout is off, the address is on the never-block list, or a lock already
 * stands (a dry-run record gives way to a real lock once the dry run is turned off). An unlock
 * needs a lock in force.
 */
export function decideIp(command: IpCommand, policy: IpLockoutPolicy, state: IpLockState, now: Date): IpEventData[] {
  switch (command.type) {
    case 'CountDenial': {
      const { ip, window } = command.data;
      if (!policy.enabled || window.failures < policy.threshold) return [];
      if (lockKeyInRanges(ip, policy.neverBlock)) return [];
      if (state.locked && state.until > now.getTime() && (policy.dryRun || !state.dryRun)) return [];
      const until = new Date(now.getTime() + policy.durationMinutes * 60_000).toISOString();
      return [
        {
          type: 'IpLocked',
          data: { ip, until, failures: window.failures, users: window.users, windowMinutes: policy.windowMinutes, dryRun: policy.dryRun },
        },
      ];
    }
    case 'Unlock': {
      const { ip, reason, by } = command.data;
      if (!state.locked || state.until <= now.getTime() || state.dryRun) throw conflict('this address is not locked');
      return [{ type: 'IpUnlocked', data: { ip, reason, ...(by ? { by } : {}) } }];
    }
  }
}
