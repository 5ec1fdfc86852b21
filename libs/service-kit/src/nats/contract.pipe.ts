import type { PipeTransform } from '@nestjs/common';
import type { z } from 'zod';
import { ContractError, describeIssues } from '@mfa/contracts';

/**
 * Validation lives here: `@Payload(new ContractPipe(Schema))` parses the request body with the
 * contract's zod schema and hands the handler the typed, defaulted value. A body that does not
 * match answers `invalid_request` with the first problems named (never the offending values).
 */
export class ContractPipe<S extends z.ZodType> implements PipeTransform<unknown, z.infer<S>> {
  constructor(private readonly schema: S) {}

  transform(value: unknown): z.infer<S> {
    const parsed = this.schema.safeParse(value);
    if (!parsed.success) throw new ContractError('invalid_request', describeIssues(parsed.error.issues));
    return parsed.data;
  }
}
