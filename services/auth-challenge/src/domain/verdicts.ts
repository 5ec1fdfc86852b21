import {
  conflict,
  forbidden,
  ContractError,
  notFound,
  rateLimited,
  unavailable,
  type ChallengeReason,
  type ChallengeResendReply,
  type ChallengeStartReply,
  type ChallengeStatusReply,
  type ChallengeVerifyReply,
  type EventOf,
  type EventVersion,
  type Method,
  EventSubjects,
} from '@mfa/contracts';
import { parseWrappedDataKey } from '@mfa/crypto';

/**
 * The challenge decisions are taken atomically inside Redis (adapters/scripts.ts), except the
 * TOTP code comparison (totp-match.ts); this module is the pure half: given the script's verdict
 * (parsed by adapters/script-replies.ts), it says what to answer and which event records it.
 * Expected outcomes are events of their own (ChallengeApproved, ChallengeCodeRejected, ...).
 */

export interface Profile {
  displayName?: string;
  email?: string;
  phoneNumber?: string;
  language?: string;
}

/**
 * `dataKey`: the user's data key, still wrapped, from the projection; the personal data of the
 * event is sealed under it. Absent only for unknown users (nothing personal to seal) and for
 * projections written before data keys, which user-settings re-projects at its first boot.
 */
export type ThrottleScope = 'user' | 'phone' | 'ip' | 'push';

export type StartVerdict =
  /**
   * `totp`: a TOTP challenge's tokens, for its verify (see TotpTokens). `pushSuspendedNow`: this start
   * suspended push for the user (MFA fatigue) and took another method.
   */
  | { kind: 'pending'; method: Method; profile: Profile; dataKey?: string; challengePii?: string; totp?: TotpTokens; pushSuspendedNow?: boolean }
  | { kind: 'registration_required'; method: Method | null; reason: ChallengeReason; profile: Profile; dataKey?: string; challengePii?: string }
  /** The user is blocked (users.block, or a fraud report), or the client IP is locked: denied, and recorded. */
  | {
      kind: 'blocked';
      method: Method | null;
      reason: 'user_blocked' | 'ip_locked' | 'app_password_required' | 'push_suspended';
      profile: Profile;
      dataKey?: string;
      challengePii?: string;
      /** push_suspended by this very start (the refusals reached the tenant's limit), not a suspension already in force. */
      suspendedNow?: boolean;
    }
  /** No second factor needed (trusted IP, corporate network, remembered browser): approved at start. */
  | { kind: 'bypassed'; reason: 'trusted_ip' | 'remembered_device' | 'corporate_network'; profile: Profile; dataKey?: string; challengePii?: string }
  | { kind: 'unknown_tenant' }
  | { kind: 'not_found' }
  /**
   * A throttle: the user's own SMS and voice sends, their phone number's (sends to it across users,
   * counted by dispatch), or the client IP's starts that send something (counted by fraud).
   */
  /** `pushSuspendedNow`: this start suspended push (MFA fatigue) while choosing another method. */
  | { kind: 'rate_limited'; retryAfterSeconds: number; scope: ThrottleScope; pushSuspendedNow?: boolean }
  | { kind: 'locked'; retryAfterSeconds: number }
  | { kind: 'capped' }
  /** The user is not in Redis, and Redis does not hold the complete projection of the user's slot: unknown, not absent. */
  | { kind: 'projection_missing' }
  /** A known user, and the tenant's settings not in this instance's memory (their lookup failed): not decided under the defaults. */
  | { kind: 'tenant_unread' };

