import { z } from 'zod';
import { UserPhoneNumber } from './phone.js';
import { TenantSettings, TenantSettingsPatch } from './tenant-settings.js';
import {
  Application,
  ChallengeReason,
  ChallengeStatus,
  DisplayName,
  Email,
  IpAddress,
  IsoDateTime,
  Label,
  Language,
  Method,
  METHODS,
  OpaqueId,
  OtpCode,
  PhoneNumber,
  RequestId,
  SigninVia,
  TenantId,
  UserId,
} from './primitives.js';
import { DeviceItem, UsersDevicesDeleteRequest, UsersPushEnrollRequest } from './push.js';
import { VoiceMessagesDeleteRequest, VoiceMessagesListRequest, VoiceMessagesUploadRequest } from './voice-messages.js';
import { MAX_IMPORT_REQUEST_BYTES, OathImportRequest, OathImportStatusRequest, OathTokensActivateRequest, OathTokensAssignRequest, OathTokensListRequest } from './oath.js';

/**
 * The public NATS API, version 1 (docs/api.md). Subject names are fixed:
 * tests and IdPs outside this repository use them. All are request/reply with JSON bodies.
 */
export const API_VERSION = 1 as const;

export const Subjects = {
  usersRegister: 'mfa.v1.users.register',
  totpEnroll: 'mfa.v1.users.totp.enroll',
  totpActivate: 'mfa.v1.users.totp.activate',
  challengeStart: 'mfa.v1.challenge.start',
  challengeVerify: 'mfa.v1.challenge.verify',
  challengeStatus: 'mfa.v1.challenge.status',
  challengeResend: 'mfa.v1.challenge.resend',
  reportsSigninsQuery: 'mfa.v1.reports.signins.query',
  usersBlock: 'mfa.v1.users.block',
  fraudReport: 'mfa.v1.fraud.report',
  usersUnblock: 'mfa.v1.users.unblock',
  usersDelete: 'mfa.v1.users.delete',
  usersGet: 'mfa.v1.users.get',
  usersList: 'mfa.v1.users.list',
  usersReset: 'mfa.v1.users.reset',
  usersMethodsDefault: 'mfa.v1.users.methods.default',
  usersRememberedRevoke: 'mfa.v1.users.remembered.revoke',
  usersAppPasswordsCreate: 'mfa.v1.users.apppasswords.create',
  usersAppPasswordsDelete: 'mfa.v1.users.apppasswords.delete',
  appPasswordsVerify: 'mfa.v1.apppasswords.verify',
  usersTokensDelete: 'mfa.v1.users.tokens.delete',
  usersPinSet: 'mfa.v1.users.pin.set',
  tenantsConfigure: 'mfa.v1.tenants.configure',
  tenantsGet: 'mfa.v1.tenants.get',
  tenantsDelete: 'mfa.v1.tenants.delete',
  clientsCreate: 'mfa.v1.clients.create',
  clientsList: 'mfa.v1.clients.list',
  clientsRevoke: 'mfa.v1.clients.revoke',
  reportsAuditQuery: 'mfa.v1.reports.audit.query',
  reportsFraudQuery: 'mfa.v1.reports.fraud.query',
  reportsBlockedQuery: 'mfa.v1.reports.blocked.query',
  reportsUsageQuery: 'mfa.v1.reports.usage.query',
  fraudIpsList: 'mfa.v1.fraud.ips.list',
  fraudIpsUnlock: 'mfa.v1.fraud.ips.unlock',
  voiceMessagesUpload: 'mfa.v1.voice.messages.upload',
  voiceMessagesList: 'mfa.v1.voice.messages.list',
  voiceMessagesDelete: 'mfa.v1.voice.messages.delete',
  usersPushEnroll: 'mfa.v1.users.push.enroll',
  usersDevicesDelete: 'mfa.v1.users.devices.delete',
  oathImport: 'mfa.v1.oath.import',
  oathImportStatus: 'mfa.v1.oath.import.status',
  oathTokensList: 'mfa.v1.oath.tokens.list',
  oathTokensAssign: 'mfa.v1.oath.tokens.assign',
  oathTokensActivate: 'mfa.v1.oath.tokens.activate',
} as const;
export type ApiSubject = (typeof Subjects)[keyof typeof Subjects];

/** Rows of a report or listing page: at most, and when the request does not say. */
export const MAX_REPORT_PAGE = 500;
export const DEFAULT_REPORT_PAGE = 50;

/** Largest request body any subject accepts; larger ones answer `invalid_request`. */
export const MAX_REQUEST_BYTES = 16 * 1024;

/** Subjects that carry a file inline and so accept a larger body than MAX_REQUEST_BYTES. */
export const LARGE_REQUEST_BYTES: Readonly<Record<string, number>> = {
  'mfa.v1.oath.import': MAX_IMPORT_REQUEST_BYTES,
};
/** The largest body `subject` accepts. */
export function maxRequestBytes(subject: string): number {
  return LARGE_REQUEST_BYTES[subject] ?? MAX_REQUEST_BYTES;
}

// ---- tenants ---------------------------------------------------------------------------------

export const TenantsConfigureRequest = z.strictObject({
  tenantId: TenantId,
  settings: TenantSettingsPatch,
});
export type TenantsConfigureRequest = z.infer<typeof TenantsConfigureRequest>;
export const TenantsConfigureReply = z.object({ tenantId: TenantId, settings: TenantSettings });
export type TenantsConfigureReply = z.infer<typeof TenantsConfigureReply>;

