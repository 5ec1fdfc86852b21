import { z } from 'zod';
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
  OpaqueId,
  OtpCode,
  PhoneNumber,
  RequestId,
  TenantId,
  UserId,
} from './primitives.js';

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
  reportsSigninsQuery: 'mfa.v1.reports.signins.query',
  /** Ours, beyond the fixed list: tenant settings (code lifetime, attempts, enabled methods). */
  tenantsConfigure: 'mfa.v1.tenants.configure',
} as const;
export type ApiSubject = (typeof Subjects)[keyof typeof Subjects];

/** Largest request body any subject accepts; larger ones answer `invalid_request`. */
export const MAX_REQUEST_BYTES = 16 * 1024;

// ---- tenants ---------------------------------------------------------------------------------

export const DEFAULT_CODE_LIFETIME_SECONDS = 180;
export const DEFAULT_MAX_ATTEMPTS = 5;

export const TenantSettings = z.object({
  /** Lifetime of a challenge and its code: 180 s by default (cloud), 300 s (server default) possible. */
  codeLifetimeSeconds: z.int().min(30).max(600).default(DEFAULT_CODE_LIFETIME_SECONDS),
  /** Wrong codes accepted per challenge before it is denied. */
  maxAttempts: z.int().min(1).max(10).default(DEFAULT_MAX_ATTEMPTS),
  /** Methods the tenant allows; a user whose only methods are disabled must register again. */
  enabledMethods: z.array(Method).min(1).default(['sms', 'voice', 'push', 'totp']),
});
export type TenantSettings = z.infer<typeof TenantSettings>;
export const defaultTenantSettings = (): TenantSettings => TenantSettings.parse({});

/**
 * A change to some settings. Spelled out rather than `TenantSettings.partial()`, which in zod 4
 * would still fill every omitted field with its default and turn a partial change into a reset.
 */
export const TenantSettingsPatch = z.object({
  codeLifetimeSeconds: TenantSettings.shape.codeLifetimeSeconds.unwrap().optional(),
  maxAttempts: TenantSettings.shape.maxAttempts.unwrap().optional(),
  enabledMethods: TenantSettings.shape.enabledMethods.unwrap().optional(),
});
export type TenantSettingsPatch = z.infer<typeof TenantSettingsPatch>;

export const TenantsConfigureRequest = z.object({
  tenantId: TenantId,
  settings: TenantSettingsPatch,
});
export type TenantsConfigureRequest = z.infer<typeof TenantsConfigureRequest>;
export const TenantsConfigureReply = z.object({ tenantId: TenantId, settings: TenantSettings });
export type TenantsConfigureReply = z.infer<typeof TenantsConfigureReply>;

// ---- users -----------------------------------------------------------------------------------

export const UsersRegisterRequest = z.object({
  tenantId: TenantId,
  userId: UserId,
  displayName: DisplayName.optional(),
  email: Email.optional(),
  phoneNumber: PhoneNumber.optional(),
  language: Language.optional(),
});
export type UsersRegisterRequest = z.infer<typeof UsersRegisterRequest>;
export const UsersRegisterReply = z.object({ userId: UserId, methods: z.array(Method) });
export type UsersRegisterReply = z.infer<typeof UsersRegisterReply>;

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

export const ChallengeStartRequest = z.object({
  tenantId: TenantId,
  userId: UserId,
  method: Method.optional(),
  clientIp: IpAddress.optional(),
  application: Application.optional(),
  requestId: RequestId.optional(),
});
export type ChallengeStartRequest = z.infer<typeof ChallengeStartRequest>;
export const ChallengeStartReply = z.object({
  challengeId: z.string(),
  status: ChallengeStatus,
  method: Method.nullable(),
  expiresAt: IsoDateTime,
  reason: ChallengeReason.optional(),
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
});
export type ChallengeVerifyReply = z.infer<typeof ChallengeVerifyReply>;
export const ChallengeStatusReply = ChallengeVerifyReply;
export type ChallengeStatusReply = ChallengeVerifyReply;

// ---- reports ---------------------------------------------------------------------------------

export const SIGNIN_RESULTS = ['success', 'failure'] as const;
export const SigninResult = z.enum(SIGNIN_RESULTS);
export type SigninResult = z.infer<typeof SigninResult>;
export const MAX_REPORT_PAGE = 500;
export const DEFAULT_REPORT_PAGE = 50;

export const SigninsQueryRequest = z
  .object({
    tenantId: TenantId,
    userId: UserId.optional(),
    from: IsoDateTime.optional(),
    to: IsoDateTime.optional(),
    result: SigninResult.optional(),
    limit: z.int().min(1).max(MAX_REPORT_PAGE).default(DEFAULT_REPORT_PAGE),
    cursor: z.string().min(1).max(512).optional(),
  })
  .refine((q) => q.from === undefined || q.to === undefined || Date.parse(q.from) <= Date.parse(q.to), {
    message: 'from must not be after to',
    path: ['from'],
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
});
export type SigninItem = z.infer<typeof SigninItem>;
export const SigninsQueryReply = z.object({ items: z.array(SigninItem), nextCursor: z.string().optional() });
export type SigninsQueryReply = z.infer<typeof SigninsQueryReply>;

/** Request schema per subject, for clients and tests that walk every subject. */
export const RequestSchemas = {
  [Subjects.usersRegister]: UsersRegisterRequest,
  [Subjects.totpEnroll]: TotpEnrollRequest,
  [Subjects.totpActivate]: TotpActivateRequest,
  [Subjects.challengeStart]: ChallengeStartRequest,
  [Subjects.challengeVerify]: ChallengeVerifyRequest,
  [Subjects.challengeStatus]: ChallengeStatusRequest,
  [Subjects.reportsSigninsQuery]: SigninsQueryRequest,
  [Subjects.tenantsConfigure]: TenantsConfigureRequest,
} as const;