export type VerifyVerdict =
  /** `remembered`: the browser is remembered (the start asked, the tenant allows): the reply carries the token. */
  | { kind: 'approved'; userId: string; method: Method; tokenId?: string; step?: number; remembered?: boolean }
  | { kind: 'rejected'; userId: string; method: Method; attempts: number; remaining: number; cause: 'mismatch' | 'reused'; guard: FailureGuard; clientIp?: string }
  | { kind: 'exhausted'; userId: string; method: Method; attempts: number; cause: 'mismatch' | 'reused'; guard: FailureGuard; clientIp?: string }
  /** The wrong code reached the tenant's lockout threshold: the challenge ends and the user is locked out. */
  | { kind: 'locked_out'; userId: string; method: Method; attempts: number; cause: 'mismatch' | 'reused'; guard: FailureGuard; clientIp?: string }
  | { kind: 'expired'; userId: string; method: Method; firstTime: boolean; clientIp?: string }
  | { kind: 'conflict'; status: string }
  /** A voice (or push) challenge: answered on the phone, never with a code. */
  | { kind: 'elsewhere'; method: Method }
  /** The user denied the push in the app. */
  | { kind: 'denied_by_user'; userId: string; method: Method; clientIp?: string }
  /** The user was blocked after the challenge started: denied without comparing anything. */
  | { kind: 'user_blocked'; userId: string; method: Method; clientIp?: string }
  /** The user was reset or erased after the challenge started: its method is no longer theirs, denied without comparing anything. */
  | { kind: 'voided'; userId: string; method: Method; clientIp?: string }
  /** A device answered a challenge that is not a push. */
  | { kind: 'not_push'; method: string }
  | { kind: 'locked'; retryAfterSeconds: number }
  | { kind: 'capped' }
  | { kind: 'not_found' };

/** What the resend script decided (adapters/scripts.ts, resendScript). */
export type ResendVerdict =
  /** `resend`: its number for the challenge, from 1; `expiresAt`: the challenge's (ms). */
  | { kind: 'resent'; userId: string; resend: number; remaining: number; expiresAt: number }
  | { kind: 'not_found' }
  /** Not an SMS challenge (`method`), or no longer pending or past its expiry (`status`). */
  | { kind: 'conflict'; method?: string; status?: string }
  /** The challenge's sends (the start's included) reached `maxSends`: waiting does not help, a new start does. */
  | { kind: 'exhausted'; maxSends: number }
  /** Too soon after the last send (`interval`), the phone number's sends across users, or the user's own. */
  | { kind: 'rate_limited'; retryAfterSeconds: number; scope: 'interval' | 'phone' | 'user' }
  | { kind: 'locked'; retryAfterSeconds: number }
  | { kind: 'capped' }
  /** The user is blocked: nothing is sent (the challenge is denied at its next verify). */
  | { kind: 'user_blocked' }
  /** The user was reset or erased since the start: nothing is sent (the challenge is denied at its next verify). */
  | { kind: 'voided' }
  /** The tenant's settings, changed since the start, no longer allow SMS, or not to this user's phone. */
  | { kind: 'not_allowed'; reason: 'method_disabled' | 'country_not_allowed' };

/** The user's brute-force counters right after a wrong code (recorded in the event; see @mfa/contracts). */
export type FailureGuard = NonNullable<EventOf<'ChallengeCodeRejected'>['data']['guard']>;

/** A TOTP token as the Redis projection holds it: the secret masked with the user's projection key. */
export interface MaskedTotpToken {
  tokenId: string;
  digits: 6 | 8;
  period: number;
  /** The HMAC's hash (SHA-256 for some hardware tokens). */
  algorithm: 'SHA1' | 'SHA256';
  nonce: Uint8Array;
  masked: Uint8Array;
  lastStep: number;
}

/**
 * A user's active TOTP tokens as the scripts answer them, unparsed: (tokenId, spec, last accepted
 * step)* (script-replies.ts reads them: maskedTokensOf, tokenSpecsOf).
 */
export type TotpTokens = readonly string[];

/**
 * What the verify script answers: a verdict, or, for a pending TOTP challenge whose code
 * auth-challenge could not check beforehand with current tokens, the user's tokens, so that it
 * checks the code and records the outcome with a second call (Redis never sees the code, the
 * secret or the key that unmasks it).
 */
export type CodeCheck = VerifyVerdict | { kind: 'totp_check'; userId: string; tokens: TotpTokens };

export class VerdictError extends Error {
  override name = 'VerdictError';
}