export const TenantsGetRequest = z.object({ tenantId: TenantId });
export type TenantsGetRequest = z.infer<typeof TenantsGetRequest>;
export const TenantsGetReply = TenantsConfigureReply;
export type TenantsGetReply = TenantsConfigureReply;

/**
 * Offboards a tenant (the platform key only): from the first reply the tenant is unknown to every
 * request and its API keys are revoked; its users are then erased (crypto-shredding), its hardware
 * tokens, recordings and import files deleted, in the background. Sent again, it answers where
 * that stands: `deleting` until everything is gone, then `deleted` (the id may then be created
 * again, as a new tenant with nothing of the old one).
 */
export const TenantsDeleteRequest = z.object({ tenantId: TenantId });
export type TenantsDeleteRequest = z.infer<typeof TenantsDeleteRequest>;
export const TenantsDeleteReply = z.object({
  tenantId: TenantId,
  state: z.enum(['deleting', 'deleted']),
  /** When the deletion was asked (the first request). */
  deletedAt: IsoDateTime,
  /** Once `deleted`: when the last of it was erased, and what was (users erased, hardware tokens and recordings deleted, API clients revoked). */
  erasedAt: IsoDateTime.optional(),
  erased: z.object({ users: z.number(), hardwareTokens: z.number(), recordings: z.number(), clients: z.number() }).optional(),
});
export type TenantsDeleteReply = z.infer<typeof TenantsDeleteReply>;

// ---- API clients -----------------------------------------------------------------------------

/** What an API key may do (docs/api.md, "Callers, keys and scopes"). */
export const SCOPES = ['challenges', 'users', 'reports', 'admin'] as const;
export const Scope = z.enum(SCOPES);
export type Scope = z.infer<typeof Scope>;

export const ClientsCreateRequest = z.object({
  tenantId: TenantId,
  name: Label,
  scopes: z
    .array(Scope)
    .min(1, 'must name at least one scope')
    .max(SCOPES.length)
    .refine((s) => new Set(s).size === s.length, 'must not repeat a scope'),
});
export type ClientsCreateRequest = z.infer<typeof ClientsCreateRequest>;
export const ClientsCreateReply = z.object({
  clientId: z.string(),
  /** Shown once: only a keyed hash of it is stored. */
  apiKey: z.string(),
  name: z.string(),
  scopes: z.array(Scope),
  createdAt: IsoDateTime,
});
export type ClientsCreateReply = z.infer<typeof ClientsCreateReply>;

export const ClientsListRequest = z.object({ tenantId: TenantId });
export type ClientsListRequest = z.infer<typeof ClientsListRequest>;
export const ClientItem = z.object({
  clientId: z.string(),
  name: z.string(),
  scopes: z.array(Scope),
  createdAt: IsoDateTime,
  /** Coalesced: accurate to about a minute (docs/api.md). */
  lastUsedAt: IsoDateTime.optional(),
  revokedAt: IsoDateTime.optional(),
});
export type ClientItem = z.infer<typeof ClientItem>;
export const ClientsListReply = z.object({ items: z.array(ClientItem) });
export type ClientsListReply = z.infer<typeof ClientsListReply>;

export const ClientsRevokeRequest = z.object({ tenantId: TenantId, clientId: OpaqueId });
export type ClientsRevokeRequest = z.infer<typeof ClientsRevokeRequest>;
export const ClientsRevokeReply = z.object({ clientId: z.string(), revokedAt: IsoDateTime });
export type ClientsRevokeReply = z.infer<typeof ClientsRevokeReply>;

/** Why an administrator did something: free text, kept in the audit trail. */
export const Reason = DisplayName;

// ---- users -----------------------------------------------------------------------------------

export const UsersRegisterRequest = z.object({
  tenantId: TenantId,
  userId: UserId,
  displayName: DisplayName.optional(),
  email: Email.optional(),
  phoneNumber: UserPhoneNumber.optional(),
  /** An office phone's extension (1–10 digits): a call dials it once connected. */
  phoneExtension: z.string().regex(/^\d{1,10}$/, 'must be 1 to 10 digits').optional(),
  language: Language.optional(),
});
export type UsersRegisterRequest = z.infer<typeof UsersRegisterRequest>;
export const UsersRegisterReply = z.object({ userId: UserId, methods: z.array(Method) });
export type UsersRegisterReply = z.infer<typeof UsersRegisterReply>;

/**
 * A user (from the app or a phone call) or the IdP reports a sign-in as fraudulent: the pending
 * challenge named is denied (`fraud_reported`) and, with the tenant's `fraudAlert.autoBlock`, the
 * user is blocked for 90 days.
 */
export const FraudReportRequest = z.object({
  tenantId: TenantId,
  userId: UserId,
  challengeId: OpaqueId.optional(),
  source: z.enum(['app', 'phone', 'idp']),
  comment: DisplayName.optional(),
});
export type FraudReportRequest = z.infer<typeof FraudReportRequest>;
export const FraudReportReply = z.object({
  alertId: z.string(),
  challengeDenied: z.boolean(),
  blocked: z.boolean(),
  blockedUntil: z.string().optional(),
});
export type FraudReportReply = z.infer<typeof FraudReportReply>;

