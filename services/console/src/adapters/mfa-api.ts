import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { NatsConnection } from '@nats-io/nats-core';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { ContractError, ERROR_CODES, Headers, VoiceMessageBuckets, voiceMessageObjectName, type ErrorCode, type VoiceMessageType } from '@mfa/contracts';
import { requestJson } from '@mfa/messaging';
import type { Session } from './sessions.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

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
    if (reply.error) {
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

  /** The buckets are dispatch's: until it has created them, uploads and playback are unavailable. */
  private async bucket(name: string): Promise<ObjectStore> {
    try {
      return await new Objm(this.nc).open(name);
    } catch (error) {
      throw new ContractError('unavailable', 'the recording store is not ready (dispatch creates it); try again', { cause: error });
    }
  }
}
