import { z } from 'zod';

/** The only error codes a request may answer with (docs/api.md, "Errors"). */
export const ERROR_CODES = [
  'invalid_request',
  'not_found',
  'conflict',
  'forbidden',
  'rate_limited',
  'unavailable',
  'internal',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const ErrorReplySchema = z.object({
  error: z.object({
    code: z.enum(ERROR_CODES),
    message: z.string(),
    /** rate_limited only, when waiting helps: whole seconds until a retry can succeed. */
    retryAfterSeconds: z.int().positive().optional(),
  }),
});
export type ErrorReply = z.infer<typeof ErrorReplySchema>;

/**
 * An error that crosses a service boundary as a contract error reply. Handlers throw these;
 * ContractErrorFilter (libs/service-kit) turns them into `{"error":{code,message}}`. Anything
 * else that escapes a handler becomes `internal` with a generic message.
 */
export class ContractError extends Error {
  /** rate_limited: when a retry can succeed (seconds), if waiting helps. */
  readonly retryAfterSeconds?: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions & { retryAfterSeconds?: number },
  ) {
    super(message, options);
    if (options?.retryAfterSeconds !== undefined) this.retryAfterSeconds = Math.max(1, Math.ceil(options.retryAfterSeconds));
    this.name = 'ContractError';
  }
}

export const invalidRequest = (message: string, cause?: unknown) =>
  new ContractError('invalid_request', message, { cause });
export const notFound = (message: string) => new ContractError('not_found', message);
export const conflict = (message: string) => new ContractError('conflict', message);
export const forbidden = (message: string) => new ContractError('forbidden', message);
export const rateLimited = (message: string, retryAfterSeconds?: number) =>
  new ContractError('rate_limited', message, retryAfterSeconds === undefined ? undefined : { retryAfterSeconds });
export const unavailable = (message: string, cause?: unknown) =>
  new ContractError('unavailable', message, { cause });

export function isErrorReply(value: unknown): value is ErrorReply {
  return ErrorReplySchema.safeParse(value).success;
}

/** Turns zod issues into one short, safe sentence (never echoes the offending value). */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .slice(0, 5)
    .map((issue) => {
      const path = issue.path.length > 0 ? issue.path.join('.') : 'body';
      return `${path}: ${issue.message}`;
    })
    .join('; ');
}