/** An event to record, before it gets its envelope (id, time, trace) from the caller. */
export type PendingEvent =
  | { type: 'ChallengeStarted'; version: 2; data: EventVersion<'ChallengeStarted', 2>['data'] }
  | { type: 'ChallengeRegistrationRequired'; version: 2; data: EventVersion<'ChallengeRegistrationRequired', 2>['data'] }
  // Only while a user's projection has no data key yet (see StartVerdict): the profile in clear.
  | { type: 'ChallengeStarted'; version: 1; data: EventVersion<'ChallengeStarted', 1>['data'] }
  | { type: 'ChallengeRegistrationRequired'; version: 1; data: EventVersion<'ChallengeRegistrationRequired', 1>['data'] }
  | { type: 'ChallengeApproved'; data: EventOf<'ChallengeApproved'>['data'] }
  | { type: 'ChallengeCodeRejected'; data: EventOf<'ChallengeCodeRejected'>['data'] }
  | { type: 'ChallengeAttemptsExhausted'; data: EventOf<'ChallengeAttemptsExhausted'>['data'] }
  | { type: 'ChallengeExpired'; data: EventOf<'ChallengeExpired'>['data'] }
  | { type: 'ChallengeDenied'; data: EventOf<'ChallengeDenied'>['data'] }
  | { type: 'ChallengeBypassed'; data: EventOf<'ChallengeBypassed'>['data'] }
  | { type: 'ChallengeResendRequested'; data: EventOf<'ChallengeResendRequested'>['data'] }
  | { type: 'ChallengeDeniedByUser'; data: EventOf<'ChallengeDeniedByUser'>['data'] }
  | { type: 'ChallengeUserBlocked'; data: EventOf<'ChallengeUserBlocked'>['data'] }
  | { type: 'ChallengeVoided'; data: EventOf<'ChallengeVoided'>['data'] };

export interface StartContext {
  challengeId: string;
  userId: string;
  expiresAt: Date;
  maxAttempts: number;
  /** The instance's own identity, or for a RADIUS sign-in the RADIUS client and its NAS. */
  server: { name: string; ip: string };
  /** `radius`: started by the RADIUS front (the start events say so); undefined for the NATS API. */
  via?: 'radius' | undefined;
  clientIp?: string | undefined;
  application?: string | undefined;
  requestId?: string | undefined;
  /** The SMS code sealed for dispatch; only used when the verdict's method is sms. */
  sealedSmsCode: () => string;
  /** How a voice challenge's call goes (the tenant's settings at start); only used when the verdict's method is voice. */
  voice?: { callerId: string; pinMode: boolean; fraudCode: string | null } | undefined;
  /** Display name, e-mail and phone sealed under the user's (wrapped) data key; undefined when there are none. */
  sealedPersonalData: (profile: Profile, dataKey: string) => string | undefined;
  /**
   * The tenant's `reportFields` set to false: left out of the event's personal data (then sealed
   * here rather than copied from the projection's pre-sealed `challengePii`, which holds them all).
   */
  omitted?: { displayName?: boolean; email?: boolean } | undefined;
}

/** The profile as the tenant's report keeps it. */
function reported(profile: Profile, omitted: StartContext['omitted']): Profile {
  if (!omitted?.displayName && !omitted?.email) return profile;
  const { displayName, email, ...rest } = profile;
  return { ...rest, ...(displayName && !omitted.displayName ? { displayName } : {}), ...(email && !omitted.email ? { email } : {}) };
}

interface Outcome<R> {
  reply: R;
  event?: PendingEvent;
}

