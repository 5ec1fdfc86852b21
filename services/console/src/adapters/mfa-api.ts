import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { ContractError, ERROR_CODES, Headers, IMPORTS_BUCKET, VoiceMessageBuckets, voiceMessageObjectName, type ErrorCode, type VoiceMessageType } from '@mfa/contracts';
import { isStreamOrConsumerNotFound, requestJson } from '@mfa/messaging';
import { ObjectChanged, ObjectCorrupt, ObjectReader } from './object-reader.js';
import type { Session } from './sessions.js';

const RECORDINGS_NOT_READY = 'the recording store is not ready (dispatch creates it); try again';
const IMPORTS_NOT_READY = 'the imports store is not ready (user-settings creates it); try again';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } | string };

/**
 * The console is a client of the public NATS API like any other: every request carries the
 * platform key (when auth is on) and the operator's identity (Mfa-Operator), which the services
 * record in the audit trail. The operator's roles are checked by the console before it asks.
 * It reads the object stores with message gets only (ObjectReader says why: no consumer).
 */
export class MfaApi {
  private jsm: Promise<JetStreamManager> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly platformKey: string | undefined,
  ) {}

  async call<T = Reply>(subject: string, body: unknown, operator: Session['operator']): Promise<T> {
    const headers: Record<string, string> = { [Headers.operator]: JSON.stringify(operator) };
    if (this.platformKey) headers.Authorization = `Bearer ${this.platformKey}`;
    let reply: Reply;
    try {
      reply = await requestJson<Reply>(this.nc, subject, body, { timeoutMs: 10_000, headers });
    } catch (error) {
      throw new ContractError('unavailable', 'the service did not answer; try again', { cause: error });
    }
    // An error reply's `error` is an object; a text `error` is part of an answer (a failed import job's reason).
    if (typeof reply.error === 'object' && reply.error !== null) {
      const code = (ERROR_CODES as readonly string[]).includes(reply.error.code) ? (reply.error.code as ErrorCode) : 'internal';
      throw new ContractError(code, reply.error.message);
    }
    return reply as T;
  }

  /**
   * A recording the operator uploaded, put into MFA_VOICE_UPLOADS under the tenant's prefix for
   * `voice.messages.upload` to take (a recording does not fit in a request).
   */
  async putUpload(tenantId: string, bytes: Uint8Array): Promise<string> {
    const object = `${tenantId}/console-${randomUUID()}`;
    await (await this.bucket(VoiceMessageBuckets.uploads)).putBlob({ name: object }, bytes);
    return object;
  }

  /** A tenant's recording, to play it back on the page (read from MFA_VOICE_MESSAGES), or undefined. */
  async recording(tenantId: string, type: VoiceMessageType, language: string): Promise<{ contentType: string; size: number; body: Readable } | undefined> {
    const found = await this.read(VoiceMessageBuckets.messages, RECORDINGS_NOT_READY, (reader) => reader.read(voiceMessageObjectName(tenantId, type, language)));
    if (!found) return undefined;
    return { contentType: found.info.metadata?.contentType ?? 'application/octet-stream', size: found.info.size, body: found.body };
  }

  /**
   * A token file the operator uploaded, streamed into MFA_IMPORTS under the tenant's prefix for
   * `oath.import` to read (files of several MB do not fit in a request). Never buffered whole and
   * kept nowhere else; more than `maxBytes` fails the upload, which leaves nothing behind.
   */
  async putImport(tenantId: string, body: Readable, maxBytes: number): Promise<{ object: string; size: number }> {
    const object = `${tenantId}/console-${randomUUID()}`;
    const store = await this.bucket(IMPORTS_BUCKET, IMPORTS_NOT_READY);
    let size = 0;
    const source = Readable.toWeb(body) as ReadableStream<Uint8Array>;
    const limited = source.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          size += chunk.length;
          if (size > maxBytes) controller.error(new ContractError('invalid_request', `the file is larger than ${Math.floor(maxBytes / (1024 * 1024))} MiB`));
          else controller.enqueue(chunk);
        },
      }),
    );
    try {
      await store.put({ name: object }, limited);
    } catch (error) {
      body.resume();
      if (error instanceof ContractError) throw error;
      // The bucket's size is bounded (OATH_IMPORTS_MAX_BYTES): files waiting for their import fill it.
      if (/maximum bytes exceeded/i.test((error as Error)?.message ?? '')) {
        throw new ContractError('unavailable', 'the imports store is full (files waiting for their import, error files); try again later', { cause: error });
      }
      throw new ContractError('unavailable', 'the file could not be stored; try again', { cause: error });
    }
    return { object, size };
  }

  /**
   * How many of this console's uploads of the tenant MFA_IMPORTS holds: those waiting for their
   * import and those an import job reads (it deletes its file when it ends). From the bucket's
   * record subjects (names only), reading the records of the tenant's uploads alone.
   */
  async consoleImports(tenantId: string): Promise<number> {
    const prefix = `${tenantId}/console-`;
    return (await this.read(IMPORTS_BUCKET, IMPORTS_NOT_READY, (reader) => reader.names((name) => name.startsWith(prefix)))).length;
  }

  /** Removes an upload that no job will read (the import was refused). */
  async deleteImport(object: string): Promise<void> {
    // Purged rather than deleted: the object store's delete writes a record first, which a full
    // bucket refuses, and the upload would stay until the bucket's TTL.
    await this.read(IMPORTS_BUCKET, IMPORTS_NOT_READY, (reader) => reader.remove(object)).catch(() => undefined);
  }

  /** A file of MFA_IMPORTS (a job's error file), as a stream, or undefined. */
  async importFile(object: string): Promise<{ size: number; body: Readable } | undefined> {
    const found = await this.read(IMPORTS_BUCKET, IMPORTS_NOT_READY, (reader) => reader.read(object));
    return found && { size: found.info.size, body: found.body };
  }

  /**
   * A read of a bucket the services create: until then, and whenever JetStream does not answer,
   * it is unavailable. (A failure once the body streams ends the stream with that error.)
   */
  private async read<T>(bucket: string, notReady: string, read: (reader: ObjectReader) => Promise<T>): Promise<T> {
    try {
      this.jsm ??= jetstreamManager(this.nc).catch((error: unknown) => {
        this.jsm = undefined;
        throw error;
      });
      return await read(new ObjectReader(await this.jsm, bucket));
    } catch (error) {
      if (isStreamOrConsumerNotFound(error)) throw new ContractError('unavailable', notReady, { cause: error });
      if (error instanceof ObjectChanged) throw new ContractError('unavailable', 'the file changed while it was read; try again', { cause: error });
      if (error instanceof ObjectCorrupt) throw new ContractError('internal', 'the stored file does not match its record', { cause: error });
      throw new ContractError('unavailable', bucket === IMPORTS_BUCKET ? 'the imports store did not answer; try again' : 'the recording store did not answer; try again', { cause: error });
    }
  }

  /** The buckets are created by the services (dispatch, user-settings): until then, they are unavailable. */
  private async bucket(name: string, notReady = RECORDINGS_NOT_READY): Promise<ObjectStore> {
    try {
      return await new Objm(this.nc).open(name);
    } catch (error) {
      throw new ContractError('unavailable', notReady, { cause: error });
    }
  }
}