/** The client addresses the tenant's per-IP lockout holds now (dry-run ones with `dryRun: true`). */
export const FraudIpsListRequest = z.object({ tenantId: TenantId });
export type FraudIpsListRequest = z.infer<typeof FraudIpsListRequest>;
export const LockedIp = z.object({
  /** An IPv4 address, or the /64 of an IPv6 one. */
  ip: z.string(),
  lockedAt: z.string(),
  until: z.string(),
  failures: z.number(),
  users: z.number(),
  dryRun: z.boolean(),
});
export const FraudIpsListReply = z.object({ items: z.array(LockedIp) });
export type FraudIpsListReply = z.infer<typeof FraudIpsListReply>;
/** Admin: lifts the lock of an address (of its /64 for IPv6) before its end; the reason is required. */
export const FraudIpsUnlockRequest = z.object({ tenantId: TenantId, ip: IpAddress, reason: Reason });
export type FraudIpsUnlockRequest = z.infer<typeof FraudIpsUnlockRequest>;
export const FraudIpsUnlockReply = z.object({ ip: z.string() });
export type FraudIpsUnlockReply = z.infer<typeof FraudIpsUnlockReply>;

/** A user as the tenant's administrators see it: profile, methods, tokens, devices, block. */
export const UsersGetRequest = z.object({ tenantId: TenantId, userId: UserId });
export type UsersGetRequest = z.infer<typeof UsersGetRequest>;
export const UsersGetReply = z.object({
  userId: z.string(),
  displayName: z.string().nullable(),
  email: z.string().nullable(),
  phoneNumber: z.string().nullable(),
  /** Present when the user's phone has an extension. */
  phoneExtension: z.string().optional(),
  language: z.string().nullable(),
  methods: z.array(Method),
  defaultMethod: Method.nullable(),
  tokens: z.array(
    z.object({
      tokenId: z.string(),
      kind: z.enum(['app', 'hardware']),
      label: z.string(),
      serialNumber: z.string().optional(),
      state: z.enum(['pending', 'active']),
    }),
  ),
  devices: z.array(DeviceItem),
  /** The block in force (users.block, or a fraud report's auto-block), or null. */
  blocked: z.object({ until: IsoDateTime, reason: z.string() }).nullable(),
  /** How many app passwords the user has (the contract's count); appPasswordList names them. */
  appPasswords: z.number(),
  /** The user's app passwords in creation order (never the password: only a hash of it is kept); users.apppasswords.delete takes their id. */
  appPasswordList: z.array(z.object({ appPasswordId: z.string(), name: z.string().nullable(), createdAt: IsoDateTime })),
  /** Browsers remembered (rememberMfa) and not expired, newest first: users.remembered.revoke takes their id. */
  rememberedBrowsers: z.array(z.object({ rememberId: z.string(), createdAt: IsoDateTime, until: IsoDateTime })),
});
export type UsersGetReply = z.infer<typeof UsersGetReply>;

/** users.list's method filter: a method the user has now, or `none` (no method: the user must register before MFA). */
export const UsersListMethod = z.enum([...METHODS, 'none']);
export type UsersListMethod = z.infer<typeof UsersListMethod>;

/**
 * Finds users: those whose user id, display name or phone number starts with `query`
 * (case-insensitive), or every user; ordered by user id, keyset pages.
 */
export const UsersListRequest = z.object({
  tenantId: TenantId,
  query: z.string().min(1).max(256).optional(),
  blocked: z.boolean().optional(),
  /** Only users who have this method now (as `methods` lists them), or `none`: users with no method, who must register before MFA. */
  method: UsersListMethod.optional(),
  limit: z.int().min(1).max(MAX_REPORT_PAGE).default(DEFAULT_REPORT_PAGE),
  cursor: z.string().min(1).max(512).optional(),
});
export type UsersListRequest = z.infer<typeof UsersListRequest>;
export const UsersListReply = z.object({
  items: z.array(z.object({ userId: z.string(), displayName: z.string().nullable(), blocked: z.boolean(), methods: z.array(z.string()) })),
  nextCursor: z.string().optional(),
});
export type UsersListReply = z.infer<typeof UsersListReply>;

/** Admin: clears every method of the user (tokens, phone and PIN, devices and unused activation codes, app passwords, default method, remembered browsers): they must register again. */
export const UsersResetRequest = z.object({ tenantId: TenantId, userId: UserId });
export type UsersResetRequest = z.infer<typeof UsersResetRequest>;
export const UsersResetReply = z.object({ userId: z.string(), reset: z.literal(true) });
export type UsersResetReply = z.infer<typeof UsersResetReply>;
/** Chooses the method a start without one uses (it must be one the user has registered). */
export const UsersMethodsDefaultRequest = z.object({ tenantId: TenantId, userId: UserId, method: Method });
export type UsersMethodsDefaultRequest = z.infer<typeof UsersMethodsDefaultRequest>;
export const UsersMethodsDefaultReply = z.object({ userId: z.string(), defaultMethod: Method });
export type UsersMethodsDefaultReply = z.infer<typeof UsersMethodsDefaultReply>;
/** A password for a legacy client of the user (shown once); the tenant's appPasswords.allowed must be on. */
export const UsersAppPasswordsCreateRequest = z.object({ tenantId: TenantId, userId: UserId, name: Label.optional() });
export type UsersAppPasswordsCreateRequest = z.infer<typeof UsersAppPasswordsCreateRequest>;
export const UsersAppPasswordsCreateReply = z.object({ appPasswordId: z.string(), password: z.string() });
export type UsersAppPasswordsCreateReply = z.infer<typeof UsersAppPasswordsCreateReply>;
export const UsersAppPasswordsDeleteRequest = z.object({ tenantId: TenantId, userId: UserId, appPasswordId: OpaqueId.optional() });
export type UsersAppPasswordsDeleteRequest = z.infer<typeof UsersAppPasswordsDeleteRequest>;
export const UsersAppPasswordsDeleteReply = z.object({ userId: z.string(), deleted: z.number() });
export type UsersAppPasswordsDeleteReply = z.infer<typeof UsersAppPasswordsDeleteReply>;
/** Whether a legacy client's password is one of the user's app passwords (rate-limited). */
export const AppPasswordsVerifyRequest = z.object({ tenantId: TenantId, userId: UserId, password: z.string().min(1).max(256) });
export type AppPasswordsVerifyRequest = z.infer<typeof AppPasswordsVerifyRequest>;
export const AppPasswordsVerifyReply = z.object({ valid: z.boolean() });
export type AppPasswordsVerifyReply = z.infer<typeof AppPasswordsVerifyReply>;
/** The PIN of voice PIN mode: 4 to 8 digits, kept only as a slow salted hash (sealed). */
export const UsersPinSetRequest = z.object({ tenantId: TenantId, userId: UserId, pin: z.string().regex(/^\d{4,8}$/, 'must be 4 to 8 digits') });
export type UsersPinSetRequest = z.infer<typeof UsersPinSetRequest>;
export const UsersPinSetReply = z.object({ userId: z.string(), pinSet: z.literal(true) });
export type UsersPinSetReply = z.infer<typeof UsersPinSetReply>;

