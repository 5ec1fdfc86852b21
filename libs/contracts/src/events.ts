import { z } from 'zod';
import { Operator, Scope } from './api.js';
import { TenantSettings } from './tenant-settings.js';
import {
  ChallengeReason,
  IsoDateTime,
  Method,
  OathAlgorithm,
  PhoneNumber,
  SealedSecret,
  SigninVia,
  TenantId,
} from './primitives.js';

/**
 * Every event is an envelope: id (also the JetStream Nats-Msg-Id, so a re-sent publish is
 * de-duplicated), a type name that never changes once stored, an explicit version, the tenant,
 * the aggregate it belongs to, when it happened and the W3C trace context of the request that
 * caused it. Shapes change only through a new version plus an upcaster (see `upcasters`).
 */
export const EventMetadata = z.object({
  traceparent: z.string().max(128).optional(),
  tracestate: z.string().max(512).optional(),
  correlationId: z.string().max(128).optional(),
  causationId: z.string().max(128).optional(),
});
export type EventMetadata = z.infer<typeof EventMetadata>;

const envelope = <T extends string, V extends number, D extends z.ZodType>(type: T, version: V, data: D) =>
  z.object({
    id: z.uuid(),
    type: z.literal(type),
    version: z.literal(version),
    tenantId: TenantId,
    aggregateId: z.string().min(1),
    occurredAt: IsoDateTime,
    metadata: EventMetadata,
    data,
  });

const Profile = z.object({
  displayName: z.string().optional(),
  email: z.string().optional(),
  phoneNumber: PhoneNumber.optional(),
  /** An office phone's extension, dialled once the call connects (E.164 has none). */
  phoneExtension: z.string().regex(/^\d{1,10}$/).optional(),
  language: z.string().optional(),
});
const Server = z.object({ name: z.string(), ip: z.string() });

/**
 * Personal data (display name, e-mail, phone number) as JSON sealed with AES-256-GCM under the
 * user's data key of generation `<gen>`: `d1.<gen>.<iv>.<ciphertext>.<tag>` (@mfa/crypto
 * data-keys.ts). Erasing the user destroys the key, so every copy of this stops opening.
 */
export const SealedPii = z
  .string()
  .max(4096)
  .regex(/^d1\.[1-9]\d{0,8}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{22}$/, 'must be sealed personal data');
/** What `SealedPii` holds once opened. */
export const PersonalData = Profile.pick({ displayName: true, email: true, phoneNumber: true, phoneExtension: true });
export type PersonalData = z.infer<typeof PersonalData>;

/** A type stored in two versions: one schema per version, told apart by `version`. */
const versions = <A extends z.ZodObject, B extends z.ZodObject>(v1: A, v2: B) => z.discriminatedUnion('version', [v1, v2]);

// ---- user-settings: tenant and user aggregates -------------------------------------------------

export const TenantCreated = envelope('TenantCreated', 1, z.object({ settings: TenantSettings }));
export const TenantSettingsChanged = envelope('TenantSettingsChanged', 1, z.object({ settings: TenantSettings }));
/**
 * tenants.delete: the tenant is unknown from now on (every request naming it answers not_found),
 * its API clients are revoked, and user-settings' offboarding erases what it held. The tenant's
 * last event is its state: deleting, until TenantErased.
 */
export const TenantDeleted = envelope('TenantDeleted', 1, z.object({}));
/**
 * The offboarding is complete: every user of the tenant erased, its hardware tokens, recordings and
 * import files deleted, its clients revoked (counts of what this offboarding did). The id may be
 * created again, as a new tenant.
 */
export const TenantErased = envelope(
  'TenantErased',
  1,
  z.object({ deletedAt: z.string(), users: z.number().int().min(0), hardwareTokens: z.number().int().min(0), recordings: z.number().int().min(0), clients: z.number().int().min(0) }),
);

