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

/**
 * Turns zod issues into one short, safe sentence: never the offending value, and no key the caller
 * chose (an unknown key is counted, a path segment that is not a plain name is shown as `[key]`),
 * so control or bidirectional characters sent never come back in a reply or a log.
 */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .slice(0, 5)
    .map((issue) => {
      const path = issue.path.length > 0 ? issue.path.map(pathSegment).join('.') : 'body';
      if (issue.code === 'unrecognized_keys') {
        // A misspelt setting is named; a key that is not a plain name is only counted.
        const named = issue.keys.filter(plainName).slice(0, 5);
        const others = issue.keys.length - named.length;
        const listed = [...named.map((k) => `"${k}"`), ...(others > 0 ? [`${others} more`] : [])];
        return `${path}: Unrecognized key${issue.keys.length === 1 ? '' : 's'}: ${listed.join(', ')}`;
      }
      return `${path}: ${issue.message}`;
    })
    .join('; ');
}

const plainName = (key: string) => /^[A-Za-z0-9_-]{1,64}$/.test(key);
const pathSegment = (segment: PropertyKey): string => (typeof segment === 'number' || (typeof segment === 'string' && plainName(segment)) ? String(segment) : '[key]');
