import { Readable } from 'node:stream';
import {
  invalidRequest,
  notFound,
  unavailable,
  VoiceMessageType,
  type VoiceMessage,
  type VoiceMessagesDeleteReply,
  type VoiceMessagesDeleteRequest,
  type VoiceMessagesListReply,
  type VoiceMessagesListRequest,
  type VoiceMessagesUploadReply,
  type VoiceMessagesUploadRequest,
} from '@mfa/contracts';
import { CursorError, openCursor, sealCursor, type Keyring } from '@mfa/crypto';
import { counter, type Logger } from '@mfa/telemetry';
import type { Recording, RecordingStore } from '../adapters/voice/recording-store.js';
import { checkRecording } from '../domain/recording-format.js';

const uploads = counter('mfa_voice_recording_uploads_total', 'Voice recordings uploaded, by outcome', ['outcome']);
const plays = counter('mfa_voice_recording_fetches_total', 'Fetches of voice recordings through their signed URLs, by outcome', ['outcome']);

/** How long a recording's URL in a call's TwiML stays good: the provider fetches it at once. */
export const RECORDING_URL_SECONDS = 600;
const URL_SCOPE_KIND = 'voice.recording-url';

export interface RecordingsOptions {
  store: RecordingStore;
  keyring: Keyring;
  /** Whether the tenant exists (user-settings owns tenants). */
  tenantExists: (tenantId: string) => Promise<boolean>;
  /** The public base URL the provider fetches recordings on (VOICE_WEBHOOK_BASE_URL). */
  webhookBaseUrl: string | undefined;
  log: Logger;
  clock?: () => Date;
}

/**
 * The tenants' own recordings of the call's messages: upload (from MFA_VOICE_UPLOADS, checked by
 * their bytes), list and delete through the contract; and the short-lived signed URLs a call's
 * `<Play>` fetches them on, which name one recording (tenant, type, language and digest: a
 * recording replaced since is not served under the old URL) until they expire.
 */
export class VoiceRecordingsService {
  private readonly clock: () => Date;

  constructor(private readonly options: RecordingsOptions) {
    this.clock = options.clock ?? (() => new Date());
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  async upload(request: VoiceMessagesUploadRequest): Promise<VoiceMessagesUploadReply> {
    await this.requireTenant(request.tenantId);
    const bytes = await this.dependency(() => this.options.store.upload(request.object));
    // A fixed message: replies never echo what the caller sent (docs/api.md).
    if (bytes === 'missing') throw notFound('object: no such upload (uploads expire after an hour)');
    if (bytes === 'too_large') {
      uploads.inc({ outcome: 'too_large' });
      await this.options.store.discardUpload(request.object);
      throw invalidRequest('the recording is larger than 1 MB');
    }
    const checked = await checkRecording(bytes);
    if (!checked.ok) {
      uploads.inc({ outcome: 'refused' });
      await this.options.store.discardUpload(request.object);
      throw invalidRequest(checked.problem);
    }
    const saved = await this.dependency(() => this.options.store.save(request.tenantId, request.type, request.language, bytes, checked.meta));
    await this.options.store.discardUpload(request.object);
    uploads.inc({ outcome: 'saved' });
    this.options.log.info('voice recording saved', { tenantId: request.tenantId, type: request.type, language: request.language, bytes: bytes.length });
    return { ...describe(request.type, request.language, saved), warnings: checked.warnings };
  }

  async list(request: VoiceMessagesListRequest): Promise<VoiceMessagesListReply> {
    await this.requireTenant(request.tenantId);
    const recordings = await this.dependency(() => this.options.store.list(request.tenantId));
    const messages = recordings.flatMap((recording) => {
      const [, type, language] = recording.info.name.split('/');
      const parsed = VoiceMessageType.safeParse(type);
      return parsed.success && language ? [describe(parsed.data, language, recording)] : [];
    });
    messages.sort((a, b) => a.type.localeCompare(b.type) || a.language.localeCompare(b.language));
    return { messages };
  }

  async delete(request: VoiceMessagesDeleteRequest): Promise<VoiceMessagesDeleteReply> {
    await this.requireTenant(request.tenantId);
    const deleted = await this.dependency(() => this.options.store.remove(request.tenantId, request.type, request.language));
    if (deleted) this.options.log.info('voice recording deleted', { tenantId: request.tenantId, type: request.type, language: request.language });
    return { type: request.type, language: request.language, deleted };
  }

  /** Whether the tenant has a recording of this type in this language (a call's choice of message). */
  async recorded(tenantId: string, type: VoiceMessageType, language: string): Promise<Recording | undefined> {
    return this.options.store.find(tenantId, type, language);
  }

  /** The URL a call's `<Play>` fetches a recording on, good for RECORDING_URL_SECONDS. */
  playUrl(tenantId: string, type: VoiceMessageType, language: string, recording: Recording): string {
    const expires = Math.floor(this.clock().getTime() / 1000) + RECORDING_URL_SECONDS;
    const token = sealCursor(this.options.keyring, { tenantId, kind: URL_SCOPE_KIND }, [type, language, recording.info.digest, expires]);
    const base = (this.options.webhookBaseUrl ?? '').replace(/\/+$/, '');
    return `${base}/voice/recordings/${encodeURIComponent(tenantId)}/${token}`;
  }

  /**
   * The recording a signed URL names, as a stream: 404 for a URL this service did not sign for this
   * tenant, one that expired, or a recording replaced or deleted since (nothing says which).
   */
  async fetch(tenantId: string, token: string): Promise<{ status: 200; contentType: string; size: number; body: Readable } | { status: 404 }> {
    let payload: unknown;
    try {
      payload = openCursor(this.options.keyring, { tenantId, kind: URL_SCOPE_KIND }, token);
    } catch (error) {
      if (!(error instanceof CursorError)) throw error;
      plays.inc({ outcome: 'bad_signature' });
      return { status: 404 };
    }
    if (!Array.isArray(payload) || payload.length !== 4) return { status: 404 };
    const [type, language, digest, expires] = payload as unknown[];
    const parsedType = VoiceMessageType.safeParse(type);
    if (!parsedType.success || typeof language !== 'string' || typeof digest !== 'string' || typeof expires !== 'number') return { status: 404 };
    if (expires * 1000 <= this.clock().getTime()) {
      plays.inc({ outcome: 'expired' });
      return { status: 404 };
    }
    const found = await this.options.store.read(tenantId, parsedType.data, language, digest);
    if (!found) {
      plays.inc({ outcome: 'gone' });
      return { status: 404 };
    }
    plays.inc({ outcome: 'served' });
    return { status: 200, contentType: found.recording.meta.contentType, size: found.recording.info.size, body: Readable.fromWeb(found.data as never) };
  }

  private async requireTenant(tenantId: string): Promise<void> {
    if (!(await this.dependency(() => this.options.tenantExists(tenantId)))) throw notFound('unknown tenant');
  }

  /** The object store or the tenant directory cannot be reached: `unavailable` (try again). */
  private async dependency<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw unavailable('the recording store (NATS JetStream) is unavailable; try again', error);
    }
  }
}

function describe(type: VoiceMessageType, language: string, recording: Recording): VoiceMessage {
  return {
    type,
    language,
    format: recording.meta.format,
    bytes: recording.info.size,
    durationSeconds: recording.meta.durationSeconds,
    digest: recording.info.digest,
    uploadedAt: recording.info.mtime,
  };
}