/** v1 (before per-user data keys): the profile in clear. Still read; no longer written. */
export const UserRegisteredV1 = envelope('UserRegistered', 1, z.object({ userId: z.string() }).extend(Profile.shape));
/** v2: display name, e-mail and phone sealed in `pii` under the user's data key; the language stays plain. */
export const UserRegisteredV2 = envelope(
  'UserRegistered',
  2,
  z.object({ userId: z.string(), language: z.string().optional(), pii: SealedPii.optional() }),
);
export const UserRegistered = versions(UserRegisteredV1, UserRegisteredV2);
export const UserProfileChangedV1 = envelope('UserProfileChanged', 1, Profile);
/** v2: the changed fields; the personal ones sealed in `pii`. */
export const UserProfileChangedV2 = envelope(
  'UserProfileChanged',
  2,
  z.object({ language: z.string().optional(), pii: SealedPii.optional() }),
);
export const UserProfileChanged = versions(UserProfileChangedV1, UserProfileChangedV2);
/**
 * The user was erased (users.delete): the aggregate starts over, and the data key of generation
 * `gen` (and every older one) is destroyed, so the personal data sealed under it never opens again.
 */
export const UserErased = envelope('UserErased', 1, z.object({ userId: z.string(), gen: z.int().positive() }));
/**
 * users.reset: every method of the user is cleared (TOTP tokens, the phone number; devices, app
 * passwords and remembered browsers once they exist): the user must register again. The profile's
 * name, e-mail and language stay.
 */
export const UserMfaReset = envelope('UserMfaReset', 1, z.object({ userId: z.string() }));
/** users.methods.default: the method a start without one uses, while it stays usable. */
export const DefaultMethodChosen = envelope('DefaultMethodChosen', 1, z.object({ method: Method }));
/** users.pin.set: the voice PIN's scrypt hash, sealed (SealContext.pinHash); users.reset clears it. */
export const UserPinSet = envelope('UserPinSet', 1, z.object({ sealedHash: SealedSecret }));
/**
 * users.apppasswords.create: a password for a legacy client, kept only as a slow salted hash
 * (scrypt, `scrypt$<N>$<r>$<p>$<salt>$<hash>`, base64url parts).
 */
export const AppPasswordCreated = envelope(
  'AppPasswordCreated',
  1,
  z.object({ appPasswordId: z.string(), name: z.string().max(64).optional(), hash: z.string().max(512) }),
);
/** users.apppasswords.delete: one app password, or all of them (`appPasswordId` absent). */
export const AppPasswordDeleted = envelope('AppPasswordDeleted', 1, z.object({ appPasswordId: z.string().optional() }));
/**
 * The user signed a legacy client in with an app password for the first time: from now on only an
 * app password signs their legacy clients in (a legacy start answers denied, app_password_required),
 * even once every app password is deleted, until users.reset. Recorded once per user.
 */
export const AppPasswordUsed = envelope('AppPasswordUsed', 1, z.object({ appPasswordId: z.string() }));
/** users.tokens.delete: one TOTP token is gone (pending or active). */
/**
 * An authenticator app activated on the user's account with a one-time code: its public key (the
 * private key never left the device), the platform and its push token (sealed: only dispatch opens
 * it), the name shown to people.
 */
export const PushDeviceActivated = envelope(
  'PushDeviceActivated',
  1,
  z.object({
    deviceId: z.string(),
    name: z.string(),
    platform: z.enum(['ios', 'android', 'none']),
    algorithm: z.enum(['ES256', 'Ed25519']),
    publicKey: z.string(),
    sealedPushToken: SealedSecret.optional(),
  }),
);
/** The device is no longer the user's: deleted by an administrator or the user, or replaced. */
export const PushDeviceDeleted = envelope('PushDeviceDeleted', 1, z.object({ deviceId: z.string() }));
/** A push provider refused the device's token: it must activate again before push reaches it. */
export const PushDeviceNeedsRegistration = envelope(
  'PushDeviceNeedsRegistration',
  1,
  z.object({ deviceId: z.string(), provider: z.string(), error: z.string() }),
);

export const TotpTokenDeleted = envelope('TotpTokenDeleted', 1, z.object({ tokenId: z.string() }));

export const TotpTokenEnrolled = envelope(
  'TotpTokenEnrolled',
  1,
  z.object({
    tokenId: z.string(),
    label: z.string(),
    /** The Base32-decoded secret, sealed with AES-256-GCM bound to tenant, user and token. */
    sealedSecret: SealedSecret,
    digits: z.union([z.literal(6), z.literal(8)]),
    period: z.union([z.literal(30), z.literal(60)]),
    algorithm: z.literal('SHA1'),
  }),
);
export const TotpTokenActivated = envelope(
  'TotpTokenActivated',
  1,
  /** `step` is the RFC 6238 time step of the activation code: it can never be accepted again. */
  z.object({ tokenId: z.string(), step: z.int().nonnegative() }),
);

