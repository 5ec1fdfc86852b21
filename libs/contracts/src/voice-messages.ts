import { z } from 'zod';
import { ObjectName, TenantId } from './primitives.js';

/**
 * The spoken messages of a voice challenge's call: the 18 message types of Azure MFA's phone call
 * settings. Each has a default script (English, French, Swedish: services/dispatch) and may be
 * replaced per tenant and language by a recording (`voice.messages.upload`).
 */
export const VOICE_MESSAGE_TYPES = [
  'authenticationSuccessful',
  'extensionPrompt',
  'fraudConfirmation',
  'fraudGreetingStandard',
  'fraudReported',
  'activation',
  'authenticationDeniedRetry',
  'retryStandard',
  'greetingStandard',
  'greetingPin',
  'fraudGreetingPin',
  'retryPin',
  'extensionPromptAfterDigits',
  'authenticationDenied',
  'activationGreetingStandard',
  'activationRetryStandard',
  'activationGreetingPin',
  'extensionPromptBeforeDigits',
] as const;
export const VoiceMessageType = z.enum(VOICE_MESSAGE_TYPES, { error: `must be one of ${VOICE_MESSAGE_TYPES.join(', ')}` });
export type VoiceMessageType = z.infer<typeof VoiceMessageType>;

/**
 * The language of a recording: an ISO 639 primary language subtag (`fr`, not `fr-CA`). A user whose
 * language is `fr-CA` hears the tenant's `fr` recording.
 */
export const VoiceMessageLanguage = z
  .string()
  .regex(/^[A-Za-z]{2,3}$/, 'must be a primary language subtag such as en, fr or sv')
  .transform((tag) => tag.toLowerCase());

/** Largest recording accepted (the seeds' limit). */
export const MAX_VOICE_MESSAGE_BYTES = 1024 * 1024;
/** Longer recordings are accepted with a warning (the seeds: "should be under 20 seconds"). */
export const RECOMMENDED_VOICE_MESSAGE_SECONDS = 20;

/**
 * JetStream object store buckets. A recording (up to 1 MB) does not fit a request (MAX_REQUEST_BYTES),
 * so an uploader puts it into `uploads` under a name that starts with its tenant id and a slash, then
 * calls `voice.messages.upload` naming it; dispatch checks the bytes, moves it to `messages` (the
 * durable store the calls play from) and deletes the upload. Uploads left behind expire after an hour.
 */
export const VoiceMessageBuckets = {
  uploads: 'MFA_VOICE_UPLOADS',
  messages: 'MFA_VOICE_MESSAGES',
} as const;
/** Seconds an upload waits in MFA_VOICE_UPLOADS for its `voice.messages.upload`. */
export const VOICE_UPLOAD_TTL_SECONDS = 3600;

/** The object of a tenant's recording of one type and language in MFA_VOICE_MESSAGES. */
export function voiceMessageObjectName(tenantId: string, type: VoiceMessageType, language: string): string {
  return `${tenantId}/${type}/${language}`;
}

export const VoiceMessagesUploadRequest = z
  .object({
    tenantId: TenantId,
    type: VoiceMessageType,
    language: VoiceMessageLanguage,
    /** The recording's name in MFA_VOICE_UPLOADS: `<tenantId>/` and anything after. */
    object: ObjectName,
  })
  .refine((r) => r.object.startsWith(`${r.tenantId}/`), { message: 'must start with the tenant id and a slash', path: ['object'] });
export type VoiceMessagesUploadRequest = z.infer<typeof VoiceMessagesUploadRequest>;

export const VoiceMessage = z.object({
  type: VoiceMessageType,
  language: z.string(),
  /** Read from the bytes, never from a file name. */
  format: z.enum(['wav', 'mp3']),
  bytes: z.number(),
  durationSeconds: z.number(),
  /** SHA-256 of the recording, as the object store computed it. */
  digest: z.string(),
  uploadedAt: z.string(),
});
export type VoiceMessage = z.infer<typeof VoiceMessage>;

export const VoiceMessagesUploadReply = VoiceMessage.extend({
  /** Accepted, but worth a look (a recording longer than 20 s). */
  warnings: z.array(z.string()),
});
export type VoiceMessagesUploadReply = z.infer<typeof VoiceMessagesUploadReply>;

export const VoiceMessagesListRequest = z.object({ tenantId: TenantId });
export type VoiceMessagesListRequest = z.infer<typeof VoiceMessagesListRequest>;
export const VoiceMessagesListReply = z.object({ messages: z.array(VoiceMessage) });
export type VoiceMessagesListReply = z.infer<typeof VoiceMessagesListReply>;

export const VoiceMessagesDeleteRequest = z.object({ tenantId: TenantId, type: VoiceMessageType, language: VoiceMessageLanguage });
export type VoiceMessagesDeleteRequest = z.infer<typeof VoiceMessagesDeleteRequest>;
export const VoiceMessagesDeleteReply = z.object({ type: VoiceMessageType, language: z.string(), deleted: z.boolean() });
export type VoiceMessagesDeleteReply = z.infer<typeof VoiceMessagesDeleteReply>;

/**
 * The token the development voice provider (dispatch's VOICE_PROVIDER=console, refused in
 * production) checks its webhooks' X-Twilio-Signature with, in place of a Twilio auth token. Public:
 * anyone may play the phone of a development stack.
 */
export const DEVELOPMENT_VOICE_WEBHOOK_TOKEN = 'open-mfa development voice webhooks - never in production';
