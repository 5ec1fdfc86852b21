import type { NatsConnection } from '@nats-io/nats-core';
import { ContractError, ERROR_CODES, Headers, type ErrorCode } from '@mfa/contracts';
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
}