const HardwareTokenFields = z.object({
  tokenId: z.string(),
  serialNumber: z.string().max(64),
  /** The secret, sealed with AES-256-GCM bound to tenant and token (SealContext.hardwareSecret). */
  sealedSecret: SealedSecret,
  digits: z.union([z.literal(6), z.literal(8)]),
  period: z.union([z.literal(30), z.literal(60)]),
  algorithm: OathAlgorithm,
  manufacturer: z.string().max(64).optional(),
  model: z.string().max(64).optional(),
});

/** A hardware token was given to the user (oath.import with a upn, or oath.tokens.assign): pending until activated by its code. */
export const HardwareTokenAssigned = envelope('HardwareTokenAssigned', 1, HardwareTokenFields);

/**
 * After a master key rotation (rewrap.js): secrets the user's state still uses, sealed again under
 * the current master key with the same SealContext as the event that brought them (TOTP and
 * hardware secrets, the voice PIN hash, push tokens), so that the previous key is no longer needed
 * for them. Each replaces the value of its token or device (or the PIN hash) that is current when
 * it is appended; entries whose token or device is gone by then are not written.
 */
export const SecretsResealed = envelope(
  'SecretsResealed',
  1,
  z.object({
    tokens: z.array(z.object({ tokenId: z.string(), sealedSecret: SealedSecret })).optional(),
    sealedPinHash: SealedSecret.optional(),
    devices: z.array(z.object({ deviceId: z.string(), sealedPushToken: SealedSecret })).optional(),
  }),
);

// ---- hardware token inventory (one aggregate per tenant and serial number) ----------------------

/**
 * A hardware token entered the tenant's inventory (oath.import). A serial number is unique per
 * tenant: its aggregate's first event is appended only on an empty subject; a later one replaces
 * the token (the import asked `replace`).
 */
export const OathTokenImported = envelope(
  'OathTokenImported',
  1,
  HardwareTokenFields.extend({ jobId: z.string().max(64), replaced: z.boolean().optional() }),
);
export const OathTokenAssigned = envelope('OathTokenAssigned', 1, z.object({ tokenId: z.string(), userId: z.string().max(256) }));
/** The token went back to the inventory: deleted from its user, the user reset or erased, or an assignment undone. */
export const OathTokenUnassigned = envelope('OathTokenUnassigned', 1, z.object({ tokenId: z.string(), userId: z.string().max(256), reason: z.string().max(200) }));
/** After a master key rotation (rewrap.js): the token's secret sealed again under the current master key (SealContext.hardwareSecret). */
export const OathTokenResealed = envelope('OathTokenResealed', 1, z.object({ tokenId: z.string(), sealedSecret: SealedSecret }));
/** The user typed the code the token shows (oath.tokens.activate); `step` is that code's time step. */
export const OathTokenActivated = envelope('OathTokenActivated', 1, z.object({ tokenId: z.string(), userId: z.string().max(256), step: z.int().nonnegative() }));

// ---- auth-challenge ----------------------------------------------------------------------------

// Stored events are read with looser text rules than requests are checked with: an event written
// before a rule was tightened (e.g. bidi controls refused) must stay readable, and replays of it too.
const StoredText = (max: number) => z.string().max(max);

const ChallengeContextV1 = z.object({
  challengeId: z.string(),
  userId: z.string(),
  clientIp: z.string().optional(),
  application: StoredText(256).optional(),
  requestId: StoredText(128).optional(),
  profile: Profile,
  server: Server,
  /** `radius`: started by the RADIUS front, `server` is then the RADIUS client and its NAS. Absent: `nats`. */
  via: SigninVia.optional(),
});
/** v2: the user's personal data sealed in `pii` under the user's data key, instead of `profile`. */
const ChallengeContextV2 = ChallengeContextV1.omit({ profile: true }).extend({
  pii: SealedPii.optional(),
  /**
   * The generation of the user's data key when there was nothing to seal (no name, e-mail or
   * phone reported): which registration of the user id the sign-in belongs to, as `pii` says
   * otherwise, so that an erasure never takes the sign-ins of the same id registered again.
   */
  keyGen: z.int().positive().optional(),
});
const Started = {
  method: Method,
  expiresAt: IsoDateTime,
  maxAttempts: z.int().positive(),
};

