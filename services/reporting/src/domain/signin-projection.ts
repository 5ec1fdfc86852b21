import { ResultDetail, type ChallengeEvent, type DispatchEvent, type EventOf, type SigninResult, type TenantEvent } from '@mfa/contracts';
import { dataKeyGeneration } from '@mfa/crypto';
import type { SigninDetails } from './signin-report.js';

/**
 * How events become sign-in report rows. Pure: a batch of events in, one merged patch per row
 * out. The patches are written with one set-based upsert per batch, and the same precedence rules
 * are applied again in SQL against the stored row, so the result does not depend on how events
 * were split into batches, re-delivered or replayed.
 *
 * Precedence, by stream sequence: the first context (start) wins, the first outcome wins, failed
 * attempts and resends only grow, the latest delivery outcome wins.
 */

/** An event with its stream sequence, which orders events of one stream. */
export interface Sequenced<E> {
  seq: number;
  event: E;
}

/** What a batch changes in one report row; the sequences decide which event's values win. */
export interface SigninPatch extends SigninDetails {
  tenantId: string;
  challengeId: string;
  occurredAt: string;
  requestId: string | null;
  expiresAt: string | null;
  /**
   * The personal data of a v2 start as the event carried it: sealed under the user's data key,
   * opened only when a report is read (so the projection needs no key, the store holds no
   * personal data in clear, and destroying the key erases it here and in every backup).
   */
  pii: string | null;
  /** Generation of the data key `pii` was sealed under; null otherwise. */
  userGen: number | null;
  /**
   * Sequence of the event that carried the full context; null when this patch only saw outcome
   * events, whose identity fields stand in until the start is projected.
   */
  contextSeq: number | null;
  result: SigninResult | null;
  resultDetail: ResultDetail | null;
  completedAt: string | null;
  resultSeq: number | null;
  /** Push: the device whose signed answer is the outcome; null otherwise. */
  deviceId: string | null;
  failedAttempts: number;
  /** Times the code was sent again: the highest resend number seen (a resend event carries its number). */
  resends: number;
  lastEventSeq: number;
}

type Context = SigninDetails & Pick<SigninPatch, 'occurredAt' | 'requestId' | 'expiresAt' | 'pii' | 'userGen'>;
type Outcome = Pick<SigninPatch, 'result' | 'resultDetail' | 'completedAt'> & Partial<Pick<SigninPatch, 'deviceId'>>;

interface Effect {
  context?: Context;
  outcome?: Outcome;
  failedAttempts?: number;
  resends?: number;
}

const failure = (detail: ResultDetail, at: string): Outcome => ({ result: 'failure', resultDetail: detail, completedAt: at });

/** Why a start was refused, as the report words it. */
const DENIED_DETAIL: Record<EventOf<'ChallengeDenied'>['data']['reason'], ResultDetail> = {
  user_blocked: ResultDetail.userBlocked,
  ip_locked: ResultDetail.ipLocked,
  app_password_required: ResultDetail.appPasswordRequired,
  push_suspended: ResultDetail.pushSuspended,
};

type StartEvent = Extract<ChallengeEvent, { type: 'ChallengeStarted' | 'ChallengeRegistrationRequired' | 'ChallengeDenied' | 'ChallengeBypassed' }>;

/**
 * Who signed in, as a start event tells: v1 carries the profile in clear (and an SMS delivery its
 * number); v2 seals it in `pii`, which the row keeps sealed.
 */
function personOf(event: StartEvent): Pick<Context, 'userId' | 'displayName' | 'email' | 'phoneNumber' | 'pii' | 'userGen'> {
  const d = event.data;
  if (event.version === 1 && event.type !== 'ChallengeDenied' && event.type !== 'ChallengeBypassed') {
    const { profile } = event.data;
    const to = event.type === 'ChallengeStarted' ? event.data.delivery?.to : undefined;
    return { userId: d.userId, displayName: profile.displayName ?? null, email: profile.email ?? null, phoneNumber: profile.phoneNumber ?? to ?? null, pii: null, userGen: null };
  }
  const pii = event.data.pii ?? null;
  // The registration the sign-in belongs to: the generation of the key its data is sealed under, or
  // with nothing sealed the one the start names (keyGen); neither (a user unknown, a v1 start): null.
  const userGen = pii === null ? (event.data.keyGen ?? null) : (dataKeyGeneration(pii) ?? null);
  return { userId: d.userId, displayName: null, email: null, phoneNumber: null, pii, userGen };
}

