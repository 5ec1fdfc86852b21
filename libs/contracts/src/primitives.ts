import { z } from 'zod';
import { isIpv4CompatibleAddress } from './ip.js';

// Characters refused in identifiers and display text, one class per message. The messages name
// the class and its code points, never the value. Control characters break logs, CSV exports and
// terminals; bidi overrides, isolates and marks make text display in another order than it is
// stored ("Trojan Source"), so an operator reads a different user id or application than the one
// recorded; zero-width characters make two different ids look identical; U+2028/U+2029 end lines
// in log viewers and some JSON consumers. Unpaired surrogates are refused by the well-formed check.
const REFUSED_CHARACTERS: ReadonlyArray<readonly [RegExp, string]> = [
  [/[\u0000-\u001f\u007f-\u009f]/u, 'must not contain control characters'],
  [/[\u202a-\u202e\u2066-\u2069]/u, 'must not contain bidirectional override or isolate characters (U+202A to U+202E, U+2066 to U+2069)'],
  [/[\u200e\u200f\u061c]/u, 'must not contain bidirectional marks (U+200E, U+200F, U+061C)'],
  [/[\u200b-\u200d\u2060\ufeff]/u, 'must not contain zero-width characters (U+200B to U+200D, U+2060, U+FEFF)'],
  [/[\u2028\u2029]/u, 'must not contain line or paragraph separators (U+2028, U+2029)'],
];

export const safeText = (max: number) => {
  let schema = z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine((s) => s.isWellFormed(), 'must be well-formed Unicode');
  for (const [pattern, message] of REFUSED_CHARACTERS) schema = schema.refine((s) => !pattern.test(s), message);
  return schema;
};

/** Tenant ids: GUIDs, domain names or slugs. Restricted so they are safe in logs and keys. */
export const TenantId = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be letters, digits, ".", "_" or "-"');

/** User ids are the UPN or any IdP-unique id. */
export const UserId = safeText(256);
export const DisplayName = safeText(256);
export const Label = safeText(64);
export const Email = z.email('must be an e-mail address').max(254);
/** E.164: "+" then 8 to 15 digits, no leading zero in the country code. */
export const PhoneNumber = z.string().regex(/^\+[1-9]\d{7,14}$/, 'must be an E.164 number such as +14155550123');
export const Language = z
  .string()
  .max(35)
  .regex(/^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$/, 'must be a BCP 47 language tag such as en-US')
  .refine((tag) => {
    try {
      return Intl.getCanonicalLocales(tag).length === 1;
    } catch {
      return false;
    }
  }, 'must be a valid BCP 47 language tag');
/**
 * An IPv4 or IPv6 address. IPv4-compatible IPv6 (`::203.0.113.5`, `::cb00:7105`; RFC 4291
 * deprecated it) is refused: its meaning is ambiguous (ip.ts, isIpv4CompatibleAddress), and a
 * caller that sends one means an IPv4 address, which it should send as such (or IPv4-mapped).
 */
export const IpAddress = z
  .union([z.ipv4(), z.ipv6()], { error: 'must be an IPv4 or IPv6 address' })
  .refine((address) => !isIpv4CompatibleAddress(address), 'must not be an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291): send the IPv4 address a.b.c.d, or ::ffff:a.b.c.d');
export const Application = safeText(256);
export const RequestId = safeText(128);
/** Ids we issue are opaque; any string may be presented and an unknown one is `not_found`. */
export const OpaqueId = z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters');
/** Codes are digits; how many depends on the method (SMS 6, TOTP 6 or 8). */
export const OtpCode = z.string().regex(/^\d{4,10}$/, 'must be 4 to 10 digits');
/** Hash function of an OATH token's HMAC: SHA-1 (apps, most hardware) or SHA-256 (some hardware tokens). */
export const OathAlgorithm = z.enum(['SHA1', 'SHA256']);
export type OathAlgorithm = z.infer<typeof OathAlgorithm>;
/**
 * A name in a JetStream object store that uploaders write (MFA_VOICE_UPLOADS, MFA_IMPORTS):
 * printable ASCII; each request checks that it starts with its tenant's prefix.
 */
export const ObjectName = z
  .string()
  .min(1, 'must not be empty')
  .max(256, 'must be at most 256 characters')
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');
export const IsoDateTime = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time' });

export const METHODS = ['sms', 'voice', 'push', 'totp'] as const;
export const Method = z.enum(METHODS);
export type Method = z.infer<typeof Method>;

/**
 * How a sign-in reached the service: `nats` (an IdP calling the NATS API) or `radius` (the RADIUS
 * front, for VPNs and RADIUS servers). Start events without the field came over NATS.
 */
export const SIGNIN_VIAS = ['nats', 'radius'] as const;
export const SigninVia = z.enum(SIGNIN_VIAS);
export type SigninVia = z.infer<typeof SigninVia>;

export const CHALLENGE_STATUSES = ['pending', 'approved', 'denied', 'registration_required'] as const;
export const ChallengeStatus = z.enum(CHALLENGE_STATUSES);
export type ChallengeStatus = z.infer<typeof ChallengeStatus>;

/**
 * Why a challenge is where it is. `invalid_code` comes with `pending` while attempts remain;
 * the rest come with `denied`, `approved` (bypasses, later) or `registration_required`.
 */
export const CHALLENGE_REASONS = [
  'invalid_code',
  'too_many_attempts',
  'expired',
  'code_reused',
  'no_method_registered',
  'method_not_registered',
  'method_disabled',
  /** The user's phone is in a country the tenant's SMS country rules exclude (sms.allowedCountries / blockedCountries): no SMS, no call. */
  'country_not_allowed',
  'delivery_failed',
  /** The wrong code that reached the tenant's lockout threshold: the challenge ends, the user is locked. */
  'locked_out',
  /** The user is blocked (users.block, or a fraud report with auto-block): every start is denied. */
  'user_blocked',
  /** The user (or the IdP) reported the sign-in as fraud (fraud.report): the challenge is denied. */
  'fraud_reported',
  /** The user denied the push in the authenticator app. */
  'denied_by_user',
  /** Push is suspended for the user after repeated denied or ignored pushes (MFA fatigue): use another method. */
  'push_suspended',
  /** The client IP is locked (the tenant's `ipLockout`: too many denials from it across users): every start from it is denied. */
  'ip_locked',
  /**
   * A legacy client (`context.legacyClient`) of a user who has an app password, or once used one,
   * with the tenant's appPasswords allowed: only an app password signs it in (apppasswords.verify).
   */
  'app_password_required',
  /** Bypasses, with `approved` at start: the client IP is in a trusted range (trustedIps, a trusted named location). */
  'trusted_ip',
  /** The browser presented a valid remember token (rememberMfa). */
  'remembered_device',
  /** A federated user the IdP says is inside the corporate network (trustedIps.federatedBypass). */
  'corporate_network',
] as const;
export const ChallengeReason = z.enum(CHALLENGE_REASONS);
export type ChallengeReason = z.infer<typeof ChallengeReason>;

/**
 * AES-256-GCM sealed secret (libs/crypto seal.ts), compact form `v2.<kid>.<hour>.<iv>.<ciphertext>.<tag>`
 * (base64url parts, the hour in decimal), or `v1.<kid>.<iv>.<ciphertext>.<tag>` as stored before v2.
 */
export const SealedSecret = z
  .string()
  .regex(
    /^(?:v1\.[A-Za-z0-9_-]{1,32}|v2\.[A-Za-z0-9_-]{1,32}\.(?:0|[1-9]\d{0,9}))\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/,
    'must be a sealed secret',
  );