export const ChallengeStartedV1 = envelope(
  'ChallengeStarted',
  1,
  ChallengeContextV1.extend({
    ...Started,
    /** For out-of-band methods: where to send, and the code sealed for dispatch only. */
    delivery: z
      .object({ channel: z.literal('sms'), to: PhoneNumber, sealedCode: SealedSecret, language: z.string().optional() })
      .optional(),
  }),
);
export const ChallengeStartedV2 = envelope(
  'ChallengeStarted',
  2,
  ChallengeContextV2.extend({
    ...Started,
    /**
     * sms: the code sealed for dispatch only. voice: how the call goes, as the tenant's settings
     * said at start (caller ID, PIN mode, the fraud code or null when fraud alerts are off). The
     * number to send or call is the phone in `pii`.
     */
    delivery: z
      .discriminatedUnion('channel', [
        z.object({ channel: z.literal('sms'), sealedCode: SealedSecret, language: z.string().optional() }),
        // push: nothing but the channel (the notification carries no secret; the app asks the device API).
        z.object({ channel: z.literal('push') }),
        z.object({
          channel: z.literal('voice'),
          language: z.string().optional(),
          callerId: PhoneNumber,
          pinMode: z.boolean(),
          fraudCode: z.string().regex(/^\d$/).nullable(),
        }),
      ])
      .optional(),
  }),
);
export const ChallengeStarted = versions(ChallengeStartedV1, ChallengeStartedV2);
const RegistrationRequired = { method: Method.nullable(), reason: ChallengeReason };
export const ChallengeRegistrationRequired = versions(
  envelope('ChallengeRegistrationRequired', 1, ChallengeContextV1.extend(RegistrationRequired)),
  envelope('ChallengeRegistrationRequired', 2, ChallengeContextV2.extend(RegistrationRequired)),
);

/**
 * `clientIp`: the address the challenge was started from, on the outcomes of wrong codes and
 * expiries (what per-IP lockout counts); absent on challenges started before it was kept.
 */
const Outcome = z.object({ challengeId: z.string(), userId: z.string(), method: Method, server: Server, clientIp: z.string().max(64).optional() });
/**
 * The user's brute-force counters right after a wrong code, so that a rebuild of Redis restores
 * them from the log: wrong codes in the lockout window (`failures`, the window or the lockout
 * ending at `resetAt`, ms since the epoch) and wrong codes in a row (`consecutive`).
 */
const FailureGuard = z.object({
  failures: z.int().nonnegative(),
  resetAt: z.int().nonnegative(),
  consecutive: z.int().nonnegative(),
});
export const ChallengeApproved = envelope(
  'ChallengeApproved',
  1,
  Outcome.extend({
    tokenId: z.string().optional(),
    /** TOTP: the RFC 6238 time step accepted, so a Redis rebuild restores the replay guard. */
    step: z.int().nonnegative().optional(),
    /** Push: the authenticator app whose signed answer approved (its device id). */
    deviceId: z.string().max(128).optional(),
  }),
);
export const ChallengeCodeRejected = envelope(
  'ChallengeCodeRejected',
  1,
  Outcome.extend({
    attempt: z.int().positive(),
    attemptsRemaining: z.int().nonnegative(),
    /** `reused`: a TOTP code of a time step already accepted for this token (RFC 6238 §5.2). */
    cause: z.enum(['mismatch', 'reused']),
    guard: FailureGuard.optional(),
  }),
);
export const ChallengeAttemptsExhausted = envelope(
  'ChallengeAttemptsExhausted',
  1,
  Outcome.extend({
    attempts: z.int().positive(),
    lastCause: z.enum(['mismatch', 'reused']),
    guard: FailureGuard.optional(),
    /** The last wrong code reached the tenant's lockout threshold: the user is locked out. */
    lockedOut: z.literal(true).optional(),
    /** Push: the authenticator app whose signed answer carried the wrong number. */
    deviceId: z.string().max(128).optional(),
  }),
);
export const ChallengeExpired = envelope('ChallengeExpired', 1, Outcome);
/** A start refused for the user's state (blocked) or its client IP's (locked): a failed sign-in in the report. */
export const ChallengeDenied = envelope(
  'ChallengeDenied',
  1,
  ChallengeContextV2.extend({ method: Method.nullable(), reason: z.enum(['user_blocked', 'ip_locked', 'app_password_required', 'push_suspended']) }),
);
/** The user denied a push in the app (its device signed the answer): the challenge is denied. */
export const ChallengeDeniedByUser = envelope('ChallengeDeniedByUser', 1, Outcome.extend({ deviceId: z.string().max(128).optional() }));
/**
 * A pending challenge of a user blocked after its start (an administrator, a fraud report's
 * automatic block): denied at its next verify, call answer or device answer, before any code is
 * compared.
 */
