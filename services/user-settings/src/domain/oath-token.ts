import { conflict, notFound, OATH_TOKEN_EVENT_TYPES, type OathTokenState as InventoryState } from '@mfa/contracts';
import { domainEvent, type Decider, type DomainEvent } from './events.js';

/**
 * A hardware OATH token of a tenant's inventory: one aggregate per tenant and serial number, so a
 * serial number is unique per tenant by construction (its first event is appended only on an empty
 * subject). The token's secret and parameters are here; the user who holds it also records it in
 * their own aggregate (HardwareTokenAssigned), which is what sign-in reads.
 *
 * The two aggregates are kept in step by the application (OathTokensService): the token is claimed
 * here first, then given to the user; what the inventory says of a user who no longer holds the
 * token (a step that crashed half-way) is repaired the next time the token is touched.
 *
 * A claim is a lease. The user is given the token only while the claim is theirs and younger than
 * CLAIM_COMPLETES_WITHIN_MS (checked just before the user's record is appended to); another user
 * takes the token over from a holder who does not hold it only once the claim is older than
 * CLAIM_TAKEOVER_AFTER_MS. So a claim still being completed is never taken over, and a claim taken
 * over is never completed, unless one step stalls for longer than the difference between the two.
 */
/** How long after its claim a user may still be given the token; an older claim is renewed first. */
export const CLAIM_COMPLETES_WITHIN_MS = 30_000;
/** How old the claim of a holder who does not hold the token must be before another user takes it over. */
export const CLAIM_TAKEOVER_AFTER_MS = 60_000;

export interface OathTokenState {
  exists: boolean;
  tokenId?: string;
  serialNumber?: string;
  sealedSecret?: string;
  digits?: 6 | 8;
  period?: 30 | 60;
  algorithm?: 'SHA1' | 'SHA256';
  manufacturer?: string | undefined;
  model?: string | undefined;
  /** The import job that brought the current token in. */
  jobId?: string;
  importedAtMs?: number;
  /** Who holds it, if anyone. */
  userId?: string | undefined;
  /** When the holder's claim was made (their last OathTokenAssigned). */
  assignedAtMs?: number | undefined;
  /** Set once the holder typed its code (oath.tokens.activate). */
  activatedStep?: number | undefined;
  activatedAtMs?: number | undefined;
}

export type OathTokenEvent = DomainEvent<(typeof OATH_TOKEN_EVENT_TYPES)[number]>;

export interface ImportedToken {
  tokenId: string;
  serialNumber: string;
  sealedSecret: string;
  digits: 6 | 8;
  period: 30 | 60;
  algorithm: 'SHA1' | 'SHA256';
  manufacturer?: string | undefined;
  model?: string | undefined;
}

export type OathTokenCommand =
  /** `replace`: a serial number already in the inventory gets the new token (the import asked for it). */
  | { type: 'ImportToken'; data: { token: ImportedToken; jobId: string; replace: boolean } }
  /**
   * `takeOver`: the current holder was checked and no longer holds the token (a half-done step);
   * `renew`: the holder is claimed again, from now (their claim is too old to be completed).
   */
  | { type: 'AssignToken'; data: { userId: string; takeOver?: boolean; renew?: boolean } }
  /** `claimedByMs`: only a claim made at or before this time (one made later is a new assignment). */
  | { type: 'UnassignToken'; data: { tokenId: string; userId: string; reason: string; claimedByMs?: number | undefined } }
  | { type: 'RecordActivation'; data: { tokenId: string; userId: string; step: number } }
  /** After a master key rotation: the secret sealed again by the caller; `from` is the value it replaces (a replaced token keeps its own). */
  | { type: 'ResealToken'; data: { tokenId: string; from: string; sealedSecret: string } };

const EVENTS: ReadonlySet<string> = new Set(OATH_TOKEN_EVENT_TYPES);

export const initialOathTokenState = (): OathTokenState => ({ exists: false });

/** The token's place in the inventory. */
export function inventoryState(state: OathTokenState): InventoryState {
  if (state.userId === undefined) return 'unassigned';
  return state.activatedStep === undefined ? 'assigned' : 'active';
}

