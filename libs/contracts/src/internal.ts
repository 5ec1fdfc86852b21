import { z } from 'zod';
import { ChallengeStatus, TenantId, UserId } from './primitives.js';

/**
 * Requests between the services, on core NATS subjects under `mfa.int.`: never open to callers.
 * They carry no API key but the services' signature (`Mfa-Internal`, made with the master key over
 * subject, time and body: libs/crypto internal-requests.ts), which ApiKeyGuard checks; NATS
 * permissions (IdPs get `mfa.v1.>` only, deploy/nats) are a second wall. Bodies are validated like
 * public ones.
 */
export const InternalSubjects = {
  /** dispatch → user-settings: is this the user's voice PIN? */
  pinVerify: 'mfa.int.users.pin.verify',
  /** dispatch → auth-challenge: the user answered a voice challenge's call (# pressed, or a PIN checked). */
  voiceOutcome: 'mfa.int.challenge.voice',
  /** dispatch → fraud: the user entered the fraud code during a call. */
  fraudFromCall: 'mfa.int.fraud.call',
  /** auth-challenge (device API) → user-settings: activate a device with its activation code. */
  deviceActivate: 'mfa.int.devices.activate',
  /** dispatch → user-settings: a push provider refused a device's token; the device must register again. */
  deviceReregister: 'mfa.int.devices.reregister',
  /** auth-challenge (device API) → fraud: the user reported a push sign-in as fraud in the app. */
  fraudFromApp: 'mfa.int.fraud.app',
} as const;

export const PinVerifyRequest = z.object({ tenantId: TenantId, userId: UserId, pin: z.string().max(16) });
export type PinVerifyRequest = z.infer<typeof PinVerifyRequest>;
/** `pinSet` false: the user has no PIN (PIN mode cannot approve them). */
export const PinVerifyReply = z.object({ valid: z.boolean(), pinSet: z.boolean() });
export type PinVerifyReply = z.infer<typeof PinVerifyReply>;

/**
 * `approved` false: a wrong PIN, counted like a wrong code (attempts of the challenge, the user's lockout).
 * `answerId`: names this answer (dispatch: the call and its prompt). The answer is recorded once per
 * id: the same id again, while it is the challenge's last recorded answer, gets the same reply and
 * counts nothing, so the request may be sent again after any failure (no answer, `unavailable`).
 * Without it (an older dispatch) each request is recorded.
 */
export const VoiceOutcomeRequest = z.object({
  tenantId: TenantId,
  challengeId: z.string().max(128),
  approved: z.boolean(),
  answerId: z.string().min(1).max(128).optional(),
});
export type VoiceOutcomeRequest = z.infer<typeof VoiceOutcomeRequest>;
/**
 * `answerId`: the request's, when the answer was recorded under it (an auth-challenge that records
 * answers once; an older one leaves it out): what tells dispatch that sending it again is safe.
 */
export const VoiceOutcomeReply = z.object({ status: ChallengeStatus, reason: z.string().optional(), answerId: z.string().optional() });
export type VoiceOutcomeReply = z.infer<typeof VoiceOutcomeReply>;

export const FraudFromCallRequest = z.object({ tenantId: TenantId, userId: UserId, challengeId: z.string().max(128) });
export type FraudFromCallRequest = z.infer<typeof FraudFromCallRequest>;
/**
 * `deviceId`: the authenticator app that reported (it signed the answer), named in the alert and
 * the report's row; an older auth-challenge leaves it out, an older fraud ignores it.
 */
export const FraudFromAppRequest = FraudFromCallRequest.extend({ deviceId: z.string().max(128).optional() });
export type FraudFromAppRequest = z.infer<typeof FraudFromAppRequest>;