/** Forgets one remembered browser of the user, or all of them when `rememberId` is omitted. */
export const UsersRememberedRevokeRequest = z.object({ tenantId: TenantId, userId: UserId, rememberId: OpaqueId.optional() });
export type UsersRememberedRevokeRequest = z.infer<typeof UsersRememberedRevokeRequest>;
export const UsersRememberedRevokeReply = z.object({ userId: z.string(), revoked: z.number() });
export type UsersRememberedRevokeReply = z.infer<typeof UsersRememberedRevokeReply>;
/** Removes one of the user's tokens (pending or active). */
export const UsersTokensDeleteRequest = z.object({ tenantId: TenantId, userId: UserId, tokenId: OpaqueId });
export type UsersTokensDeleteRequest = z.infer<typeof UsersTokensDeleteRequest>;
export const UsersTokensDeleteReply = z.object({ userId: z.string(), tokenId: z.string(), deleted: z.literal(true) });
export type UsersTokensDeleteReply = z.infer<typeof UsersTokensDeleteReply>;

/** Admin: blocks the user for 90 days (every start is denied, reason `user_blocked`). */
export const UsersBlockRequest = z.object({ tenantId: TenantId, userId: UserId, reason: Reason });
export type UsersBlockRequest = z.infer<typeof UsersBlockRequest>;
export const UsersBlockReply = z.object({ userId: z.string(), blockedUntil: z.string() });
export type UsersBlockReply = z.infer<typeof UsersBlockReply>;

/** Admin: lifts the user's block and lockouts (the per-window one and the consecutive-failure cap). */
export const UsersUnblockRequest = z.object({ tenantId: TenantId, userId: UserId, reason: Reason });
export type UsersUnblockRequest = z.infer<typeof UsersUnblockRequest>;
export const UsersUnblockReply = z.object({ userId: z.string(), unblocked: z.literal(true) });
export type UsersUnblockReply = z.infer<typeof UsersUnblockReply>;

/**
 * Admin: erases the user (crypto-shredding). Their personal data becomes unreadable everywhere,
 * the event log included, and report rows keep only a pseudonymous id. Deleting an erased user
 * again answers `deleted` too.
 *
 * `onlyIfKeyErased` (a data key generation) erases only to complete an erasure the key store made
 * and the event log misses (a restore of the two from different moments): answered `deleted` with
 * nothing recorded when the log already erases that generation or a later one, carried out when
 * MFA_USER_KEYS holds the tombstone of that generation or a later one for a user the log has
 * registered, and refused with `conflict` otherwise (the user's key is live, or there is no
 * tombstone). A `users.register` that completed the erasure first and registered the user again is
 * left alone: the erasure is recorded, so the reply is `deleted`.
 */
export const UsersDeleteRequest = z.object({ tenantId: TenantId, userId: UserId, onlyIfKeyErased: z.int().positive().optional() });
export type UsersDeleteRequest = z.infer<typeof UsersDeleteRequest>;
export const UsersDeleteReply = z.object({ userId: z.string(), deleted: z.literal(true) });
export type UsersDeleteReply = z.infer<typeof UsersDeleteReply>;

export const TotpEnrollRequest = z.object({ tenantId: TenantId, userId: UserId, label: Label.optional() });
export type TotpEnrollRequest = z.infer<typeof TotpEnrollRequest>;
export const TotpEnrollReply = z.object({
  tokenId: z.string(),
  secret: z.string(),
  otpauthUri: z.string(),
  digits: z.literal(6),
  period: z.literal(30),
  algorithm: z.literal('SHA1'),
});
export type TotpEnrollReply = z.infer<typeof TotpEnrollReply>;

export const TotpActivateRequest = z.object({
  tenantId: TenantId,
  userId: UserId,
  tokenId: OpaqueId,
  code: OtpCode,
});
export type TotpActivateRequest = z.infer<typeof TotpActivateRequest>;
export const TotpActivateReply = z.object({ tokenId: z.string(), active: z.boolean() });
export type TotpActivateReply = z.infer<typeof TotpActivateReply>;