export function decideOathToken(command: OathTokenCommand, state: OathTokenState, now: Date): OathTokenEvent[] {
  switch (command.type) {
    case 'ImportToken': {
      const { token, jobId, replace } = command.data;
      // The same job again (resumed after a crash): the token is in already.
      if (state.exists && state.jobId === jobId) return [];
      if (state.exists && !replace) throw conflict('serial number already in the inventory (import with replace to replace it)');
      const { manufacturer, model, ...rest } = token;
      return [
        domainEvent(
          'OathTokenImported',
          { ...rest, ...(manufacturer ? { manufacturer } : {}), ...(model ? { model } : {}), jobId, ...(state.exists ? { replaced: true } : {}) },
          now,
        ),
      ];
    }
    case 'AssignToken': {
      if (!state.exists || state.tokenId === undefined) throw notFound('unknown serial number');
      const { userId, takeOver, renew } = command.data;
      if (state.userId === userId && !renew) return [];
      if (state.userId !== undefined && state.userId !== userId && !takeOver) throw conflict('the token is assigned to another user; delete it from that user first');
      return [domainEvent('OathTokenAssigned', { tokenId: state.tokenId, userId }, now)];
    }
    case 'UnassignToken': {
      const { tokenId, userId, reason, claimedByMs } = command.data;
      // Replaced or given to someone else since: nothing of this holder to undo.
      if (state.tokenId !== tokenId || state.userId !== userId) return [];
      if (claimedByMs !== undefined && (state.assignedAtMs ?? 0) > claimedByMs) return [];
      return [domainEvent('OathTokenUnassigned', { tokenId, userId, reason }, now)];
    }
    case 'RecordActivation': {
      const { tokenId, userId, step } = command.data;
      if (state.tokenId !== tokenId || state.userId !== userId || state.activatedStep !== undefined) return [];
      return [domainEvent('OathTokenActivated', { tokenId, userId, step }, now)];
    }
    case 'ResealToken': {
      const { tokenId, from, sealedSecret } = command.data;
      if (!state.exists || state.tokenId !== tokenId || state.sealedSecret !== from) return [];
      return [domainEvent('OathTokenResealed', { tokenId, sealedSecret }, now)];
    }
    default: {
      const unknown: never = command;
      throw new Error(`unknown command ${(unknown as { type: string }).type}`);
    }
  }
}

export function evolveOathToken(state: OathTokenState, event: OathTokenEvent): OathTokenState {
  switch (event.type) {
    case 'OathTokenImported': {
      const { replaced: _replaced, ...token } = event.data;
      return { exists: true, ...token, importedAtMs: Date.parse(event.occurredAt) };
    }
    case 'OathTokenAssigned':
      return { ...state, userId: event.data.userId, assignedAtMs: Date.parse(event.occurredAt), activatedStep: undefined, activatedAtMs: undefined };
    case 'OathTokenUnassigned':
      return { ...state, userId: undefined, assignedAtMs: undefined, activatedStep: undefined, activatedAtMs: undefined };
    case 'OathTokenActivated':
      return { ...state, activatedStep: event.data.step, activatedAtMs: Date.parse(event.occurredAt) };
    case 'OathTokenResealed':
      return state.tokenId === event.data.tokenId ? { ...state, sealedSecret: event.data.sealedSecret } : state;
    default: {
      const unknown: never = event;
      throw new Error(`unknown event ${(unknown as { type: string }).type}`);
    }
  }
}

export const oathTokenDecider: Decider<OathTokenCommand, OathTokenState, OathTokenEvent> = {
  decide: decideOathToken,
  evolve: evolveOathToken,
  initialState: initialOathTokenState,
  accepts: (event): event is OathTokenEvent => EVENTS.has(event.type),
};

/**
 * Why the user may not be given the token under the claim made at `claimedAtMs` (undefined when
 * they may): the claim is no longer theirs (renewed, taken over, unassigned, the token replaced),
 * or it is too old to be completed. `nowMs` is the time of the check, not of the request.
 */
export function claimRefusal(state: OathTokenState, claim: { tokenId: string; userId: string; claimedAtMs: number }, nowMs: number): string | undefined {
  if (state.tokenId !== claim.tokenId || state.userId !== claim.userId || state.assignedAtMs !== claim.claimedAtMs) {
    return 'the token was assigned again or taken back meanwhile; try again';
  }
  if (nowMs - claim.claimedAtMs >= CLAIM_COMPLETES_WITHIN_MS) return 'the assignment took too long to complete; try again';
  return undefined;
}
