import { conflict } from '@mfa/contracts';
import type { EventOf, FraudUserEvent } from '@mfa/contracts';

/** A block lasts 90 days, or until an administrator lifts it (MISSION, "Block / unblock users"). */
export const BLOCK_DAYS = 90;
const DAY_MS = 86_400_000;

/** Who acted: an API client and, through the console, the operator. */
export interface Actor {
  clientId?: string;
  operator?: string;
}

/** A user's block, as the last event of the user's fraud subject leaves it. */
export type BlockState = { blocked: false } | { blocked: true; until: number; reason: string };

export type BlockCommand =
  | { type: 'Block'; data: { userId: string; reason: string; source: 'admin' | 'fraud_report'; by?: Actor } }
  /** `lockedOut`: the user has lockout counters in Redis, which an unblock lifts too. */
  | { type: 'Unblock'; data: { userId: string; reason: string; by?: Actor; lockedOut: boolean } }
  /** The block's end has passed: recorded as an automatic unblock, dated at that end. */
  | { type: 'Expire'; data: { userId: string } };

/** What to append, with when it happened (an automatic unblock is dated at the block's end). */
export interface Decided {
  event: { type: 'UserBlocked'; data: EventOf<'UserBlocked'>['data'] } | { type: 'UserUnblocked'; data: EventOf<'UserUnblocked'>['data'] };
  at: Date;
}

export const initialBlockState = (): BlockState => ({ blocked: false });

/** Every event of the aggregate carries its whole state: the last one is enough. */
export function evolveBlock(_state: BlockState, event: FraudUserEvent): BlockState {
  return event.type === 'UserBlocked'
    ? { blocked: true, until: Date.parse(event.data.until), reason: event.data.reason }
    : { blocked: false };
}

const inForce = (state: BlockState, now: Date): state is Extract<BlockState, { blocked: true }> => state.blocked && state.until > now.getTime();

export function decideBlock(command: BlockCommand, state: BlockState, now: Date): Decided[] {
  switch (command.type) {
    case 'Block': {
      if (inForce(state, now)) throw conflict(`the user is already blocked until ${new Date(state.until).toISOString()}`);
      const { userId, reason, source, by } = command.data;
      const until = new Date(now.getTime() + BLOCK_DAYS * DAY_MS).toISOString();
      return [{ event: { type: 'UserBlocked', data: { userId, reason, until, source, ...(by ? { by } : {}) } }, at: now }];
    }
    case 'Unblock': {
      const { userId, reason, by, lockedOut } = command.data;
      if (!inForce(state, now) && !lockedOut) throw conflict('the user is neither blocked nor locked out');
      return [{ event: { type: 'UserUnblocked', data: { userId, reason, ...(by ? { by } : {}) } }, at: now }];
    }
    case 'Expire': {
      if (!state.blocked || state.until > now.getTime()) return [];
      return [{ event: { type: 'UserUnblocked', data: { userId: command.data.userId, automatic: true } }, at: new Date(state.until) }];
    }
  }
}