export const ChallengeUserBlocked = envelope('ChallengeUserBlocked', 1, Outcome);
/**
 * A pending challenge of a user whose MFA was reset (users.reset) or who was erased after its
 * start: the method it was sent by is no longer the user's, so it is denied
 * (`method_not_registered`) at its next verify, call answer or device answer, before any code is
 * compared.
 */
export const ChallengeVoided = envelope('ChallengeVoided', 1, Outcome);

/** A start that needed no second factor (a bypass): approved at once, and recorded for the report. */
export const ChallengeBypassed = envelope(
  'ChallengeBypassed',
  1,
  ChallengeContextV2.extend({ reason: z.enum(['trusted_ip', 'remembered_device', 'corporate_network']) }),
);

/**
 * challenge.resend was accepted for a pending SMS challenge: dispatch sends the same code again
 * (read back from the challenge's ChallengeStarted on this stream, the only place it exists) through
 * the next healthy provider. `resend` counts from 1 for the challenge; the id derives from it, so
 * the decision is recorded once however often its publish is retried.
 */
export const ChallengeResendRequested = envelope(
  'ChallengeResendRequested',
  1,
  z.object({ challengeId: z.string(), userId: z.string(), method: z.literal('sms'), server: Server, resend: z.int().positive(), expiresAt: IsoDateTime }),
);

/** A pending challenge the user (or the IdP) reported as fraud (fraud.report): denied. Written by fraud. */
export const ChallengeFraudReported = envelope(
  'ChallengeFraudReported',
  1,
  Outcome.extend({
    alertId: z.string(),
    /** Push reported from the authenticator app: the app whose signed answer it was (its alert's deviceId). */
    deviceId: z.string().max(128).optional(),
  }),
);

// ---- fraud (one subject per user: EventSubjects.fraudUser) --------------------------------------

/** Who did it: an API client (its id) and, through the console, the operator; absent for the service itself. */
const Actor = z.object({ clientId: z.string().max(128).optional(), operator: z.string().max(256).optional() });
/**
 * The user is blocked until `until` (90 days from the block): every start is denied. Each block
 * event carries the whole state of the user's block.
 */
export const UserBlocked = envelope(
  'UserBlocked',
  1,
  z.object({
    userId: z.string(),
    reason: z.string().max(256),
    until: IsoDateTime,
    source: z.enum(['admin', 'fraud_report']),
    by: Actor.optional(),
    /** The fraud alert (FraudReported) whose auto-block this is: an alert blocks at most once. */
    alertId: z.string().optional(),
  }),
);
/**
 * A fraud alert (fraud.report): what was reported, from where, and what was done about it (the
 * pending challenge denied, the user blocked by the tenant's auto-block).
 */
export const FraudReported = envelope(
  'FraudReported',
  1,
  z.object({
    userId: z.string(),
    alertId: z.string(),
    challengeId: z.string().optional(),
    source: z.enum(['app', 'phone', 'idp']),
    comment: z.string().max(256).optional(),
    /** Where the reported sign-in came from (its challenge's client IP and application), when known. */
    clientIp: z.string().max(64).optional(),
    application: StoredText(256).optional(),
    challengeDenied: z.boolean(),
    blocked: z.boolean(),
    /** When the block (the tenant's auto-block, or one already in force) ends. */
    blockedUntil: IsoDateTime.optional(),
    by: Actor.optional(),
    /** source `app`: the authenticator app that reported (it signed the answer); absent from an older auth-challenge. */
    deviceId: z.string().max(128).optional(),
  }),
);
/**
 * A fraud alert's e-mail to one address of the tenant's `notificationEmails` (EventSubjects.fraudMail):
 * accepted by the SMTP server (`messageId`), or given up after `attempts` with the last error.
 * `logged`: no SMTP server is configured (development), the message went to the log instead.
 */
