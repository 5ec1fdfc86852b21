import { StorageType } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import { ensureReplicas, provision, type NatsClients } from '@mfa/messaging';
import { Objm, type ObjectInfo, type ObjectResult, type ObjectStore } from '@nats-io/obj';
import { MAX_VOICE_MESSAGE_BYTES, VOICE_UPLOAD_TTL_SECONDS, VoiceMessageBuckets, voiceMessageObjectName, type VoiceMessageType } from '@mfa/contracts';

/** What dispatch keeps with each recording (object metadata). */
export interface RecordingMeta {
  format: 'wav' | 'mp3';
  contentType: string;
  durationSeconds: number;
}

export interface Recording {
  info: ObjectInfo;
  meta: RecordingMeta;
}

/**
 * The tenants' voice recordings in JetStream object stores (durable, replicated like every stream:
 * STREAM_REPLICAS): `MFA_VOICE_UPLOADS` where uploaders put a file (it expires after an hour), and
 * `MFA_VOICE_MESSAGES` where the checked recordings live, one object per tenant, type and language.
 */
export class RecordingStore {
  private constructor(
    private readonly uploads: ObjectStore,
    private readonly messages: ObjectStore,
  ) {}

  /** Creates both buckets when they do not exist yet (as the other services create their streams). */
  static async open(nats: NatsClients, replicas: number): Promise<RecordingStore> {
    const objm = new Objm(nats.nc);
    const uploads = await provision(`provisioning bucket ${VoiceMessageBuckets.uploads}`, () =>
      objm.create(VoiceMessageBuckets.uploads, { replicas, storage: StorageType.File, ttl: nanos(VOICE_UPLOAD_TTL_SECONDS * 1000) }),
    );
    const messages = await provision(`provisioning bucket ${VoiceMessageBuckets.messages}`, () => objm.create(VoiceMessageBuckets.messages, { replicas, storage: StorageType.File }));
    // Buckets made before STREAM_REPLICAS was raised keep their replicas through create: scale them.
    for (const bucket of [VoiceMessageBuckets.uploads, VoiceMessageBuckets.messages]) await ensureReplicas(nats.jsm, `OBJ_${bucket}`, replicas);
    return new RecordingStore(uploads, messages);
  }

  /**
   * The bytes of an upload; `missing` when there is none by that name, `too_large` (without reading
   * it) when it is over the limit.
   */
  async upload(name: string): Promise<Uint8Array | 'missing' | 'too_large'> {
    const info = await this.uploads.info(name);
    if (!info || info.deleted) return 'missing';
    if (info.size > MAX_VOICE_MESSAGE_BYTES) return 'too_large';
    const bytes = await this.uploads.getBlob(name);
    if (bytes === null) return 'missing';
    // Replaced between the two reads: judged on what was read.
    return bytes.length > MAX_VOICE_MESSAGE_BYTES ? 'too_large' : bytes;
  }

  async discardUpload(name: string): Promise<void> {
    await this.uploads.delete(name).catch(() => undefined);
  }

  async save(tenantId: string, type: VoiceMessageType, language: string, bytes: Uint8Array, meta: RecordingMeta): Promise<Recording> {
    const info = await this.messages.putBlob(
      {
        name: voiceMessageObjectName(tenantId, type, language),
        metadata: { format: meta.format, contentType: meta.contentType, durationSeconds: String(meta.durationSeconds) },
      },
      bytes,
    );
    return { info, meta };
  }

  /** The tenant's recording of a type in a language, or undefined. */
  async find(tenantId: string, type: VoiceMessageType, language: string): Promise<Recording | undefined> {
    const info = await this.messages.info(voiceMessageObjectName(tenantId, type, language));
    return info && !info.deleted ? recordingOf(info) : undefined;
  }

  /** Every recording of the tenant (the bucket's object list, filtered by the tenant's prefix). */
  async list(tenantId: string): Promise<Recording[]> {
    const prefix = `${tenantId}/`;
    const infos = await this.messages.list();
    return infos.filter((info) => !info.deleted && info.name.startsWith(prefix)).map(recordingOf);
  }

  /** The recording's bytes as a stream, if it is still the one with this digest. */
  async read(tenantId: string, type: VoiceMessageType, language: string, digest: string): Promise<{ recording: Recording; data: ObjectResult['data'] } | undefined> {
    const result = await this.messages.get(voiceMessageObjectName(tenantId, type, language));
    if (!result || result.info.deleted) return undefined;
    if (result.info.digest !== digest) {
      await result.data.cancel().catch(() => undefined);
      return undefined;
    }
    return { recording: recordingOf(result.info), data: result.data };
  }

  /** True when there was one to delete. */
  async remove(tenantId: string, type: VoiceMessageType, language: string): Promise<boolean> {
    const name = voiceMessageObjectName(tenantId, type, language);
    const info = await this.messages.info(name);
    if (!info || info.deleted) return false;
    await this.messages.delete(name);
    return true;
  }
}

function recordingOf(info: ObjectInfo): Recording {
  const metadata = info.metadata ?? {};
  return {
    info,
    meta: {
      format: metadata.format === 'mp3' ? 'mp3' : 'wav',
      contentType: metadata.contentType ?? 'application/octet-stream',
      durationSeconds: Number(metadata.durationSeconds ?? 0),
    },
  };
}