export function decideStart(verdict: StartVerdict, ctx: StartContext): Outcome<ChallengeStartReply> {
  const base = {
    challengeId: ctx.challengeId,
    userId: ctx.userId,
    server: ctx.server,
    ...(ctx.via ? { via: ctx.via } : {}),
    ...(ctx.clientIp ? { clientIp: ctx.clientIp } : {}),
    ...(ctx.application ? { application: ctx.application } : {}),
    ...(ctx.requestId ? { requestId: ctx.requestId } : {}),
  };
  const expiresAt = ctx.expiresAt.toISOString();
  const omitting = Boolean(ctx.omitted?.displayName || ctx.omitted?.email);
  /** The event's sealed personal data: the projection's pre-sealed copy, unless the tenant leaves fields out. */
  const piiOf = (v: { profile: Profile; challengePii?: string | undefined }, dataKey: string) =>
    omitting ? ctx.sealedPersonalData(reported(v.profile, ctx.omitted), dataKey) : (v.challengePii ?? ctx.sealedPersonalData(v.profile, dataKey));
  switch (verdict.kind) {
    case 'pending': {
      const started = { method: verdict.method, expiresAt, maxAttempts: ctx.maxAttempts };
      const { phoneNumber, language } = verdict.profile;
      if ((verdict.method === 'sms' || verdict.method === 'voice') && !phoneNumber) throw new VerdictError(`${verdict.method} challenge for a user without a phone number`);
      if (verdict.method === 'voice' && (!ctx.voice || verdict.dataKey === undefined)) throw new VerdictError('voice challenge without the tenant’s voice settings or the user’s data key');
      // Where to send is in the sealed personal data (v2) or, without a data key, in clear (v1).
      const delivery = () => ({ channel: 'sms' as const, sealedCode: ctx.sealedSmsCode(), ...(language ? { language } : {}) });
      const event: PendingEvent =
        verdict.dataKey !== undefined
          ? {
              type: 'ChallengeStarted',
              version: 2,
              data: {
                ...base,
                ...personOf(piiOf(verdict, verdict.dataKey), verdict.dataKey),
                ...started,
                ...(verdict.method === 'sms' ? { delivery: delivery() } : {}),
                ...(verdict.method === 'voice' ? { delivery: { channel: 'voice' as const, ...(language ? { language } : {}), ...ctx.voice! } } : {}),
                ...(verdict.method === 'push' ? { delivery: { channel: 'push' as const } } : {}),
              },
            }
          : {
              type: 'ChallengeStarted',
              version: 1,
              data: {
                ...base,
                profile: reported(verdict.profile, ctx.omitted),
                ...started,
                ...(verdict.method === 'sms' ? { delivery: { ...delivery(), to: phoneNumber! } } : {}),
              },
            };
      const reply: ChallengeStartReply = { challengeId: ctx.challengeId, status: 'pending', method: verdict.method, expiresAt };
      if (verdict.method === 'sms' || verdict.method === 'voice') reply.sentTo = maskPhoneNumber(phoneNumber!);
      return { reply, event };
    }
    case 'registration_required': {
      const required = { method: verdict.method, reason: verdict.reason };
      const event: PendingEvent =
        verdict.dataKey !== undefined
          ? {
              type: 'ChallengeRegistrationRequired',
              version: 2,
              data: { ...base, ...personOf(piiOf(verdict, verdict.dataKey), verdict.dataKey), ...required },
            }
          : hasPersonalData(reported(verdict.profile, ctx.omitted))
            ? { type: 'ChallengeRegistrationRequired', version: 1, data: { ...base, profile: reported(verdict.profile, ctx.omitted), ...required } }
            : { type: 'ChallengeRegistrationRequired', version: 2, data: { ...base, ...required } };
      return {
        reply: {
          challengeId: ctx.challengeId,
          status: 'registration_required',
          method: verdict.method,
          expiresAt,
          reason: verdict.reason,
        },
        event,
      };
    }
    case 'blocked': {
      // Without a data key (a projection before data keys) nothing personal is copied: the report
      // still has the user id.
      const pii = verdict.dataKey !== undefined ? piiOf(verdict, verdict.dataKey) : undefined;
      return {
        reply: { challengeId: ctx.challengeId, status: 'denied', method: verdict.method, expiresAt, reason: verdict.reason },
        event: { type: 'ChallengeDenied', data: { ...base, ...personOf(pii, verdict.dataKey), method: verdict.method, reason: verdict.reason } },
      };
    }
    case 'bypassed': {
      const pii = verdict.dataKey !== undefined ? piiOf(verdict, verdict.dataKey) : undefined;
      return {
        reply: { challengeId: ctx.challengeId, status: 'approved', method: null, expiresAt, reason: verdict.reason },
        event: { type: 'ChallengeBypassed', data: { ...base, ...personOf(pii, verdict.dataKey), reason: verdict.reason } },
      };
    }
    case 'unknown_tenant':
      throw notFound('unknown tenant');
    case 'not_found':
      throw notFound('unknown user');
    case 'rate_limited':
      throw rateLimited(`${THROTTLED[verdict.scope]}; try again in ${verdict.retryAfterSeconds} s`, verdict.retryAfterSeconds);
    case 'locked':
      throw lockedOut(verdict.retryAfterSeconds);
    case 'capped':
      throw capped();
    case 'projection_missing':
      // Never registration_required for a user who may exist: that would send them to register
      // a new phone, with only a password behind it.
      throw unavailable('the user directory is being rebuilt; try again in a few seconds');
    case 'tenant_unread':
      throw unavailable("the tenant's settings could not be read; try again in a few seconds");
  }
}

