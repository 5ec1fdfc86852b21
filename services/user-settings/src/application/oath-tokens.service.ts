import {
  conflict,
  ContractError,
  EventSubjects,
  subjectIds,
  notFound,
  type OathTokenItem,
  type OathTokensActivateReply,
  type OathTokensActivateRequest,
  type OathTokensAssignReply,
  type OathTokensAssignRequest,
  type OathTokensListReply,
  type OathTokensListRequest,
} from '@mfa/contracts';
import { randomToken, seal, SealContext, type Keyring } from '@mfa/crypto';
import { cursorAfter, nextCursor } from './keyset-cursor.js';
import { ConcurrencyError, createEvent } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import type { EventStore } from '../adapters/event-store.js';
import type { OathInventory } from '../adapters/oath-inventory.js';
import { CLAIM_TAKEOVER_AFTER_MS, claimRefusal, inventoryState, oathTokenDecider, type ImportedToken, type OathTokenCommand, type OathTokenState } from '../domain/oath-token.js';
import type { ParsedToken } from '../domain/oath-import/types.js';
import type { LostHardwareToken } from '../domain/user.js';
import type { UserSettingsService } from './user-settings.service.js';
import { MAX_APPEND_ATTEMPTS, storeCall } from './store-call.js';

const TOKEN_ID_BYTES = 12;
/** The reason an inventory records when a token comes back from a user, by how the user lost it. */
const RELEASE_REASONS: Record<LostHardwareToken['how'], string> = { deleted: 'deleted from the user', reset: 'MFA reset', erased: 'user erased' };
const OATH_SUBJECT_PREFIX = EventSubjects.allOathTokens.slice(0, -1); // 'mfa.evt.oath.'

/** `mfa.evt.oath.<tenant>.<serial>` back to the ids (see EventSubjects.oathToken). */
export function parseOathSubject(subject: string): { tenantId: string; serialNumber: string } | undefined {
  const ids = subjectIds(OATH_SUBJECT_PREFIX, subject);
  return ids && { tenantId: ids[0], serialNumber: ids[1] };
}

interface TokenOutcome {
  state: OathTokenState;
  seq: number;
  appended: boolean;
}

/** What one row of an import came to. */
export type RowOutcome = { imported: true } | { imported: false; reason: string };

/**
 * The tenant's hardware token inventory: tokens come in by import (one aggregate per serial
 * number), wait unassigned or go to a user, and are activated by the code they show. Each step
 * that touches a token and its user is done token first, then user; a step that crashed between
 * the two is completed (or undone) the next time the token is touched, since each side is
 * idempotent and the user's side is checked before the token is taken from a holder. The claim on
 * the token is a lease (domain/oath-token.ts): a user is given the token only under a recent claim
 * of theirs, and a claim is taken over only once it is too old to be completed.
 */
export class OathTokensService {
  constructor(
    private readonly options: {
      store: EventStore;
      users: UserSettingsService;
      inventory: OathInventory;
      keyring: Keyring;
      log: Logger;
    },
  ) {
    options.users.onHardwareReleased((tenantId, userId, tokens, now) => this.release(tenantId, userId, tokens, now));
    options.users.onHardwareActivated(async (tenantId, userId, { serialNumber, tokenId, step }, now) => {
      await this.executeToken(tenantId, serialNumber, now, (state) => decide({ type: 'RecordActivation', data: { tokenId, userId, step } }, state, now));
    });
  }

  async list(request: OathTokensListRequest, now: Date): Promise<OathTokensListReply> {
    const { tenantId } = request;
    await this.options.users.requireExistingTenant(tenantId, now);
    const scope = { tenantId, kind: `oath.tokens.list:${request.state ?? ''}` };
    const after = cursorAfter(this.options.keyring, scope, request.cursor);
    const page = await this.infra(() => this.options.inventory.list(tenantId, { state: request.state, after, limit: request.limit }));
    return { items: page.items, ...nextCursor(this.options.keyring, scope, page.next) };
  }

  async assign(request: OathTokensAssignRequest, now: Date): Promise<OathTokensAssignReply> {
    const { tenantId, serialNumber, userId } = request;
    await this.options.users.requireExistingTenant(tenantId, now);
    const state = await this.assignToUser(tenantId, serialNumber, userId, now);
    return { serialNumber, tokenId: state.tokenId!, userId, state: inventoryState(state) };
  }