/** The sign-in context both kinds of start events carry; the two fields that differ are given. */
function contextOf(event: StartEvent, differing: Pick<Context, 'authMethod' | 'expiresAt'>): Context {
  const d = event.data;
  return {
    occurredAt: event.occurredAt,
    ...personOf(event),
    // Push (the only method with a device) is not delivered by this release.
    deviceToken: null,
    serverName: d.server.name,
    serverIp: d.server.ip,
    via: d.via ?? 'nats',
    clientIp: d.clientIp ?? null,
    application: d.application ?? null,
    requestId: d.requestId ?? null,
    ...differing,
  };
}

/** What one challenge event says about its report row. */
function effectOf(event: ChallengeEvent): Effect {
  switch (event.type) {
    case 'ChallengeStarted':
      return { context: contextOf(event, { authMethod: event.data.method, expiresAt: event.data.expiresAt }) };
    case 'ChallengeRegistrationRequired': {
      const d = event.data;
      const detail =
        d.reason === 'method_disabled' ? ResultDetail.methodDisabled : d.reason === 'country_not_allowed' ? ResultDetail.countryNotAllowed : ResultDetail.registrationRequired;
      return {
        context: contextOf(event, { authMethod: d.method, expiresAt: null }),
        outcome: failure(detail, event.occurredAt),
      };
    }
    case 'ChallengeDenied':
      return {
        context: contextOf(event, { authMethod: event.data.method, expiresAt: null }),
        outcome: failure(DENIED_DETAIL[event.data.reason], event.occurredAt),
      };
    case 'ChallengeBypassed': {
      const reason = event.data.reason;
      const detail = reason === 'trusted_ip' ? ResultDetail.trustedIp : reason === 'remembered_device' ? ResultDetail.rememberedDevice : ResultDetail.corporateNetwork;
      return {
        context: contextOf(event, { authMethod: null, expiresAt: null }),
        outcome: { result: 'success', resultDetail: detail, completedAt: event.occurredAt },
      };
    }
    case 'ChallengeFraudReported':
      // From the app: the device that reported it; an older fraud's event (or another source) names none.
      return { outcome: { ...failure(ResultDetail.fraud, event.occurredAt), ...deviceOf(event.data) } };
    case 'ChallengeDeniedByUser':
      return { outcome: { ...failure(ResultDetail.deniedByUser, event.occurredAt), ...deviceOf(event.data) } };
    case 'ChallengeUserBlocked':
      return { outcome: failure(ResultDetail.userBlocked, event.occurredAt) };
    case 'ChallengeVoided':
      return { outcome: failure(ResultDetail.userReset, event.occurredAt) };
    case 'ChallengeApproved':
      return { outcome: { result: 'success', resultDetail: ResultDetail.success, completedAt: event.occurredAt, ...deviceOf(event.data) } };
    case 'ChallengeAttemptsExhausted': {
      const detail = event.data.lockedOut
        ? ResultDetail.lockedOut
        : event.data.lastCause === 'reused'
          ? ResultDetail.duplicateCode
          : ResultDetail.invalidCode;
      return { outcome: { ...failure(detail, event.occurredAt), ...deviceOf(event.data) }, failedAttempts: event.data.attempts };
    }
    case 'ChallengeExpired':
      return { outcome: failure(ResultDetail.timedOut, event.occurredAt) };
    case 'ChallengeCodeRejected':
      return { failedAttempts: event.data.attempt };
    case 'ChallengeResendRequested':
      return { resends: event.data.resend };
    default: {
      const unknown: never = event;
      throw new Error(`unhandled challenge event ${(unknown as { type: string }).type}`);
    }
  }
}

/** The device of a push's outcome, when a device's signed answer decided it. */
const deviceOf = (data: { deviceId?: string | undefined }): Pick<SigninPatch, 'deviceId'> | Record<string, never> => (data.deviceId ? { deviceId: data.deviceId } : {});

