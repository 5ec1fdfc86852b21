import { z } from 'zod';

// Control characters and unpaired surrogates are never valid in identifiers or display strings:
// they break logs, CSV exports and terminals downstream.
const NO_CONTROL = /^[^\u0000-\u001f\u007f-\u009f]*$/u;

const safeText = (max: number) =>
  z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .regex(NO_CONTROL, 'must not contain control characters')
    .refine((s) => s.isWellFormed(), 'must be well-formed Unicode');

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
export const IpAddress = z.union([z.ipv4(), z.ipv6()], { error: 'must be an IPv4 or IPv6 address' });
export const Application = safeText(256);
export const RequestId = safeText(128);
/** Ids we issue are opaque; any string may be presented and an unknown one is `not_found`. */
export const OpaqueId = z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters');
/** Codes are digits; how many depends on the method (SMS 6, TOTP 6 or 8). */
export const OtpCode = z.string().regex(/^\d{4,10}$/, 'must be 4 to 10 digits');
export const IsoDateTime = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time' });

export const METHODS = ['sms', 'voice', 'push', 'totp'] as const;
export const Method = z.enum(METHODS);
export type Method = z.infer<typeof Method>;

/** Methods this release can deliver; the rest answer `registration_required`. */
export const SUPPORTED_METHODS = ['sms', 'totp'] as const satisfies readonly Method[];

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
  'delivery_failed',
] as const;
export const ChallengeReason = z.enum(CHALLENGE_REASONS);
export type ChallengeReason = z.infer<typeof ChallengeReason>;

/** AES-256-GCM sealed secret, compact form `v1.<kid>.<iv>.<ciphertext>.<tag>` (base64url parts). */
export const SealedSecret = z.string().regex(/^v1\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/, 'must be a sealed secret');