  async activate(request: OathTokensActivateRequest, now: Date): Promise<OathTokensActivateReply> {
    const { tenantId, serialNumber, code } = request;
    await this.options.users.requireExistingTenant(tenantId, now);
    const token = await this.executeToken(tenantId, serialNumber, now, () => []);
    const { tokenId, userId } = token.state;
    if (!token.state.exists || tokenId === undefined) throw notFound('unknown serial number');
    if (userId === undefined) throw conflict('the token is not assigned to a user: assign it first (oath.tokens.assign)');
    if (token.state.activatedStep !== undefined) throw conflict('token is already active');
    // Active for the user already (users.totp.activate, or an activation cut short before the
    // inventory recorded it): the inventory follows, and the token needs no code.
    const activatedStep = await this.options.users.activatedStepOf(tenantId, userId, tokenId, now);
    if (activatedStep !== undefined) {
      await this.executeToken(tenantId, serialNumber, now, (state) => decide({ type: 'RecordActivation', data: { tokenId, userId, step: activatedStep } }, state, now));
      throw conflict('token is already active');
    }
    // The user's side of the assignment, if it was cut short: completed only under the claim as it
    // stands (recent, and not older than a loss of the token), never under a renewed one: a code
    // typed is no administrator's decision to give the token (again) to the user it names.
    await this.give(tenantId, token.state, now, () => conflict('the token’s assignment to its user did not complete; assign it again (oath.tokens.assign)'));
    const step = await this.options.users.activateHardwareToken(tenantId, userId, tokenId, code, now);
    if (step === undefined) return { serialNumber, tokenId, userId, active: false };
    await this.executeToken(tenantId, serialNumber, now, (state) => decide({ type: 'RecordActivation', data: { tokenId, userId, step } }, state, now));
    return { serialNumber, tokenId, userId, active: true };
  }

  /**
   * One token of an import job. Rows whose user cannot take one more token are refused before
   * anything is stored; a row whose token went in but could not be given to its user says so.
   * `mayWrite` is asked right before each write of the row (it throws when the job's worker may no
   * longer write: its lease is running out, or its job was ended by its tenant's offboarding).
   */
  async importToken(job: { tenantId: string; jobId: string; replace: boolean }, parsed: ParsedToken, now: Date, mayWrite: () => void = () => undefined): Promise<RowOutcome> {
    const { tenantId } = job;
    const { serialNumber, userId } = parsed;
    try {
      if (userId !== undefined) await this.checkRoomFor(job, serialNumber, userId, now);
      const tokenId = randomToken(TOKEN_ID_BYTES);
      const fresh: ImportedToken = {
        tokenId,
        serialNumber,
        sealedSecret: seal(this.options.keyring, parsed.secret, SealContext.hardwareSecret(tenantId, tokenId)),
        digits: parsed.digits,
        period: parsed.period,
        algorithm: parsed.algorithm,
        ...(parsed.manufacturer ? { manufacturer: parsed.manufacturer } : {}),
        ...(parsed.model ? { model: parsed.model } : {}),
      };
      if (job.replace) {
        // Replacing a token someone holds: they lose the old one first (its secret is no longer good).
        const previous = (await this.executeToken(tenantId, serialNumber, now, () => [])).state;
        if (previous.exists && previous.jobId !== job.jobId && previous.userId !== undefined && previous.tokenId !== undefined) {
          mayWrite();
          await this.options.users.takeHardwareToken(tenantId, previous.userId, previous.tokenId, now);
        }
      }
      await this.executeToken(tenantId, serialNumber, now, (state) => {
        // Asked after the token's events are read, right before its append (the sealed secret).
        mayWrite();
        return decide({ type: 'ImportToken', data: { token: fresh, jobId: job.jobId, replace: job.replace } }, state, now);
      });
    } catch (error) {
      if (error instanceof ContractError && error.code !== 'unavailable') return { imported: false, reason: error.message };
      throw error;
    }
    if (userId === undefined) return { imported: true };
    try {
      // The user's room was checked just before (the user's decider checks it again when giving).
      await this.assignToUser(tenantId, serialNumber, userId, now, { checked: true, mayWrite });
      return { imported: true };
    } catch (error) {
      if (error instanceof ContractError && error.code !== 'unavailable') {
        return { imported: false, reason: `imported into the inventory unassigned, not given to the user: ${error.message}` };
      }
      throw error;
    }
  }

  /**
   * Whether the row's user can take its token: one more than they have, or, in a job resumed after
   * a crash, the token this very job gave them already (which they hold and which counts).
   */
  private async checkRoomFor(job: { tenantId: string; jobId: string }, serialNumber: string, userId: string, now: Date): Promise<void> {
    try {
      await this.options.users.checkCanTakeToken(job.tenantId, userId, '', now);
    } catch (error) {
      if (!(error instanceof ContractError && error.code === 'conflict')) throw error;
      const { state } = await this.executeToken(job.tenantId, serialNumber, now, () => []);
      if (!state.exists || state.jobId !== job.jobId || state.tokenId === undefined) throw error;
      await this.options.users.checkCanTakeToken(job.tenantId, userId, state.tokenId, now);
    }
  }

