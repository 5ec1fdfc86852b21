import { ContractError, type ErrorCode, type ErrorReply } from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';

/**
 * The one mapping from a thrown error to the contract's error reply: a ContractError keeps its
 * code and message; anything else is logged and answered as `internal` without internals.
 */
export function errorReplyOf(error: unknown, log: Logger, subject: string): ErrorReply {
  if (error instanceof ContractError) {
    const retry = error.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: error.retryAfterSeconds };
    return { error: { code: error.code, message: error.message, ...retry } };
  }
  log.error('unexpected error while handling request', { subject, error });
  return { error: { code: 'internal', message: 'internal error' } };
}

/** The error code of a reply, or undefined for a successful one (replies never have `error`). */
export function errorCodeOf(reply: unknown): ErrorCode | undefined {
  if (typeof reply !== 'object' || reply === null || !('error' in reply)) return undefined;
  return (reply as ErrorReply).error.code;
}
