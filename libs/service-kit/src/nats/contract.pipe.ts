import type { PipeTransform } from '@nestjs/common';
import type { z } from 'zod';
import { ContractError, describeIssues } from '@mfa/contracts';

/**
 * Validation lives here: `@Payload(new ContractPipe(Schema))` parses the request body with the
 * contract's zod schema and hands the handler the typed, defaulted value. A body that does not
 * match answers `invalid_request` with the first problems named (never the offending values).
 * A top-level field sent as `null` is taken as absent (withoutNulls).
 */
export class ContractPipe<S extends z.ZodType> implements PipeTransform<unknown, z.infer<S>> {
  constructor(private readonly schema: S) {}

  transform(value: unknown): z.infer<S> {
    const parsed = this.schema.safeParse(withoutNulls(value));
    if (!parsed.success) throw new ContractError('invalid_request', describeIssues(parsed.error.issues));
    return parsed.data;
  }
}

/**
 * Fields whose absence keeps or widens what a request does: a profile field of users.register
 * (absent: the value stays), `appPasswordId` and `rememberId` (absent: every app password, every
 * remembered browser). A client sending null there may mean "clear" or "none": it stays an error
 * rather than taking that meaning.
 */
const NULL_IS_NOT_ABSENT = new Set(['displayName', 'email', 'phoneNumber', 'phoneExtension', 'language', 'appPasswordId', 'rememberId']);

/**
 * The body without its top-level fields whose value is `null`: an optional field sent as null is
 * absent, as clients that build bodies from optional values write it (Python's None, a nil
 * pointer, C#'s null: MISSION.md's `method?`, `clientIp?`); a required one is then missing, and
 * refused as such; NULL_IS_NOT_ABSENT keep their null, refused by the schema. No request field
 * takes null as a value of its own. The body itself is returned when it holds no null to drop
 * (the usual case: nothing copied).
 */
export function withoutNulls(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  let copy: Record<string, unknown> | undefined;
  for (const key in value) {
    if (!Object.hasOwn(value, key) || (value as Record<string, unknown>)[key] !== null || NULL_IS_NOT_ABSENT.has(key)) continue;
    copy ??= { ...(value as Record<string, unknown>) };
    delete copy[key];
  }
  return copy ?? value;
}