  /**
   * Puts tokens a user lost (deleted, reset, erased) back into the inventory, unassigned, where it
   * still names the user under a claim from before the loss (a later one is a new assignment).
   * Idempotent: the user's commands, their retries and the projector all call it.
   */
  async release(tenantId: string, userId: string, tokens: readonly LostHardwareToken[], now: Date): Promise<void> {
    for (const { tokenId, serialNumber, lostAtMs, how } of tokens) {
      await this.executeToken(tenantId, serialNumber, now, (state) =>
        decide({ type: 'UnassignToken', data: { tokenId, userId, reason: RELEASE_REASONS[how], claimedByMs: lostAtMs } }, state, now),
      );
    }
  }

  /**
   * Rewrites the inventory entry of one token from its events (the projector, after a crash or a
   * Redis loss). A failed write is thrown: the projector's delivery is then tried again (an outage)
   * or dead-lettered, the rebuild fails (an outage) or logs the token, rather than the event being
   * acknowledged with the token missing from oath.tokens.list until the next full rebuild.
   */
  async reindex(tenantId: string, serialNumber: string, now: Date): Promise<void> {
    await this.executeToken(tenantId, serialNumber, now, () => [], true);
  }

  /**
   * Claims the token for the user, then gives it to them. A free token is claimed at once. One the
   * inventory names the user for is theirs: nothing to do when they hold it, else it is claimed
   * again from now (an assignment cut short, or a token they lost since) and given. One it names
   * another user for is refused while that user holds it, and while their claim may still be
   * completing (younger than CLAIM_TAKEOVER_AFTER_MS); after that it is taken over.
   */
  private async assignToUser(tenantId: string, serialNumber: string, userId: string, now: Date, options: { checked?: boolean; mayWrite?: () => void } = {}): Promise<OathTokenState> {
    // An import's row asks right before each of its writes (importToken); other callers write always.
    const mayWrite = options.mayWrite ?? (() => undefined);
    let expected: string | undefined;
    if (!options.checked) {
      const current = await this.executeToken(tenantId, serialNumber, now, () => []);
      if (!current.state.exists || current.state.tokenId === undefined) throw notFound('unknown serial number');
      expected = current.state.tokenId;
      await this.options.users.checkCanTakeToken(tenantId, userId, expected, now);
    }
    let claimed = await this.executeToken(tenantId, serialNumber, now, (state) => {
      if (state.userId !== undefined) return [];
      mayWrite();
      return decide({ type: 'AssignToken', data: { userId } }, state, now);
    });
    if (!claimed.appended) {
      const seen = claimed.state;
      const holder = seen.userId!;
      const holds = await this.options.users.holdsToken(tenantId, holder, seen.tokenId!, now);
      if (holder === userId && holds) return seen;
      if (holder !== userId) {
        if (holds) throw conflict('the token is assigned to another user; delete it from that user first');
        if (now.getTime() - (seen.assignedAtMs ?? 0) < CLAIM_TAKEOVER_AFTER_MS) {
          throw conflict('the token is being assigned to another user; if that does not complete, try again in a minute');
        }
      }
      // Over the claim just looked at only: any change since is decided afresh by the caller's retry.
      const again: OathTokenCommand = { type: 'AssignToken', data: { userId, ...(holder === userId ? { renew: true } : { takeOver: true }) } };
      claimed = await this.executeToken(tenantId, serialNumber, now, (state) => {
        if (state.tokenId !== seen.tokenId || state.userId !== holder || state.assignedAtMs !== seen.assignedAtMs) return [];
        mayWrite();
        return decide(again, state, now);
      });
      if (!claimed.appended) throw conflict('the token changed meanwhile; try again');
    }
    const tokenId = claimed.state.tokenId!;
    const claimedByMs = claimed.state.assignedAtMs;
    if (expected !== undefined && tokenId !== expected) throw conflict('the token was replaced meanwhile; try again');
    try {
      await this.give(tenantId, claimed.state, now, conflict, mayWrite);
    } catch (error) {
      if (error instanceof ContractError && error.code !== 'unavailable') {
        await this.executeToken(tenantId, serialNumber, now, (state) =>
          decide({ type: 'UnassignToken', data: { tokenId, userId, reason: `assignment undone: ${error.message}`, claimedByMs } }, state, now),
        );
      }
      throw error;
    }
    return claimed.state;
  }

