import { methodOf, type ChallengeReason, type Method } from '@mfa/contracts';
import {
  VerdictError,
  type CodeCheck,
  type FailureGuard,
  type MaskedTotpToken,
  type Profile,
  type ResendVerdict,
  type StartVerdict,
  type TotpTokens,
  type VerifyVerdict,
} from '../domain/verdicts.js';

/** The Lua scripts answer flat string arrays (see scripts.ts); these turn them into the domain's verdicts. */

const text = (v: string | undefined) => (v === undefined || v === '' ? undefined : v);
const method = (v: string | undefined): Method => {
  const m = methodOf(v ?? '');
  if (!m) throw new VerdictError(`unknown method in challenge: ${String(v)}`);
  return m;
};
const cause = (v: string | undefined) => (v === 'reused' ? 'reused' : 'mismatch');

function profileOf(raw: readonly string[]): Profile {
  const p: Profile = {};
  const [displayName, email, phoneNumber, language] = [raw[3], raw[4], raw[5], raw[6]].map(text);
  if (displayName) p.displayName = displayName;
  if (email) p.email = email;
  if (phoneNumber) p.phoneNumber = phoneNumber;
  if (language) p.language = language;
  return p;
}

/** The user's wrapped data key, when the projection carries one (it does from layout v2 on). */
const dataKeyOf = (raw: readonly string[]) => {
  const dataKey = text(raw[7]);
  const challengePii = text(raw[8]);
  return { ...(dataKey ? { dataKey } : {}), ...(challengePii ? { challengePii } : {}) };
};

/** The fields of start's reply before a TOTP challenge's tokens. */
const START_FIELDS = 9;

/**
 * start's reply: {status, method, reason, displayName, email, phoneNumber, language, dataKey,
 * challengePii}, then for a pending TOTP challenge (tokenId, spec, lastStep)*; or a refusal.
 */
export function parseStartVerdict(raw: readonly string[]): StartVerdict {
  switch (raw[0]) {
    case 'pending': {
      const m = method(raw[1]);
      // A TOTP challenge's tokens follow (the kept reply, which the outbox relay parses, has none).
      const totp = m === 'totp' && raw.length > START_FIELDS ? { totp: raw.slice(START_FIELDS) } : {};
      // push_suspended: this start suspended push for the user and took another method (MFA fatigue).
      return { kind: 'pending', method: m, profile: profileOf(raw), ...dataKeyOf(raw), ...totp, ...(raw[2] === 'push_suspended' ? { pushSuspendedNow: true } : {}) };
    }
    case 'registration_required':
      return {
        kind: 'registration_required',
        method: methodOf(raw[1] ?? '') ?? null,
        reason: (text(raw[2]) ?? 'no_method_registered') as ChallengeReason,
        profile: profileOf(raw),
        ...dataKeyOf(raw),
      };
    case 'blocked':
      return {
        kind: 'blocked',
        method: methodOf(raw[1] ?? '') ?? null,
        reason: raw[2] === 'ip_locked' || raw[2] === 'app_password_required' || raw[2] === 'push_suspended' ? raw[2] : 'user_blocked',
        profile: profileOf(raw),
        ...dataKeyOf(raw),
        ...(raw[9] === '1' ? { suspendedNow: true } : {}),
      };
    case 'bypassed': {
      const reason = raw[2] === 'remembered_device' || raw[2] === 'corporate_network' ? raw[2] : 'trusted_ip';
      return { kind: 'bypassed', reason, profile: profileOf(raw), ...dataKeyOf(raw) };
    }
    case 'unknown_tenant':
      return { kind: 'unknown_tenant' };
    case 'not_found':
      return { kind: 'not_found' };
    case 'rate_limited':
      return {
        kind: 'rate_limited',
        retryAfterSeconds: Math.max(1, Number(raw[1]) || 1),
        scope: raw[2] === 'phone' || raw[2] === 'ip' || raw[2] === 'push' ? raw[2] : 'user',
        // This start suspended push (MFA fatigue) on its way to another method, which a throttle then refused.
        ...(raw[3] === '1' ? { pushSuspendedNow: true } : {}),
      };
    case 'locked':
      return { kind: 'locked', retryAfterSeconds: Math.max(1, Number(raw[1]) || 1) };
    case 'capped':
      return { kind: 'capped' };
    case 'projection_missing':
      return { kind: 'projection_missing' };
    case 'tenant_unread':
      return { kind: 'tenant_unread' };
    default:
      throw new VerdictError(`unexpected start verdict ${String(raw[0])}`);
  }
}

const TOKEN_SPEC = /^(6|8):(\d{1,4}):([0-9a-f]{2,}):([0-9a-f]{2,})(:sha256)?$/;

/**
 * A token of the projection, "digits:period:nonceHex:maskedSecretHex[:sha256]" (see
 * @mfa/projection's writer), or undefined for an entry this version cannot use (it can never match).
 */
function maskedToken(tokenId: string, spec: string, lastStep: string): MaskedTotpToken | undefined {
  const m = TOKEN_SPEC.exec(spec);
  const period = Number(m?.[2]);
  if (!m || period < 1) return undefined;
  return {
    tokenId,
    digits: m[1] === '8' ? 8 : 6,
    period,
    algorithm: m[5] ? 'SHA256' : 'SHA1',
    nonce: Buffer.from(m[3]!, 'hex'),
    masked: Buffer.from(m[4]!, 'hex'),
    lastStep: Number.isSafeInteger(Number(lastStep)) ? Number(lastStep) : -1,
  };
}