const THROTTLED: Record<ThrottleScope, string> = {
  user: 'too many codes sent to this user',
  phone: "too many codes sent to this user's phone number",
  ip: 'too many sign-ins sending codes or notifications from this client IP',
  push: 'a push to this user is still waiting for an answer, or too many were sent lately',
};

/**
 * Where a code or call goes, as the sign-in page (or a RADIUS Reply-Message) may show it: every
 * digit but the last two replaced by `*`, anything else (the leading `+`) kept.
 */
export function maskPhoneNumber(phoneNumber: string): string {
  let shown = 2;
  const out = phoneNumber.split('');
  for (let i = out.length - 1; i >= 0; i--) {
    const c = out[i]!;
    if (c < '0' || c > '9') continue;
    if (shown > 0) shown--;
    else out[i] = '*';
  }
  return out.join('');
}

/** The sealed personal data, or with nothing to seal the data key's generation (see ChallengeContextV2.keyGen). */
const personOf = (pii: string | undefined, dataKey: string | undefined) => {
  if (pii !== undefined) return { pii };
  const keyGen = dataKey === undefined ? undefined : parseWrappedDataKey(dataKey)?.gen;
  return keyGen === undefined ? {} : { keyGen };
};
const hasPersonalData = (p: Profile) => Boolean(p.displayName || p.email || p.phoneNumber);

/** Too many wrong codes for this user across challenges: no guesses until the lockout ends. */
const lockedOut = (seconds: number) =>
  rateLimited(`too many wrong codes for this user; locked for ${seconds} s`, seconds);

/**
 * The cap on consecutive wrong codes (NIST SP 800-63B §5.2.2) is reached: no guesses until an
 * administrator unlocks the user; waiting does not help.
 */
const capped = () =>
  rateLimited('too many consecutive wrong codes for this user; an administrator must unlock the user');