/** A row started from an event that is not the start: its identity fields, nothing else. */
function placeholder(item: Sequenced<ChallengeEvent>): SigninPatch {
  const { event, seq } = item;
  return {
    tenantId: event.tenantId,
    challengeId: event.data.challengeId,
    occurredAt: event.occurredAt,
    userId: event.data.userId,
    displayName: null,
    email: null,
    phoneNumber: null,
    deviceToken: null,
    authMethod: 'method' in event.data ? event.data.method : null,
    serverName: event.data.server.name,
    serverIp: event.data.server.ip,
    // Outcome events do not say; the start's context replaces it.
    via: 'nats',
    clientIp: null,
    application: null,
    requestId: null,
    expiresAt: null,
    pii: null,
    userGen: null,
    contextSeq: null,
    result: null,
    resultDetail: null,
    completedAt: null,
    resultSeq: null,
    deviceId: null,
    failedAttempts: 0,
    resends: 0,
    lastEventSeq: seq,
  };
}

const key = (tenantId: string, id: string) => `${tenantId}\u0000${id}`;
const bySeq = <E>(a: Sequenced<E>, b: Sequenced<E>) => a.seq - b.seq;

/**
 * Merges a batch of challenge events into one patch per (tenant, challenge), because one upsert
 * statement may touch each row only once. Events are applied in stream order whatever order
 * they arrived in.
 */
export function foldChallengeEvents(items: readonly Sequenced<ChallengeEvent>[]): SigninPatch[] {
  const patches = new Map<string, SigninPatch>();
  for (const item of [...items].sort(bySeq)) {
    const k = key(item.event.tenantId, item.event.data.challengeId);
    let patch = patches.get(k);
    if (!patch) {
      patch = placeholder(item);
      patches.set(k, patch);
    }
    const effect = effectOf(item.event);
    if (effect.context && patch.contextSeq === null) Object.assign(patch, effect.context, { contextSeq: item.seq });
    if (effect.outcome && patch.resultSeq === null) Object.assign(patch, effect.outcome, { resultSeq: item.seq });
    if (effect.failedAttempts !== undefined) patch.failedAttempts = Math.max(patch.failedAttempts, effect.failedAttempts);
    if (effect.resends !== undefined) patch.resends = Math.max(patch.resends, effect.resends);
    patch.lastEventSeq = Math.max(patch.lastEventSeq, item.seq);
  }
  return [...patches.values()];
}

export interface DeliveryPatch {
  tenantId: string;
  challengeId: string;
  status: 'sent' | 'failed' | 'delivered' | 'undelivered';
  provider: string | null;
  messageId: string | null;
  /** The provider's error: the last failure of a send that failed, the code of an undelivered receipt. */
  error: string | null;
  attempts: number;
  occurredAt: string;
  seq: number;
}

/** The latest delivery outcome per challenge in a batch. */
export function foldDispatchEvents(items: readonly Sequenced<DispatchEvent>[]): DeliveryPatch[] {
  const latest = new Map<string, DeliveryPatch>();
  for (const { event, seq } of [...items].sort(bySeq)) {
    const common = {
      tenantId: event.tenantId,
      challengeId: event.data.challengeId,
      occurredAt: event.occurredAt,
      seq,
    };
    const patch: DeliveryPatch = deliveryPatch(event, common);
    const previous = latest.get(key(patch.tenantId, patch.challengeId));
    if (previous && receiptOverrides(previous, patch)) continue;
    latest.set(key(patch.tenantId, patch.challengeId), patch);
  }
  return [...latest.values()];
}

/**
 * A receipt can be recorded before the SmsSent of its own message (an SMSC may answer within
 * milliseconds of accepting it): `sent` never replaces what a receipt said about the same message.
 * The repository's upsert applies the same rule across batches, both ways: a receipt projected
 * after the `sent` of its message replaces it, whatever their sequences.
 */
export function receiptOverrides(current: Pick<DeliveryPatch, 'status' | 'messageId'>, next: Pick<DeliveryPatch, 'status' | 'messageId'>): boolean {
  return next.status === 'sent' && (current.status === 'delivered' || current.status === 'undelivered') && current.messageId === next.messageId;
}

