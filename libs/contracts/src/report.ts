/**
 * Result details of the sign-in report. These are the strings SIEM rules written for Entra ID
 * sign-in logs already match on; never reword one, add new ones instead.
 */
export const ResultDetail = {
  success: 'MFA successfully completed',
  invalidCode: 'MFA denied; invalid verification code',
  duplicateCode: 'MFA denied; duplicate authentication attempt',
  userBlocked: 'MFA denied; user is blocked',
  lockedOut: 'MFA denied; account locked out after too many denied attempts',
  fraud: 'MFA denied; Fraud Code Entered',
  timedOut: 'MFA denied; verification timed out',
  registrationRequired: 'MFA denied; user must register for MFA',
  methodDisabled: 'MFA denied; authentication method disabled by the administrator',
  /** Ours: the phone's country is excluded by the tenant's SMS country rules. */
  countryNotAllowed: "MFA denied; the phone number's country is not allowed by the administrator",
  smsNotDelivered: 'MFA denied; SMS could not be delivered',
  /** Ours, worded like the SMS one: the call was busy, unanswered, failed, or ended before the user answered. */
  callNotAnswered: 'MFA denied; phone call not answered',
  /** Ours, worded like the SMS one: no push service took the notification for any of the user's devices. */
  pushNotDelivered: 'MFA denied; push notification could not be delivered',
  /** Ours (per-IP lockout has no Entra equivalent), worded like the others. */
  ipLocked: 'MFA denied; client IP is locked after too many denied attempts',
  /** Ours: a legacy client of a user whose legacy clients sign in with app passwords only. */
  appPasswordRequired: 'MFA denied; app password required for this legacy client',
  /** The user denied the push in the authenticator app (Entra's wording). */
  deniedByUser: 'MFA denied; user declined the authentication',
  /** Ours: push suspended for the user after repeated denied or ignored notifications (MFA fatigue). */
  pushSuspended: 'MFA denied; push suspended after repeated denied or ignored notifications',
  /** Ours: the user's MFA was reset (or the user erased) while the challenge was pending. */
  userReset: "MFA denied; the user's MFA was reset after the challenge started",
  /** Bypasses: a success without a second factor, and why. */
  trustedIp: 'MFA requirement skipped due to trusted IP',
  rememberedDevice: 'MFA requirement skipped due to remembered device',
  corporateNetwork: 'MFA requirement satisfied by claim in the token',
} as const;
export type ResultDetail = (typeof ResultDetail)[keyof typeof ResultDetail];
