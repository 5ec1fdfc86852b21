import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { NatsConnection } from '@nats-io/nats-core';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { ContractError, ERROR_CODES, Headers, IMPORTS_BUCKET, VoiceMessageBuckets, voiceMessageObjectName, type ErrorCode, type VoiceMessageType } from '@mfa/contracts';
import { requestJson } from '@mfa/messaging';
import type { Session } from './sessions.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } | string };

/**
 * The console is a client of the public NATS API like any other: every request carries the
 * platform key (when auth is on) and the operator's identity (Mfa-Operator), which the services
 * record in the audit trail. The operator's roles are checked by the console before it asks.
 */
export class MfaApi {
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
    const result = await (await this.bucket(VoiceMessageBuckets.messages)).get(voiceMessageObjectName(tenantId, type, language));
    if (!result || result.info.deleted) return undefined;
    return { contentType: result.info.metadata?.contentType ?? 'application/octet-stream', size: result.info.size, body: Readable.fromWeb(result.data as never) };
  }

  /**
   * A token file the operator uploaded, streamed into MFA_IMPORTS under the tenant's prefix for
   * `oath.import` to read (files of several MB do not fit in a request). Never buffered whole and
   * kept nowhere else; more than `maxBytes` fails the upload, which leaves nothing behind.
   */
  async putImport(tenantId: string, body: Readable, maxBytes: number): Promise<{ object: string; size: number }> {
    const object = `${tenantId}/console-${randomUUID()}`;
    const store = await this.bucket(IMPORTS_BUCKET, 'the imports store is not ready (user-settings creates it); try again');
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
   * import and those an import job reads (it deletes its file when it ends).
   */
  async consoleImports(tenantId: string): Promise<number> {
    const store = await this.bucket(IMPORTS_BUCKET, 'the imports store is not ready (user-settings creates it); try again');
    const prefix = `${tenantId}/console-`;
    try {
      return (await store.list()).filter((info) => !info.deleted && info.name.startsWith(prefix)).length;
    } catch (error) {
      throw new ContractError('unavailable', 'the imports store did not answer; try again', { cause: error });
    }
  }

  /** Removes an upload that no job will read (the import was refused). */
  async deleteImport(object: string): Promise<void> {
    await (await this.bucket(IMPORTS_BUCKET, 'the imports store is not ready')).delete(object).catch(() => undefined);
  }

  /** A file of MFA_IMPORTS (a job's error file), as a stream, or undefined. */
  async importFile(object: string): Promise<{ size: number; body: Readable } | undefined> {
    const result = await (await this.bucket(IMPORTS_BUCKET, 'the imports store is not ready (user-settings creates it); try again')).get(object);
    if (!result || result.info.deleted) return undefined;
    return { size: result.info.size, body: Readable.fromWeb(result.data as never) };
  }

  /** The buckets are created by the services (dispatch, user-settings): until then, they are unavailable. */
  private async bucket(name: string, notReady = 'the recording store is not ready (dispatch creates it); try again'): Promise<ObjectStore> {
    try {
      return await new Objm(this.nc).open(name);
    } catch (error) {
      throw new ContractError('unavailable', notReady, { cause: error });
    }
  }
}
