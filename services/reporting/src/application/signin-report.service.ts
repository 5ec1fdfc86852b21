import { notFound, type SigninsQueryReply, type SigninsQueryRequest } from '@mfa/contracts';
import type { SigninsRepository } from '../adapters/signins.repository.js';
import { decodeCursor, toPage } from '../domain/signin-report.js';

/** `reports.signins.query`: one keyset page of a tenant's sign-in report. */
export class SigninReportService {
  constructor(private readonly repository: SigninsRepository) {}

  /** `now` decides which pending challenges have expired (and are reported as failures). */
  async query(request: SigninsQueryRequest, now: Date): Promise<SigninsQueryReply> {
    const after = request.cursor === undefined ? undefined : decodeCursor(request.cursor);
    if (!(await this.repository.tenantExists(request.tenantId))) throw notFound('unknown tenant');
    const rows = await this.repository.findSignins({
      tenantId: request.tenantId,
      userId: request.userId,
      from: request.from,
      to: request.to,
      result: request.result,
      after,
      now,
      // One more than asked: tells whether a next page may exist without counting.
      limit: request.limit + 1,
    });
    return toPage(rows, request.limit);
  }
}