// ---- challenges ------------------------------------------------------------------------------

/** What the IdP knows of the sign-in besides the user (MISSION, "Challenges (additions)"). */
export const ChallengeContext = z.strictObject({
  /** A federated claim: the user signs in from inside the corporate network (trustedIps.federatedBypass). */
  insideCorporateNetwork: z.boolean().optional(),
  /** The token a verify returned for this browser (rememberMfa). */
  rememberToken: z.string().min(1).max(256).optional(),
  /** Ask for a remember token when this challenge is approved. */
  rememberDevice: z.boolean().optional(),
  /** A client that cannot show an MFA prompt (IMAP, old Office): app passwords and last-MFA rules apply. */
  legacyClient: z.boolean().optional(),
  /**
   * Sent by the RADIUS front: the RADIUS client the request came through (its configured name, or
   * its CIDR) and the address of the NAS that sent it. The sign-in is recorded with this server and
   * `via: "radius"`. `passwordMode: "otp"`: the client cannot answer an Access-Challenge, so the
   * start never picks SMS (the user could not type its code back).
   */
  radius: z
    .strictObject({
      serverName: Label,
      serverIp: IpAddress,
      passwordMode: z.enum(['challenge', 'otp']).optional(),
    })
    .optional(),
});
export type ChallengeContext = z.infer<typeof ChallengeContext>;

export const ChallengeStartRequest = z.object({
  tenantId: TenantId,
  userId: UserId,
  method: Method.optional(),
  clientIp: IpAddress.optional(),
  application: Application.optional(),
  requestId: RequestId.optional(),
  context: ChallengeContext.optional(),
});
export type ChallengeStartRequest = z.infer<typeof ChallengeStartRequest>;
export const ChallengeStartReply = z.object({
  challengeId: z.string(),
  status: ChallengeStatus,
  method: Method.nullable(),
  expiresAt: IsoDateTime,
  reason: ChallengeReason.optional(),
  /** With a pending push: the two digits the sign-in page shows; the user types them in the app. */
  numberMatch: z.string().optional(),
  /** With a pending sms or voice challenge: the phone number used, masked (`+*********78`: only the last two digits shown). */
  sentTo: z.string().optional(),
});
export type ChallengeStartReply = z.infer<typeof ChallengeStartReply>;

export const ChallengeVerifyRequest = z.object({ tenantId: TenantId, challengeId: OpaqueId, code: OtpCode });
export type ChallengeVerifyRequest = z.infer<typeof ChallengeVerifyRequest>;
export const ChallengeStatusRequest = z.object({ tenantId: TenantId, challengeId: OpaqueId });
export type ChallengeStatusRequest = z.infer<typeof ChallengeStatusRequest>;
export const ChallengeVerifyReply = z.object({
  challengeId: z.string(),
  status: ChallengeStatus,
  reason: ChallengeReason.optional(),
  /** With an approval of a start that asked `context.rememberDevice` (and the tenant's rememberMfa): give it back at the next start. */
  rememberToken: z.string().optional(),
  rememberUntil: IsoDateTime.optional(),
});
export type ChallengeVerifyReply = z.infer<typeof ChallengeVerifyReply>;
export const ChallengeStatusReply = ChallengeVerifyReply.extend({
  /**
   * With `denied` / `delivery_failed` (no provider delivered the SMS): the user's other methods the
   * tenant allows. A new start without a method takes one of them.
   */
  fallbackMethods: z.array(Method).optional(),
});
export type ChallengeStatusReply = z.infer<typeof ChallengeStatusReply>;

/** Sends the code of a pending SMS challenge again: the same code, through the next healthy provider. */
export const ChallengeResendRequest = z.object({ tenantId: TenantId, challengeId: OpaqueId });
export type ChallengeResendRequest = z.infer<typeof ChallengeResendRequest>;
export const ChallengeResendReply = z.object({
  challengeId: z.string(),
  status: z.literal('pending'),
  /** Further resends this challenge allows (its sends are capped, the start's included). */
  resendsRemaining: z.int().nonnegative(),
});
export type ChallengeResendReply = z.infer<typeof ChallengeResendReply>;

// ---- reports ---------------------------------------------------------------------------------

export const SIGNIN_RESULTS = ['success', 'failure'] as const;
export const SigninResult = z.enum(SIGNIN_RESULTS);
export type SigninResult = z.infer<typeof SigninResult>;

/** Filters every keyset report takes: a time range (from inclusive, to exclusive), a page size and a cursor. */
const reportPage = {
  from: IsoDateTime.optional(),
  to: IsoDateTime.optional(),
  limit: z.int().min(1).max(MAX_REPORT_PAGE).default(DEFAULT_REPORT_PAGE),
  cursor: z.string().min(1).max(512).optional(),
};
/** A report query whose page and range are `reportPage`'s, with the range checked. */
const reportQuery = <S extends z.ZodRawShape>(shape: S) =>
  z.object({ ...shape, ...reportPage }).refine(
    (q) => {
      const { from, to } = q as { from?: string; to?: string };
      return from === undefined || to === undefined || Date.parse(from) <= Date.parse(to);
    },
    { message: 'from must not be after to', path: ['from'] },
  );

export const SigninsQueryRequest = reportQuery({
  tenantId: TenantId,
  userId: UserId.optional(),
  /** One sign-in (its detail). */
  challengeId: OpaqueId.optional(),
  result: SigninResult.optional(),
  /** Only the sign-ins that came this way (`radius`: through the RADIUS front). */
  via: SigninVia.optional(),
});
export type SigninsQueryRequest = z.infer<typeof SigninsQueryRequest>;