export const FraudNotificationSent = envelope(
  'FraudNotificationSent',
  1,
  z.object({ alertId: z.string(), userId: z.string(), to: z.string().max(320), messageId: z.string().max(998), attempts: z.int().positive(), logged: z.literal(true).optional() }),
);
export const FraudNotificationFailed = envelope(
  'FraudNotificationFailed',
  1,
  z.object({ alertId: z.string(), userId: z.string(), to: z.string().max(320), error: z.string().max(1000), attempts: z.int().positive() }),
);
/**
 * The user's block is lifted: by an administrator (users.unblock, with a reason), who lifts the
 * lockouts too (the lockout counters start over: a rebuild of Redis does not restore failures
 * before it), or `automatic` at the block's end (recorded when the fraud service next runs, dated
 * at the end; a block that ends by itself lifts no lockout).
 */
export const UserUnblocked = envelope(
  'UserUnblocked',
  1,
  z.object({ userId: z.string(), reason: z.string().max(256).optional(), automatic: z.literal(true).optional(), by: Actor.optional() }),
);

// ---- fraud: per-IP lockout (one subject per tenant and address: EventSubjects.fraudIp) ----------

/**
 * Denials from one client address (`ip`: an IPv4 address, or an IPv6 /64 as "2001:db8:1:2::/64")
 * reached the tenant's `ipLockout.threshold` within its window: starts from it are denied until
 * `until`. `dryRun`: the tenant's dry run was on, so nothing was locked; the event records what
 * would have been. Each event carries the whole state of the address's lock.
 */
export const IpLocked = envelope(
  'IpLocked',
  1,
  z.object({
    ip: z.string().max(64),
    until: IsoDateTime,
    failures: z.int().positive(),
    /** Distinct users among those failures. */
    users: z.int().nonnegative(),
    windowMinutes: z.int().positive(),
    dryRun: z.boolean(),
  }),
);
/** An administrator lifted an address's lock before its end (fraud.ips.unlock). */
export const IpUnlocked = envelope(
  'IpUnlocked',
  1,
  z.object({ ip: z.string().max(64), reason: z.string().max(256), by: Actor.optional() }),
);

// ---- fraud: per-IP throttling (MFA_THROTTLES, one subject per tenant and address: EventSubjects.ipThrottle)

/**
 * Starts that send something (SMS, voice, push) from one client address (`ip`, its lock key as
 * IpLocked's) reached the operator's limit (`IP_MAX_STARTS_PER_WINDOW` in any
 * `IP_START_WINDOW_SECONDS`): such starts from it answer rate_limited until `until`, when the
 * oldest of them leaves the sliding window. Short-lived state, not a lock: no unlock, it ends by itself.
 */
export const IpThrottled = envelope(
  'IpThrottled',
  1,
  z.object({
    ip: z.string().max(64),
    until: IsoDateTime,
    starts: z.int().positive(),
    windowSeconds: z.int().positive(),
  }),
);

// ---- dispatch ---------------------------------------------------------------------------------

export const SmsSent = envelope(
  'SmsSent',
  1,
  z.object({
    challengeId: z.string(),
    provider: z.string(),
    providerMessageId: z.string(),
    attempts: z.int().positive(),
    /** The outcome of a resend (ChallengeResendRequested.resend); absent for the start's send. */
    resend: z.int().positive().optional(),
  }),
);
export const SmsDeliveryFailed = envelope(
  'SmsDeliveryFailed',
  1,
  z.object({
    challengeId: z.string(),
    attempts: z.int().positive(),
    failures: z.array(z.object({ provider: z.string(), error: z.string(), transient: z.boolean() })),
    resend: z.int().positive().optional(),
  }),
);

/**
 * A delivery receipt of an SMS (Twilio's signed status callback, an SMSC's deliver_sm): the handset got it
 * (`delivered`), or the network gave up (`undelivered`, with the provider's error code when it
 * says). An undelivered SMS makes the challenge's status delivery_failed.
 */
export const SmsDeliveryReported = envelope(
  'SmsDeliveryReported',
  1,
  z.object({
    challengeId: z.string(),
    provider: z.string(),
    providerMessageId: z.string(),
    status: z.enum(['delivered', 'undelivered']),
    errorCode: z.string().max(16).optional(),
  }),
);
/** A voice challenge's call was placed (Twilio accepted it): `providerCallId` is its CallSid. */
export const VoiceCallPlaced = envelope(
  'VoiceCallPlaced',
  1,
  z.object({ challengeId: z.string(), provider: z.string(), providerCallId: z.string(), attempts: z.int().positive() }),
);
/**
 * A voice challenge's call did not reach an answer: never placed (the provider refused, the number
 * throttled), or ended busy, unanswered, failed, or hung up (or silent) before the user answered.
 * The challenge's status then says delivery_failed, with the user's other methods.
 */
