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
  /**
   * The auto-block of fraud alert `alertId`, which recorded the user as blocked until `until` (a
   * block it made, or one already in force). `since`: the user's events recorded after the alert;
   * `before`: the user's last event before it, when the first of `since` is an administrator's
   * unblock (whether that unblock lifted a block depends on it).
   */
  | { type: 'BlockForAlert'; data: { userId: string; alertId: string; until: number; by?: Actor; since: readonly FraudUserEvent[]; before?: FraudUserEvent } }
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

/**
 * The automatic unblock of a block that has ended but is still the last word (the pass that
 * records it has not run yet): what comes next is recorded after it, so the history keeps the end.
 */
const endOfEnded = (state: BlockState, userId: string, now: Date): Decided[] =>
  state.blocked && state.until <= now.getTime() ? [{ event: { type: 'UserUnblocked', data: { userId, automatic: true } }, at: new Date(state.until) }] : [];

/** When the user's block in force ends, or undefined when none is. */
export const blockedUntil = (state: BlockState, now: Date): number | undefined => (inForce(state, now) ? state.until : undefined);

/** When the block a fraud report brings ends: the block in force stands, otherwise the auto-block's 90 days from the report. */
export function fraudBlockUntil(state: BlockState, now: Date): number {
  return inForce(state, now) ? state.until : now.getTime() + BLOCK_DAYS * DAY_MS;
}

/** Whether `unblock` lifted a block in force: the user's event before it is a block that had not ended by then. */
const liftedBlock = (previous: FraudUserEvent | undefined, unblock: FraudUserEvent): boolean =>
  previous?.type === 'UserBlocked' && Date.parse(previous.data.until) > Date.parse(unblock.occurredAt);

export function decideBlock(command: BlockCommand, state: BlockState, now: Date): Decided[] {
  switch (command.type) {
    case 'Block': {
      if (inForce(state, now)) throw conflict(`the user is already blocked until ${new Date(state.until).toISOString()}`);
      const { userId, reason, source, by } = command.data;
      const until = new Date(now.getTime() + BLOCK_DAYS * DAY_MS).toISOString();
      return [...endOfEnded(state, userId, now), { event: { type: 'UserBlocked', data: { userId, reason, until, source, ...(by ? { by } : {}) } }, at: now }];
    }
    case 'BlockForAlert': {
      const { userId, alertId, until, by, since, before } = command.data;
      // Once per alert, whoever completes it and however often; and an administrator who lifted a
      // block after the report has the last word (a re-sent report does not block again). An
      // unblock that lifted no block (only the lockouts of a user not blocked) lifted nothing of
      // the alert's: the block it has not made yet still comes.
      let previous = before;
      for (const event of since) {
        if (event.type === 'UserBlocked' && event.data.alertId === alertId) return [];
        if (event.type === 'UserUnblocked' && !event.data.automatic && liftedBlock(previous, event)) return [];
        previous = event;
      }
      // The block it recorded has ended meanwhile, or one is in force (that one stands).
      if (until <= now.getTime() || inForce(state, now)) return [];
      return [
        ...endOfEnded(state, userId, now),
        {
          event: { type: 'UserBlocked', data: { userId, reason: 'fraud reported', until: new Date(until).toISOString(), source: 'fraud_report', ...(by ? { by } : {}), alertId } },
          at: now,
        },
      ];
    }
    case 'Unblock': {
      const { userId, reason, by, lockedOut } = command.data;
      if (!inForce(state, now) && !lockedOut) throw conflict('the user is neither blocked nor locked out');
      return [...endOfEnded(state, userId, now), { event: { type: 'UserUnblocked', data: { userId, reason, ...(by ? { by } : {}) } }, at: now }];
    }
    case 'Expire':
      return endOfEnded(state, command.data.userId, now);
  }
}
