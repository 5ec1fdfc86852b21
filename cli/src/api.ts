import type { NatsConnection } from '@nats-io/nats-core';
import { Objm } from '@nats-io/obj';
// The client part alone: the services' consumers, metrics and tracing are not loaded by a command line.
import { connectClient, requestJson } from '@mfa/messaging/client';

/** A contract error answered by a service, or the service not reachable: printed, exit code 1. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

type Reply = Record<string, unknown> & { error?: { code: string; message: string } | string };

/**
 * The public NATS API as a client sees it: NATS_URL and the NATS_* credentials like every
 * service, the API key from --api-key or MFA_API_KEY (a tenant's key, or the platform key).
 */
export class Api {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly apiKey: string | undefined,
    private readonly timeoutMs: number,
  ) {}

  static async connect(options: { natsUrl?: string; apiKey?: string; timeoutMs?: number }): Promise<Api> {
    const env = { ...process.env, ...(options.natsUrl ? { NATS_URL: options.natsUrl } : {}) };
    try {
      return new Api(await connectClient({ name: 'mfa-cli' }, env), options.apiKey, options.timeoutMs ?? 10_000);
    } catch (error) {
      // Never a password the URL holds (nats://user:password@host).
      const servers = (env.NATS_URL ?? 'nats://127.0.0.1:4222').replace(/\/\/[^@/,]*@/g, '//***@');
      throw new CliError(`cannot connect to NATS at ${servers}: ${(error as Error).message}`, 'unavailable');
    }
  }

  async call<T = Reply>(subject: string, body: unknown): Promise<T> {
    let reply: Reply;
    try {
      reply = await requestJson<Reply>(this.nc, subject, body, { timeoutMs: this.timeoutMs, headers: this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {} });
    } catch (error) {
      throw new CliError(`${subject}: no answer (${(error as Error).message}); is the stack running?`, 'unavailable');
    }
    // An error reply's `error` is an object; a text `error` is part of an answer (a failed import job's reason).
    if (typeof reply.error === 'object' && reply.error !== null) throw new CliError(`${reply.error.code}: ${reply.error.message}`, reply.error.code);
    return reply as T;
  }

  /**
   * Puts a file into a JetStream object store bucket (what the API cannot carry in one request,
   * such as a voice recording): needs NATS credentials that may use JetStream.
   */
  async putObject(bucket: string, name: string, bytes: Uint8Array): Promise<void> {
    try {
      await (await new Objm(this.nc).open(bucket)).putBlob({ name }, bytes);
    } catch (error) {
      throw new CliError(`cannot put ${name} into ${bucket}: ${(error as Error).message} (the NATS user needs JetStream access to the bucket; is the stack running?)`, 'unavailable');
    }
  }

  /** Streams a file into a bucket (files of any size: never read whole into memory). */
  async putObjectStream(bucket: string, name: string, stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      await (await new Objm(this.nc).open(bucket)).put({ name }, stream);
    } catch (error) {
      throw new CliError(`cannot put ${name} into ${bucket}: ${(error as Error).message} (the NATS user needs JetStream access to the bucket; is the stack running?)`, 'unavailable');
    }
  }

  /** An object of a bucket as a stream, or undefined when there is none by that name. */
  async getObject(bucket: string, name: string): Promise<ReadableStream<Uint8Array> | undefined> {
    try {
      const result = await (await new Objm(this.nc).open(bucket)).get(name);
      return result && !result.info.deleted ? result.data : undefined;
    } catch (error) {
      throw new CliError(`cannot read ${name} from ${bucket}: ${(error as Error).message} (the NATS user needs JetStream access to the bucket; is the stack running?)`, 'unavailable');
    }
  }

  /** Removes an object (an upload nothing will read); a failure is ignored. */
  async deleteObject(bucket: string, name: string): Promise<void> {
    await new Objm(this.nc)
      .open(bucket)
      .then((store) => store.delete(name))
      .catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}