export const VoiceCallFailed = envelope(
  'VoiceCallFailed',
  1,
  z.object({
    challengeId: z.string(),
    attempts: z.int().positive(),
    failures: z.array(z.object({ provider: z.string(), error: z.string(), transient: z.boolean() })),
  }),
);

/** A push notification went out to the user's devices (dispatch): one per device and provider that took it. */
export const PushSent = envelope(
  'PushSent',
  1,
  z.object({
    challengeId: z.string(),
    sent: z.array(z.object({ deviceId: z.string(), provider: z.string(), providerMessageId: z.string() })),
    /** Devices with no provider (platform none, or none configured): they poll the device API. */
    polling: z.array(z.string()),
  }),
);
/** No notification could go out; poll-only devices may still answer (dispatch). */
export const PushDeliveryFailed = envelope(
  'PushDeliveryFailed',
  1,
  z.object({
    challengeId: z.string(),
    failures: z.array(z.object({ deviceId: z.string(), provider: z.string(), error: z.string(), transient: z.boolean() })),
  }),
);

// ---- user-settings: API clients; every service: the admin audit trail -------------------------------

export const ApiClientCreated = envelope(
  'ApiClientCreated',
  1,
  z.object({
    clientId: z.string(),
    name: z.string(),
    scopes: z.array(Scope).min(1),
    /** HMAC-SHA256 of the key's secret under a key derived from the master key, base64url. */
    keyHash: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  }),
);
export const ApiClientRevoked = envelope('ApiClientRevoked', 1, z.object({ clientId: z.string() }));

export const AdminActionRecorded = envelope(
  'AdminActionRecorded',
  1,
  z.object({
    subject: z.string().max(128),
    clientId: z.string().max(128),
    // As stored: events written when the operator's fields were plain strings still read.
    operator: z.object({ sub: StoredText(256), email: StoredText(254).optional(), name: StoredText(256).optional() }).optional(),
    userId: z.string().max(256).optional(),
    /** `ok`, or the error code the request was answered with. */
    outcome: z.string().max(32),
  }),
);

export const EventSchemas = {
  TenantCreated,
  TenantSettingsChanged,
  TenantDeleted,
  TenantErased,
  UserRegistered,
  UserProfileChanged,
  UserErased,
  UserMfaReset,
  TotpTokenDeleted,
  DefaultMethodChosen,
  AppPasswordCreated,
  AppPasswordDeleted,
  AppPasswordUsed,
  UserPinSet,
  UserUnblocked,
  TotpTokenEnrolled,
  TotpTokenActivated,
  HardwareTokenAssigned,
  SecretsResealed,
  OathTokenImported,
  OathTokenAssigned,
  OathTokenUnassigned,
  OathTokenActivated,
  OathTokenResealed,
  ChallengeStarted,
  ChallengeRegistrationRequired,
  ChallengeApproved,
  ChallengeCodeRejected,
  ChallengeAttemptsExhausted,
  ChallengeExpired,
  ChallengeDenied,
  ChallengeBypassed,
  ChallengeFraudReported,
  ChallengeResendRequested,
  ChallengeDeniedByUser,
  ChallengeUserBlocked,
  ChallengeVoided,
  UserBlocked,
  FraudReported,
  IpLocked,
  IpUnlocked,
  IpThrottled,
  FraudNotificationSent,
  FraudNotificationFailed,
  SmsSent,
  SmsDeliveryFailed,
  VoiceCallPlaced,
  VoiceCallFailed,
  SmsDeliveryReported,
  PushSent,
  PushDeliveryFailed,
  PushDeviceActivated,
  PushDeviceDeleted,
  PushDeviceNeedsRegistration,
  ApiClientCreated,
  ApiClientRevoked,
  AdminActionRecorded,
} as const;
export type EventType = keyof typeof EventSchemas;
export type EventOf<T extends EventType> = z.infer<(typeof EventSchemas)[T]>;
/** One version of a type stored in several (`EventOf` is the union of them). */
export type EventVersion<T extends EventType, V extends EventOf<T>['version']> = Extract<EventOf<T>, { version: V }>;
export type AnyEvent = { [T in EventType]: EventOf<T> }[EventType];