/** The tokens of a TOTP challenge (the scripts' WITH_TOKENS) that this version can use. */
export function maskedTokensOf(tokens: TotpTokens): MaskedTotpToken[] {
  const usable: MaskedTotpToken[] = [];
  for (let n = 0; n + 2 < tokens.length; n += 3) {
    const token = maskedToken(tokens[n]!, tokens[n + 1]!, tokens[n + 2]!);
    if (token) usable.push(token);
  }
  return usable;
}

/** (tokenId, spec)* of the tokens, as the verify script compares them with the user's current ones. */
export function tokenSpecsOf(tokens: TotpTokens): string[] {
  const specs: string[] = [];
  for (let n = 0; n + 2 < tokens.length; n += 3) specs.push(tokens[n]!, tokens[n + 1]!);
  return specs;
}

/** The verify script's reply: a verdict, or {'totp', userId, (tokenId, spec, lastStep)*}. */
export function parseCodeCheck(raw: readonly string[]): CodeCheck {
  if (raw[0] !== 'totp') return parseVerifyVerdict(raw);
  return { kind: 'totp_check', userId: raw[1]!, tokens: raw.slice(2) };
}

/** The user's brute-force counters after a wrong code: failures, reset time (ms), failures in a row. */
function guard(raw: readonly string[], at: number): FailureGuard {
  const [failures, resetAt, consecutive] = [Number(raw[at]), Number(raw[at + 1]), Number(raw[at + 2])];
  if (![failures, resetAt, consecutive].every((n) => Number.isSafeInteger(n) && n >= 0)) {
    throw new VerdictError(`unexpected failure counters ${raw.slice(at).join(',')}`);
  }
  return { failures, resetAt, consecutive };
}

/** The client IP a denial ends with (absent in replies kept before it was). */
const clientIpAt = (raw: readonly string[], at: number) => {
  const ip = text(raw[at]);
  return ip ? { clientIp: ip } : {};
};

/** verify's reply, as verifyScript and verifyTotpScript document it. */
export function parseVerifyVerdict(raw: readonly string[]): VerifyVerdict {
  switch (raw[0]) {
    case 'approved': {
      const v: VerifyVerdict = { kind: 'approved', userId: raw[1]!, method: method(raw[2]) };
      if (text(raw[3])) v.tokenId = raw[3]!;
      if (raw[4] === '1') v.remembered = true;
      return v;
    }
    case 'rejected':
      return {
        kind: 'rejected',
        userId: raw[1]!,
        method: method(raw[2]),
        attempts: Number(raw[3]),
        remaining: Number(raw[4]),
        cause: cause(raw[5]),
        guard: guard(raw, 6),
        ...clientIpAt(raw, 9),
      };
    case 'exhausted':
    case 'locked_out':
      return {
        kind: raw[0],
        userId: raw[1]!,
        method: method(raw[2]),
        attempts: Number(raw[3]),
        cause: cause(raw[4]),
        guard: guard(raw, 5),
        ...clientIpAt(raw, 8),
      };
    case 'expired':
    case 'expired_again':
      return { kind: 'expired', userId: raw[1]!, method: method(raw[2]), firstTime: raw[0] === 'expired', ...clientIpAt(raw, 3) };
    case 'conflict':
      return { kind: 'conflict', status: raw[3] ?? 'completed' };
    case 'elsewhere':
      return { kind: 'elsewhere', method: method(raw[2]) };
    case 'denied_by_user':
    case 'user_blocked':
    case 'voided':
      return { kind: raw[0], userId: raw[1]!, method: method(raw[2]), ...clientIpAt(raw, 3) };
    case 'not_push':
      return { kind: 'not_push', method: raw[2] ?? '' };
    case 'locked':
      return { kind: 'locked', retryAfterSeconds: Math.max(1, Number(raw[1]) || 1) };
    case 'capped':
      return { kind: 'capped' };
    case 'not_found':
      return { kind: 'not_found' };
    default:
      throw new VerdictError(`unexpected verify verdict ${String(raw[0])}`);
  }
}

/** resend's reply, as resendScript documents it. */
export function parseResendVerdict(raw: readonly string[]): ResendVerdict {
  switch (raw[0]) {
    case 'resent':
      return { kind: 'resent', userId: raw[1]!, resend: Number(raw[3]), remaining: Math.max(0, Number(raw[4]) || 0), expiresAt: Number(raw[5]) };
    case 'not_found':
      return { kind: 'not_found' };
    case 'conflict':
      return raw[1] === 'method' ? { kind: 'conflict', method: raw[2] ?? '' } : { kind: 'conflict', status: raw[2] ?? 'completed' };
    case 'exhausted':
      return { kind: 'exhausted', maxSends: Number(raw[1]) };
    case 'rate_limited':
      return { kind: 'rate_limited', retryAfterSeconds: Math.max(1, Number(raw[1]) || 1), scope: raw[2] === 'phone' || raw[2] === 'user' ? raw[2] : 'interval' };
    case 'locked':
      return { kind: 'locked', retryAfterSeconds: Math.max(1, Number(raw[1]) || 1) };
    case 'capped':
      return { kind: 'capped' };
    case 'user_blocked':
      return { kind: 'user_blocked' };
    case 'voided':
      return { kind: 'voided' };
    case 'not_allowed':
      return { kind: 'not_allowed', reason: raw[1] === 'country_not_allowed' ? 'country_not_allowed' : 'method_disabled' };
    default:
      throw new VerdictError(`unexpected resend verdict ${String(raw[0])}`);
  }
}
