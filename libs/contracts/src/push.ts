import { z } from 'zod';
import { IsoDateTime, Label, TenantId, UserId } from './primitives.js';

/**
 * Push to the authenticator app: enrolment (public API), the device API's bodies (docs/device-api.md),
 * and the requests between services about devices.
 */

/** The key algorithms a device may use (docs/device-api.md, "Keys"). */
export const DEVICE_KEY_ALGORITHMS = ['ES256', 'Ed25519'] as const;
export const DeviceKeyAlgorithm = z.enum(DEVICE_KEY_ALGORITHMS);
export type DeviceKeyAlgorithm = z.infer<typeof DeviceKeyAlgorithm>;

/** `none`: no push provider; the app polls the device API. */
export const DEVICE_PLATFORMS = ['ios', 'android', 'none'] as const;
export const DevicePlatform = z.enum(DEVICE_PLATFORMS);
export type DevicePlatform = z.infer<typeof DevicePlatform>;

/** How long an activation code is good for. */
export const ACTIVATION_CODE_SECONDS = 600;
/** How often a poll-only app asks for pending sign-ins. */
export const DEVICE_POLL_SECONDS = 5;

const Base64Url = (max: number) => z.string().min(1).max(max).regex(/^[A-Za-z0-9_-]+$/, 'must be base64url');

// ---- public API --------------------------------------------------------------------------------

export const UsersPushEnrollRequest = z.object({ tenantId: TenantId, userId: UserId });
export type UsersPushEnrollRequest = z.infer<typeof UsersPushEnrollRequest>;
export const UsersPushEnrollReply = z.object({
  /** 16 characters of Crockford-like base32 in groups of 4, e.g. K7QX-M2PA-9VZD-4HTE: good once, for minutes. */
  activationCode: z.string(),
  /** The device API's activation URL with the code (what the QR code holds). */
  activationUrl: z.string(),
  /** The QR code of activationUrl, as a PNG data URL (for a console or a sign-up page). */
  qrCode: z.string(),
  expiresAt: IsoDateTime,
});
export type UsersPushEnrollReply = z.infer<typeof UsersPushEnrollReply>;

export const UsersDevicesDeleteRequest = z.object({ tenantId: TenantId, userId: UserId, deviceId: z.string().min(1).max(128) });
export type UsersDevicesDeleteRequest = z.infer<typeof UsersDevicesDeleteRequest>;
export const UsersDevicesDeleteReply = z.object({ userId: z.string(), deviceId: z.string(), deleted: z.literal(true) });
export type UsersDevicesDeleteReply = z.infer<typeof UsersDevicesDeleteReply>;

/** A device in users.get: `reregister` when its push provider said its token is no longer valid. */
export const DeviceItem = z.object({
  deviceId: z.string(),
  name: z.string(),
  platform: DevicePlatform,
  state: z.enum(['active', 'reregister']),
  activatedAt: z.string(),
  lastUsedAt: z.string().nullable(),
});
export type DeviceItem = z.infer<typeof DeviceItem>;

// ---- the device API (docs/device-api.md) -------------------------------------------------------

export const DeviceActivateBody = z.strictObject({
  code: z.string().min(1).max(64),
  algorithm: DeviceKeyAlgorithm,
  publicKey: Base64Url(512),
  proof: Base64Url(256),
  platform: DevicePlatform,
  pushToken: z.string().min(1).max(4096).optional(),
  // Shown to administrators (users.get, the console, the CLI): the text rules of every other name.
  name: Label.optional(),
}).refine((b) => (b.platform === 'none') === (b.pushToken === undefined), { message: 'pushToken is required for ios and android, and absent for none', path: ['pushToken'] });
export type DeviceActivateBody = z.infer<typeof DeviceActivateBody>;

export const DeviceAnswerBody = z.strictObject({
  decision: z.enum(['approve', 'deny', 'fraud']),
  number: z.string().regex(/^\d{2}$/, 'must be the two digits the sign-in page shows').optional(),
  signature: Base64Url(256),
}).refine((b) => b.decision === 'approve' || b.number === undefined, { message: 'number goes only with approve', path: ['number'] });
export type DeviceAnswerBody = z.infer<typeof DeviceAnswerBody>;

/** What a device signs (docs/device-api.md): the proof of its key at activation, and each answer. */
export const DeviceSigned = {
  activation: (code: string, publicKey: string) => `mfa-activate\n${code}\n${publicKey}`,
  answer: (challengeId: string, decision: string, number: string | undefined) => `mfa-answer\n${challengeId}\n${decision}\n${number ?? ''}`,
  request: (method: string, path: string, timestamp: string, nonce: string, bodySha256: string) => `${method.toUpperCase()}\n${path}\n${timestamp}\n${nonce}\n${bodySha256}`,
} as const;

// ---- between services ----------------------------------------------------------------------------

/** auth-challenge (device API) → user-settings: activate a device with a code. */
export const DeviceActivateRequest = DeviceActivateBody;
export type DeviceActivateRequest = DeviceActivateBody;
export const DeviceActivateReply = z.object({ deviceId: z.string(), tenantId: z.string(), userId: z.string(), pollSeconds: z.number() });
export type DeviceActivateReply = z.infer<typeof DeviceActivateReply>;

/** dispatch → user-settings: a push provider said the device's token is invalid; the app must register again. */
export const DeviceReregisterRequest = z.object({ tenantId: TenantId, userId: UserId, deviceId: z.string().max(128), provider: z.string().max(32), error: z.string().max(300) });
export type DeviceReregisterRequest = z.infer<typeof DeviceReregisterRequest>;