export function decideVerify(
  verdict: VerifyVerdict,
  ctx: { challengeId: string; server: { name: string; ip: string }; deviceId?: string | undefined },
): Outcome<ChallengeVerifyReply> {
  const id = ctx.challengeId;
  /** What every outcome event of the challenge records: whose challenge, which method, where decided (and, for denials, from where it was started). */
  const outcomeOf = (v: { userId: string; method: Method; clientIp?: string }): EventOf<'ChallengeExpired'>['data'] => ({
    challengeId: id,
    userId: v.userId,
    method: v.method,
    server: ctx.server,
    ...(v.clientIp ? { clientIp: v.clientIp } : {}),
  });
  switch (verdict.kind) {
    case 'approved': {
      const data: EventOf<'ChallengeApproved'>['data'] = outcomeOf(verdict);
      if (verdict.tokenId) data.tokenId = verdict.tokenId;
      if (verdict.step !== undefined) data.step = verdict.step;
      if (ctx.deviceId) data.deviceId = ctx.deviceId;
      return { reply: { challengeId: id, status: 'approved' }, event: { type: 'ChallengeApproved', data } };
    }
    case 'rejected':
      return {
        reply: { challengeId: id, status: 'pending', reason: 'invalid_code' },
        event: {
          type: 'ChallengeCodeRejected',
          data: { ...outcomeOf(verdict), attempt: verdict.attempts, attemptsRemaining: verdict.remaining, cause: verdict.cause, guard: verdict.guard },
        },
      };
    case 'exhausted':
      return {
        reply: { challengeId: id, status: 'denied', reason: 'too_many_attempts' },
        event: {
          type: 'ChallengeAttemptsExhausted',
          data: { ...outcomeOf(verdict), attempts: verdict.attempts, lastCause: verdict.cause, guard: verdict.guard, ...(ctx.deviceId ? { deviceId: ctx.deviceId } : {}) },
        },
      };
    case 'locked_out':
      return {
        reply: { challengeId: id, status: 'denied', reason: 'locked_out' },
        event: {
          type: 'ChallengeAttemptsExhausted',
          data: { ...outcomeOf(verdict), attempts: verdict.attempts, lastCause: verdict.cause, guard: verdict.guard, lockedOut: true, ...(ctx.deviceId ? { deviceId: ctx.deviceId } : {}) },
        },
      };
    case 'expired': {
      const reply: ChallengeVerifyReply = { challengeId: id, status: 'denied', reason: 'expired' };
      if (!verdict.firstTime) return { reply };
      return { reply, event: { type: 'ChallengeExpired', data: outcomeOf(verdict) } };
    }
    case 'conflict':
      throw conflict(`challenge already completed (${verdict.status})`);
    case 'elsewhere':
      throw conflict(`a ${verdict.method} challenge is answered on the ${verdict.method === 'push' ? "user's device" : 'phone'}, not with a code: poll challenge.status`);
    case 'denied_by_user':
      return {
        reply: { challengeId: id, status: 'denied', reason: 'denied_by_user' },
        event: { type: 'ChallengeDeniedByUser', data: { ...outcomeOf(verdict), ...(ctx.deviceId ? { deviceId: ctx.deviceId } : {}) } },
      };
    case 'user_blocked':
      return { reply: { challengeId: id, status: 'denied', reason: 'user_blocked' }, event: { type: 'ChallengeUserBlocked', data: outcomeOf(verdict) } };
    case 'voided':
      return { reply: { challengeId: id, status: 'denied', reason: 'method_not_registered' }, event: { type: 'ChallengeVoided', data: outcomeOf(verdict) } };
    case 'not_push':
      throw notFound('unknown challenge');
    case 'locked':
      throw lockedOut(verdict.retryAfterSeconds);
    case 'capped':
      throw capped();
    case 'not_found':
      throw notFound('unknown challenge');
  }
}

/**
 * challenge.resend: the challenge stays pending and its code goes out again; dispatch sends it on
 * ChallengeResendRequested. Refusals change nothing and record nothing.
 */
export function decideResend(
  verdict: ResendVerdict,
  ctx: { challengeId: string; server: { name: string; ip: string }; minIntervalSeconds: number },
): Outcome<ChallengeResendReply> {
  switch (verdict.kind) {
    case 'resent':
      return {
        reply: { challengeId: ctx.challengeId, status: 'pending', resendsRemaining: verdict.remaining },
        event: {
          type: 'ChallengeResendRequested',
          data: {
            challengeId: ctx.challengeId,
            userId: verdict.userId,
            method: 'sms',
            server: ctx.server,
            resend: verdict.resend,
            expiresAt: new Date(verdict.expiresAt).toISOString(),
          },
        },
      };
    case 'not_found':
      throw notFound('unknown challenge');
    case 'conflict':
      if (verdict.method !== undefined) throw conflict(`only an SMS challenge's code can be sent again${verdict.method ? ` (this one is ${verdict.method})` : ''}`);
      if (verdict.status === 'expired') throw conflict('the challenge has expired; start a new one');
      throw conflict(`challenge already completed (${verdict.status ?? 'completed'})`);
    case 'exhausted':
      throw rateLimited(`this challenge's code was sent ${verdict.maxSends} times already; start a new challenge`);
    case 'rate_limited': {
      const why = verdict.scope === 'interval' ? `the code was sent less than ${ctx.minIntervalSeconds} s ago` : THROTTLED[verdict.scope];
      throw rateLimited(`${why}; try again in ${verdict.retryAfterSeconds} s`, verdict.retryAfterSeconds);
    }
    case 'locked':
      throw lockedOut(verdict.retryAfterSeconds);
    case 'capped':
      throw capped();
    case 'user_blocked':
      throw forbidden('the user is blocked: nothing is sent');
    case 'voided':
      throw forbidden("the user's MFA was reset since the challenge started: nothing is sent");
    case 'not_allowed':
      throw forbidden(
        verdict.reason === 'country_not_allowed'
          ? "the tenant's SMS country rules no longer allow this user's phone: nothing is sent"
          : "SMS is no longer among the tenant's enabled methods: nothing is sent",
      );
  }
}