export const SigninItem = z.object({
  challengeId: z.string(),
  occurredAt: IsoDateTime,
  userId: z.string(),
  displayName: z.string().nullable(),
  email: z.string().nullable(),
  phoneNumber: z.string().nullable(),
  deviceToken: z.string().nullable(),
  authMethod: z.string().nullable(),
  result: SigninResult,
  resultDetail: z.string(),
  serverName: z.string().nullable(),
  serverIp: z.string().nullable(),
  clientIp: z.string().nullable(),
  application: z.string().nullable(),
  /** How the sign-in came: `radius` (the RADIUS front; `serverName`/`serverIp` are then the RADIUS client and its NAS) or `nats`. */
  via: SigninVia,
  /**
   * SMS and calls: how far the code or call got, as the provider told (`sent`: accepted by it;
   * `delivered` / `undelivered`: the handset's receipt; `failed`: never accepted), with the
   * provider's error when it gave one. Absent for methods that send nothing.
   */
  delivery: z
    .object({ status: z.enum(['sent', 'delivered', 'undelivered', 'failed']), provider: z.string().nullable(), error: z.string().nullable() })
    .optional(),
  /** SMS: how many times the code was sent again (challenge.resend); absent when never. */
  resends: z.int().positive().optional(),
  /** Push: the authenticator app whose signed answer decided (approved, denied, a wrong number); absent otherwise. */
  deviceId: z.string().optional(),
});
export type SigninItem = z.infer<typeof SigninItem>;
export const SigninsQueryReply = z.object({ items: z.array(SigninItem), nextCursor: z.string().optional() });
export type SigninsQueryReply = z.infer<typeof SigninsQueryReply>;

/** A NATS subject as the audit trail records it: dot-separated tokens of letters, digits, `_` and `-` (no wildcards). */
const AuditedSubject = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/, 'must be a NATS subject such as mfa.v1.users.delete (no wildcards)');
export const AuditQueryRequest = reportQuery({
  tenantId: TenantId,
  clientId: OpaqueId.optional(),
  userId: UserId.optional(),
  /** The console operator who acted, by the `sub` their items carry in `operator` (exact). */
  operator: DisplayName.optional(),
  /** The action's subject, exactly as items carry it (`mfa.v1.users.delete`). */
  subject: AuditedSubject.optional(),
});
export type AuditQueryRequest = z.infer<typeof AuditQueryRequest>;

export const FRAUD_SOURCES = ['app', 'phone', 'idp'] as const;
/** reports.fraud.query: the fraud alerts, newest first. */
export const FraudQueryRequest = reportQuery({ tenantId: TenantId, userId: UserId.optional(), source: z.enum(FRAUD_SOURCES).optional() });
export type FraudQueryRequest = z.infer<typeof FraudQueryRequest>;
export const FraudItem = z.object({
  alertId: z.string(),
  occurredAt: IsoDateTime,
  userId: z.string(),
  /** From the reported sign-in's row (null without a challenge, or when the tenant leaves them out). */
  displayName: z.string().nullable(),
  email: z.string().nullable(),
  phoneNumber: z.string().nullable(),
  /** The reported sign-in's deciding app (its row's deviceId): for a push reported from the app, the app that reported it. */
  deviceId: z.string().nullable(),
  source: z.enum(FRAUD_SOURCES),
  clientIp: z.string().nullable(),
  application: z.string().nullable(),
  challengeId: z.string().nullable(),
  comment: z.string().nullable(),
  /** What was done: the pending challenge denied, the user blocked (until when). */
  challengeDenied: z.boolean(),
  blocked: z.boolean(),
  blockedUntil: IsoDateTime.nullable(),
  /** The API client that reported it, when known. */
  reportedBy: z.string().nullable(),
  /** The alert's e-mails: sent, and given up after every try. */
  notifications: z.object({ sent: z.number(), failed: z.number() }),
});
export type FraudItem = z.infer<typeof FraudItem>;
export const FraudQueryReply = z.object({ items: z.array(FraudItem), nextCursor: z.string().optional() });
export type FraudQueryReply = z.infer<typeof FraudQueryReply>;

export const BLOCK_ACTIONS = ['block', 'unblock', 'auto_unblock', 'ip_lock', 'ip_unlock'] as const;
/** reports.blocked.query: the history of blocks (users) and locks (client addresses), newest first. */
export const BlockedQueryRequest = reportQuery({
  tenantId: TenantId,
  userId: UserId.optional(),
  /** An address, or an IPv6 /64 as the per-IP lockout records it ("2001:db8:1:2::/64"). */
  ip: z.string().min(2).max(64).optional(),
  action: z.enum(BLOCK_ACTIONS).optional(),
});
export type BlockedQueryRequest = z.infer<typeof BlockedQueryRequest>;
export const BlockedItem = z.object({
  occurredAt: IsoDateTime,
  action: z.enum(BLOCK_ACTIONS),
  userId: z.string().nullable(),
  ip: z.string().nullable(),
  reason: z.string().nullable(),
  /** What blocked: `admin` (users.block), `fraud_report` (auto-block), `ip_lockout`; null for unblocks. */
  source: z.enum(['admin', 'fraud_report', 'ip_lockout']).nullable(),
  /** Who acted (API client, console operator); null for the service itself. */
  actor: z.object({ clientId: z.string().optional(), operator: z.string().optional() }).nullable(),
  /** When a block or lock ends. */
  until: IsoDateTime.nullable(),
  /** An IP lock recorded by the dry run: nothing was locked. */
  dryRun: z.boolean(),
});
export type BlockedItem = z.infer<typeof BlockedItem>;
export const BlockedQueryReply = z.object({ items: z.array(BlockedItem), nextCursor: z.string().optional() });
export type BlockedQueryReply = z.infer<typeof BlockedQueryReply>;