function deliveryPatch(event: DispatchEvent, common: Pick<DeliveryPatch, 'tenantId' | 'challengeId' | 'occurredAt' | 'seq'>): DeliveryPatch {
  switch (event.type) {
    case 'SmsSent':
      return { ...common, attempts: event.data.attempts, status: 'sent', provider: event.data.provider, messageId: event.data.providerMessageId, error: null };
    case 'VoiceCallPlaced':
      return { ...common, attempts: event.data.attempts, status: 'sent', provider: event.data.provider, messageId: event.data.providerCallId, error: null };
    case 'SmsDeliveryReported':
      return { ...common, attempts: 1, status: event.data.status, provider: event.data.provider, messageId: event.data.providerMessageId, error: event.data.errorCode ?? null };
    case 'PushSent': {
      const first = event.data.sent[0];
      return { ...common, attempts: 1, status: 'sent', provider: first?.provider ?? 'poll', messageId: first?.providerMessageId ?? null, error: null };
    }
    case 'PushDeliveryFailed': {
      const last = event.data.failures.at(-1);
      return { ...common, attempts: 1, status: 'failed', provider: last?.provider ?? null, messageId: null, error: last?.error.slice(0, 200) ?? null };
    }
    case 'SmsDeliveryFailed':
    case 'VoiceCallFailed': {
      const last = event.data.failures.at(-1);
      return { ...common, attempts: event.data.attempts, status: 'failed', provider: last?.provider ?? null, messageId: null, error: last?.error.slice(0, 200) ?? null };
    }
  }
}

/**
 * The report's view of a tenant: known (`active`, TenantCreated), deleted (TenantDeleted: unknown to
 * every report query, its rows kept until the offboarding ends) or erased (TenantErased: its rows
 * deleted, see SigninsRepository.applyTenants). A TenantCreated after TenantErased is a new tenant
 * under the same id: known again, with none of the former tenant's rows.
 */
export type TenantState = 'active' | 'deleted' | 'erased';

/**
 * What a batch says of one tenant. `state` is the one its last lifecycle event (by stream sequence)
 * leaves, `stateAt` and `stateSeq` that event's time and sequence: the store takes it only from an
 * event later than the one it holds, so a re-delivered or replayed older event changes nothing. The
 * times are the latest creation, deletion and erasure of the batch (null: none): the store keeps the
 * latest of each, whatever order batches are applied in, and deletes the rows of a former tenant by them.
 */
export interface TenantPatch {
  tenantId: string;
  state: TenantState;
  stateAt: string;
  stateSeq: number;
  createdAt: string | null;
  deletedAt: string | null;
  erasedAt: string | null;
}

const latestOf = (a: string | null, b: string | null): string | null => (a === null ? b : b === null || Date.parse(a) >= Date.parse(b) ? a : b);

/** The lifecycle of the tenants of a batch, in stream order; settings changes do not concern the report. */
export function foldTenantEvents(items: readonly Sequenced<TenantEvent>[]): TenantPatch[] {
  const patches = new Map<string, TenantPatch>();
  for (const { event, seq } of [...items].sort(bySeq)) {
    if (event.type === 'TenantSettingsChanged') continue;
    const patch = patches.get(event.tenantId) ?? { tenantId: event.tenantId, state: 'active', stateAt: event.occurredAt, stateSeq: seq, createdAt: null, deletedAt: null, erasedAt: null };
    patches.set(event.tenantId, patch);
    patch.stateAt = event.occurredAt;
    patch.stateSeq = seq;
    switch (event.type) {
      case 'TenantCreated':
        patch.state = 'active';
        patch.createdAt = latestOf(patch.createdAt, event.occurredAt);
        break;
      case 'TenantDeleted':
        patch.state = 'deleted';
        patch.deletedAt = latestOf(patch.deletedAt, event.occurredAt);
        break;
      case 'TenantErased':
        patch.state = 'erased';
        patch.deletedAt = latestOf(patch.deletedAt, event.data.deletedAt);
        patch.erasedAt = latestOf(patch.erasedAt, event.occurredAt);
        break;
      default: {
        const unknown: never = event;
        throw new Error(`unhandled tenant event ${(unknown as { type: string }).type}`);
      }
    }
  }
  return [...patches.values()];
}