/**
 * Whether the tenant's country rules (`sms.allowedCountries`, `null` = every country, and
 * `blockedCountries`) let a phone in `country` ('' = unknown) be texted or called: the start
 * script's rule. A phone of unknown country passes only when every country is allowed.
 */
export function phoneCountryAllowed(sms: { allowedCountries: readonly string[] | null; blockedCountries: readonly string[] }, country: string): boolean {
  if (sms.allowedCountries !== null && (country === '' || !sms.allowedCountries.includes(country))) return false;
  return country === '' || !sms.blockedCountries.includes(country);
}

/** challenge.status: read-only; a pending challenge past its lifetime reads as denied/expired. */
export function decideStatus(
  challengeId: string,
  record: { status: string; reason: string; expiresAt: number; method?: string; deliveryFailed?: boolean; userMethods?: readonly string[] },
  now: Date,
  usable: readonly string[] = [],
): ChallengeStatusReply {
  if (record.status === 'pending' && record.deliveryFailed) {
    // No provider delivered the SMS: this challenge cannot succeed; the user's other methods can.
    const fallbackMethods = (record.userMethods ?? []).filter((m): m is Method => m !== record.method && usable.includes(m));
    return { challengeId, status: 'denied', reason: 'delivery_failed', fallbackMethods };
  }
  if (record.status === 'pending' && now.getTime() >= record.expiresAt) {
    return { challengeId, status: 'denied', reason: 'expired' };
  }
  const status = record.status as ChallengeVerifyReply['status'];
  if (!['pending', 'approved', 'denied', 'registration_required'].includes(status)) {
    throw new ContractError('internal', 'challenge in an unknown state');
  }
  const reply: ChallengeVerifyReply = { challengeId, status };
  if (record.reason) reply.reason = record.reason as ChallengeReason;
  return reply;
}

/** The subject an event is recorded on: one per event type (and per method for starts). */
export function subjectOf(event: PendingEvent): string {
  switch (event.type) {
    case 'ChallengeStarted':
      return EventSubjects.challengeStarted(event.data.method);
    case 'ChallengeRegistrationRequired':
      return EventSubjects.challengeRegistrationRequired;
    case 'ChallengeApproved':
      return EventSubjects.challengeApproved;
    case 'ChallengeCodeRejected':
      return EventSubjects.challengeCodeRejected;
    case 'ChallengeAttemptsExhausted':
      return EventSubjects.challengeAttemptsExhausted;
    case 'ChallengeExpired':
      return EventSubjects.challengeExpired;
    case 'ChallengeDenied':
      return EventSubjects.challengeDenied;
    case 'ChallengeBypassed':
      return EventSubjects.challengeBypassed;
    case 'ChallengeResendRequested':
      return EventSubjects.challengeResendRequested;
    case 'ChallengeDeniedByUser':
      return EventSubjects.challengeDeniedByUser;
    case 'ChallengeUserBlocked':
      return EventSubjects.challengeUserBlocked;
    case 'ChallengeVoided':
      return EventSubjects.challengeVoided;
  }
}