/**
 * Periods a usage query may span at most, per granularity: two years of days, 20 years of months;
 * the console's overview also reads the last day by minute and the last month by hour.
 */
export const USAGE_GRANULARITIES = ['minute', 'hour', 'day', 'month'] as const;
export const MAX_USAGE_SPAN_MS: Record<(typeof USAGE_GRANULARITIES)[number], number> = {
  minute: 1_440 * 60_000,
  hour: 744 * 3_600_000,
  day: 731 * 86_400_000,
  month: 7_305 * 86_400_000,
};
/** reports.usage.query: per minute, hour, day or month (UTC) in [from, to), oldest first. */
export const UsageQueryRequest = z
  .object({
    tenantId: TenantId,
    from: IsoDateTime,
    to: IsoDateTime,
    granularity: z.enum(USAGE_GRANULARITIES),
    limit: z.int().min(1).max(MAX_REPORT_PAGE).default(DEFAULT_REPORT_PAGE),
    cursor: z.string().min(1).max(512).optional(),
  })
  .refine((q) => Date.parse(q.from) < Date.parse(q.to), { message: 'from must be before to', path: ['from'] })
  .refine((q) => Date.parse(q.to) - Date.parse(q.from) <= MAX_USAGE_SPAN_MS[q.granularity], {
    message: 'at most 1,440 minutes, 744 hours, 731 days or 20 years per query',
    path: ['to'],
  });
export type UsageQueryRequest = z.infer<typeof UsageQueryRequest>;
export const UsageItem = z.object({
  /** The period's first day (UTC), e.g. 2026-11-01 for November with granularity month; its first instant for minute and hour. */
  period: z.string(),
  /** Authentications (sign-ins with a result) in the period: the per-authentication billing figure. */
  authentications: z.object({ total: z.number(), success: z.number(), failure: z.number() }),
  byMethod: z.array(z.object({ method: z.string(), success: z.number(), failure: z.number() })),
  /** Users registered for MFA at any time in the period: the per-enabled-user billing figure. */
  enabledUsers: z.number(),
});
export type UsageItem = z.infer<typeof UsageItem>;
/** What usage's `byMethod` counts sign-ins by, in the column order of flat exports (CSV, tables): each method, then `none` (sign-ins that never had one). */
export const USAGE_METHODS = [...METHODS, 'none'] as const;
export type UsageMethod = (typeof USAGE_METHODS)[number];
/** A usage period's sign-ins by each of USAGE_METHODS, succeeded and failed together: 0 for a method the period did not see. */
export function usageByMethod(item: Pick<UsageItem, 'byMethod'>): Record<UsageMethod, number> {
  const counts = Object.fromEntries(USAGE_METHODS.map((method) => [method, 0])) as Record<UsageMethod, number>;
  for (const m of item.byMethod) if (Object.hasOwn(counts, m.method)) counts[m.method as UsageMethod] += m.success + m.failure;
  return counts;
}
export const UsageQueryReply = z.object({ items: z.array(UsageItem), nextCursor: z.string().optional() });
export type UsageQueryReply = z.infer<typeof UsageQueryReply>;

/** The person behind an admin request of the console: same text rules as every identifier. */
export const Operator = z.object({
  sub: DisplayName,
  email: Email.optional(),
  name: DisplayName.optional(),
});
export type Operator = z.infer<typeof Operator>;

export const AuditItem = z.object({
  occurredAt: IsoDateTime,
  /** The acting API client; `platform` for MFA_PLATFORM_API_KEY, `anonymous` when MFA_AUTH=off and no key was sent. */
  clientId: z.string(),
  operator: Operator.optional(),
  subject: z.string(),
  /** The user the action was about, if any. */
  userId: z.string().optional(),
  /** `ok`, or the error code the action was answered with. */
  outcome: z.string(),
});
export type AuditItem = z.infer<typeof AuditItem>;
export const AuditQueryReply = z.object({ items: z.array(AuditItem), nextCursor: z.string().optional() });
export type AuditQueryReply = z.infer<typeof AuditQueryReply>;

// ---- who may call what -------------------------------------------------------------------------

/**
 * The scope each subject requires. `admin` also grants everything `users` may do. Every subject of
 * the `admin` scope is recorded in the audit trail. A subject missing here is refused.
 */