export type TenantEvent = EventOf<'TenantCreated' | 'TenantSettingsChanged' | 'TenantDeleted' | 'TenantErased'>;
/** The events of a user aggregate (one subject per user), the decider's and the projector's. */
export const USER_EVENT_TYPES = [
  'PushDeviceActivated',
  'PushDeviceDeleted',
  'PushDeviceNeedsRegistration',
  'UserRegistered',
  'UserProfileChanged',
  'UserErased',
  'UserMfaReset',
  'TotpTokenEnrolled',
  'TotpTokenActivated',
  'TotpTokenDeleted',
  'HardwareTokenAssigned',
  'DefaultMethodChosen',
  'AppPasswordCreated',
  'AppPasswordDeleted',
  'AppPasswordUsed',
  'UserPinSet',
  'SecretsResealed',
] as const satisfies readonly EventType[];
export type UserEvent = EventOf<(typeof USER_EVENT_TYPES)[number]>;
/** The events of a hardware token's inventory aggregate (one subject per tenant and serial number). */
export const OATH_TOKEN_EVENT_TYPES = ['OathTokenImported', 'OathTokenAssigned', 'OathTokenUnassigned', 'OathTokenActivated', 'OathTokenResealed'] as const satisfies readonly EventType[];
export type OathTokenEvent = EventOf<(typeof OATH_TOKEN_EVENT_TYPES)[number]>;
export type FraudUserEvent = EventOf<'UserBlocked' | 'UserUnblocked'>;
export type FraudIpEvent = EventOf<'IpLocked' | 'IpUnlocked'>;
export type ChallengeEvent = EventOf<
  | 'ChallengeStarted'
  | 'ChallengeRegistrationRequired'
  | 'ChallengeApproved'
  | 'ChallengeCodeRejected'
  | 'ChallengeAttemptsExhausted'
  | 'ChallengeExpired'
  | 'ChallengeDenied'
  | 'ChallengeBypassed'
  | 'ChallengeFraudReported'
  | 'ChallengeResendRequested'
  | 'ChallengeDeniedByUser'
  | 'ChallengeUserBlocked'
  | 'ChallengeVoided'
>;
export type DispatchEvent = EventOf<'SmsSent' | 'SmsDeliveryFailed' | 'VoiceCallPlaced' | 'VoiceCallFailed' | 'SmsDeliveryReported' | 'PushSent' | 'PushDeliveryFailed'>;
export type ApiClientEvent = EventOf<'ApiClientCreated' | 'ApiClientRevoked'>;

/**
 * Upcasters turn an older stored version into the current one, on read. Keyed by
 * `${type}@${version}`. None yet. The types stored in two versions (UserRegistered,
 * UserProfileChanged, ChallengeStarted, ChallengeRegistrationRequired) have none on purpose:
 * turning a v1 profile into v2 `pii`, or back, needs the user's data key (I/O, and gone once the
 * user is erased), so both versions are parsed as they are and the services that hold the keys
 * read either.
 */
export const upcasters: Record<string, (raw: Record<string, unknown>) => Record<string, unknown>> = {};

export class UnknownEventError extends Error {
  override name = 'UnknownEventError';
}

// Own properties only: a stored type such as "constructor" or "__proto__" must read as unknown,
// not as a property every object inherits.
const ownEntry = <V>(table: Record<string, V>, key: string): V | undefined =>
  Object.hasOwn(table, key) ? table[key] : undefined;
// String() of a parsed JSON object can throw ({"toString":1}); only strings and numbers are shown.
const shown = (value: unknown): string => (typeof value === 'string' || typeof value === 'number' ? String(value) : typeof value);

/** Parses and validates a stored event, upcasting older versions. Throws on anything unknown. */
export function parseEvent(raw: unknown): AnyEvent {
  if (typeof raw !== 'object' || raw === null) throw new UnknownEventError('event is not an object');
  let value = raw as Record<string, unknown>;
  for (let hops = 0; hops < 10; hops++) {
    const up = ownEntry(upcasters, `${shown(value.type)}@${shown(value.version)}`);
    if (!up) break;
    value = up(value);
  }
  const schema = typeof value.type === 'string' ? ownEntry<z.ZodType>(EventSchemas, value.type) : undefined;
  if (!schema) throw new UnknownEventError(`unknown event type ${JSON.stringify(shown(value.type)).slice(0, 80)}`);
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new UnknownEventError(`invalid ${String(value.type)} event: ${parsed.error.issues[0]?.message ?? 'invalid'}`, {
      cause: parsed.error,
    });
  }
  return parsed.data as AnyEvent;
}