  /**
   * Gives the token to the user the inventory names for it, under that claim: checked again (the
   * token's aggregate read anew) right before the user's record is appended to, so a claim taken
   * over or renewed meanwhile, or too old, gives nothing (`refuse` says why).
   */
  private async give(tenantId: string, claim: OathTokenState, now: Date, refuse: (reason: string) => ContractError = conflict, mayWrite: () => void = () => undefined): Promise<void> {
    const userId = claim.userId!;
    const held = { tokenId: claim.tokenId!, userId, claimedAtMs: claim.assignedAtMs ?? 0 };
    await this.options.users.giveHardwareToken(
      tenantId,
      userId,
      importedOf(claim),
      {
        claimedAtMs: held.claimedAtMs,
        check: async () => {
          const { state } = await this.executeToken(tenantId, claim.serialNumber!, now, () => []);
          // The claim's age now, never only at the request's own time, which may be old.
          const reason = claimRefusal(state, held, Math.max(now.getTime(), Date.now()));
          if (reason !== undefined) throw refuse(reason);
          mayWrite();
        },
      },
      now,
    );
  }

  /**
   * Loads the token's aggregate, decides, appends with optimistic concurrency (deciding again on a
   * conflict) and writes the inventory entry when something changed (or `reindex` asks).
   */
  private async executeToken(
    tenantId: string,
    serialNumber: string,
    now: Date,
    decideOn: (state: OathTokenState) => ReturnType<typeof decide>,
    reindex = false,
  ): Promise<TokenOutcome> {
    const subject = EventSubjects.oathToken(tenantId, serialNumber);
    for (let attempt = 1; attempt <= MAX_APPEND_ATTEMPTS; attempt++) {
      const loaded = await this.infra(() => this.options.store.load(subject));
      let state = oathTokenDecider.initialState();
      for (const event of loaded.events) if (oathTokenDecider.accepts(event)) state = oathTokenDecider.evolve(state, event);
      const decided = decideOn(state);
      if (decided.length === 0) {
        if (reindex && state.exists) await this.options.inventory.put(tenantId, itemOf(state), loaded.lastSeq);
        return { state, seq: loaded.lastSeq, appended: false };
      }
      const envelopes = decided.map((event) => createEvent(event.type, 1, { tenantId, aggregateId: serialNumber, now, data: event.data as never }));
      try {
        const seq = await this.infra(() => this.options.store.append(subject, envelopes, loaded.lastSeq));
        const next = decided.reduce(oathTokenDecider.evolve, state);
        await this.index(tenantId, next, seq);
        return { state: next, seq, appended: true };
      } catch (error) {
        if (!(error instanceof ConcurrencyError)) throw error;
      }
    }
    throw conflict('the token changed concurrently too often; try again');
  }

  /** A command's write of the entry: best effort. */
  private async index(tenantId: string, state: OathTokenState, seq: number): Promise<void> {
    try {
      await this.options.inventory.put(tenantId, itemOf(state), seq);
    } catch (error) {
      // The events are stored; the projector writes the entry again from them (reindex, which
      // does not swallow its own failure).
      this.options.log.warn('oath inventory write failed', { tenantId, error });
    }
  }

  private infra<T>(call: () => Promise<T>): Promise<T> {
    return storeCall(this.options.log, call);
  }
}

const decide = (command: OathTokenCommand, state: OathTokenState, now: Date) => oathTokenDecider.decide(command, state, now);

function importedOf(state: OathTokenState): ImportedToken {
  return {
    tokenId: state.tokenId!,
    serialNumber: state.serialNumber!,
    sealedSecret: state.sealedSecret!,
    digits: state.digits!,
    period: state.period!,
    algorithm: state.algorithm!,
    ...(state.manufacturer ? { manufacturer: state.manufacturer } : {}),
    ...(state.model ? { model: state.model } : {}),
  };
}

export function itemOf(state: OathTokenState): OathTokenItem {
  return {
    serialNumber: state.serialNumber!,
    tokenId: state.tokenId!,
    state: inventoryState(state),
    ...(state.userId !== undefined ? { userId: state.userId } : {}),
    ...(state.manufacturer ? { manufacturer: state.manufacturer } : {}),
    ...(state.model ? { model: state.model } : {}),
    algorithm: state.algorithm!,
    digits: state.digits!,
    period: state.period!,
    importedAt: new Date(state.importedAtMs!).toISOString(),
    ...(state.activatedAtMs !== undefined ? { activatedAt: new Date(state.activatedAtMs).toISOString() } : {}),
  };
}