export const SubjectScopes: Readonly<Record<ApiSubject, Scope>> = {
  [Subjects.challengeStart]: 'challenges',
  [Subjects.challengeVerify]: 'challenges',
  [Subjects.challengeStatus]: 'challenges',
  [Subjects.challengeResend]: 'challenges',
  [Subjects.usersRegister]: 'users',
  [Subjects.totpEnroll]: 'users',
  [Subjects.totpActivate]: 'users',
  [Subjects.usersBlock]: 'admin',
  [Subjects.fraudReport]: 'challenges',
  [Subjects.usersUnblock]: 'admin',
  [Subjects.usersDelete]: 'admin',
  [Subjects.usersGet]: 'users',
  [Subjects.usersList]: 'users',
  [Subjects.usersReset]: 'admin',
  [Subjects.usersMethodsDefault]: 'users',
  [Subjects.usersRememberedRevoke]: 'users',
  [Subjects.usersAppPasswordsCreate]: 'users',
  [Subjects.usersAppPasswordsDelete]: 'users',
  [Subjects.appPasswordsVerify]: 'challenges',
  [Subjects.usersTokensDelete]: 'users',
  [Subjects.usersPinSet]: 'users',
  [Subjects.reportsSigninsQuery]: 'reports',
  [Subjects.reportsAuditQuery]: 'reports',
  [Subjects.tenantsConfigure]: 'admin',
  [Subjects.tenantsGet]: 'admin',
  [Subjects.tenantsDelete]: 'admin',
  [Subjects.clientsCreate]: 'admin',
  [Subjects.clientsList]: 'admin',
  [Subjects.clientsRevoke]: 'admin',
  [Subjects.reportsFraudQuery]: 'reports',
  [Subjects.reportsBlockedQuery]: 'reports',
  [Subjects.reportsUsageQuery]: 'reports',
  [Subjects.fraudIpsList]: 'reports',
  [Subjects.fraudIpsUnlock]: 'admin',
  [Subjects.voiceMessagesUpload]: 'admin',
  [Subjects.voiceMessagesList]: 'admin',
  [Subjects.voiceMessagesDelete]: 'admin',
  [Subjects.usersPushEnroll]: 'users',
  [Subjects.usersDevicesDelete]: 'users',
  [Subjects.oathImport]: 'admin',
  [Subjects.oathImportStatus]: 'admin',
  [Subjects.oathTokensList]: 'admin',
  [Subjects.oathTokensAssign]: 'admin',
  [Subjects.oathTokensActivate]: 'admin',
};

/** Whether a key with `granted` scopes may call a subject that requires `required`. */
export function scopeAllows(granted: ReadonlySet<Scope>, required: Scope): boolean {
  return granted.has(required) || (required === 'users' && granted.has('admin'));
}

/** Request schema per subject, for clients and tests that walk every subject. */
export const RequestSchemas = {
  [Subjects.usersRegister]: UsersRegisterRequest,
  [Subjects.totpEnroll]: TotpEnrollRequest,
  [Subjects.totpActivate]: TotpActivateRequest,
  [Subjects.challengeStart]: ChallengeStartRequest,
  [Subjects.challengeVerify]: ChallengeVerifyRequest,
  [Subjects.challengeStatus]: ChallengeStatusRequest,
  [Subjects.challengeResend]: ChallengeResendRequest,
  [Subjects.reportsSigninsQuery]: SigninsQueryRequest,
  [Subjects.tenantsConfigure]: TenantsConfigureRequest,
  [Subjects.tenantsGet]: TenantsGetRequest,
  [Subjects.tenantsDelete]: TenantsDeleteRequest,
  [Subjects.usersBlock]: UsersBlockRequest,
  [Subjects.fraudReport]: FraudReportRequest,
  [Subjects.usersUnblock]: UsersUnblockRequest,
  [Subjects.usersDelete]: UsersDeleteRequest,
  [Subjects.usersGet]: UsersGetRequest,
  [Subjects.usersList]: UsersListRequest,
  [Subjects.usersReset]: UsersResetRequest,
  [Subjects.usersMethodsDefault]: UsersMethodsDefaultRequest,
  [Subjects.usersRememberedRevoke]: UsersRememberedRevokeRequest,
  [Subjects.usersAppPasswordsCreate]: UsersAppPasswordsCreateRequest,
  [Subjects.usersAppPasswordsDelete]: UsersAppPasswordsDeleteRequest,
  [Subjects.appPasswordsVerify]: AppPasswordsVerifyRequest,
  [Subjects.usersTokensDelete]: UsersTokensDeleteRequest,
  [Subjects.usersPinSet]: UsersPinSetRequest,
  [Subjects.clientsCreate]: ClientsCreateRequest,
  [Subjects.clientsList]: ClientsListRequest,
  [Subjects.clientsRevoke]: ClientsRevokeRequest,
  [Subjects.reportsAuditQuery]: AuditQueryRequest,
  [Subjects.reportsFraudQuery]: FraudQueryRequest,
  [Subjects.reportsBlockedQuery]: BlockedQueryRequest,
  [Subjects.reportsUsageQuery]: UsageQueryRequest,
  [Subjects.fraudIpsList]: FraudIpsListRequest,
  [Subjects.fraudIpsUnlock]: FraudIpsUnlockRequest,
  [Subjects.voiceMessagesUpload]: VoiceMessagesUploadRequest,
  [Subjects.voiceMessagesList]: VoiceMessagesListRequest,
  [Subjects.voiceMessagesDelete]: VoiceMessagesDeleteRequest,
  [Subjects.usersPushEnroll]: UsersPushEnrollRequest,
  [Subjects.usersDevicesDelete]: UsersDevicesDeleteRequest,
  [Subjects.oathImport]: OathImportRequest,
  [Subjects.oathImportStatus]: OathImportStatusRequest,
  [Subjects.oathTokensList]: OathTokensListRequest,
  [Subjects.oathTokensAssign]: OathTokensAssignRequest,
  [Subjects.oathTokensActivate]: OathTokensActivateRequest,
} as const satisfies Record<ApiSubject, z.ZodType>;
