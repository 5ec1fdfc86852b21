import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { notFound, SigninsQueryRequest, Subjects, type SigninsQueryReply } from '@mfa/contracts';
import { RequestRouter } from '@mfa/messaging';
import { SigninsRepository } from '../adapters/signins.repository.js';
import { decodeCursor, toPage } from '../domain/signin-report.js';

/** Answers `mfa.v1.reports.signins.query`: one keyset page of the tenant's sign-in report. */
@Injectable()
export class SigninsQueryHandler implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(
    @Inject(RequestRouter) private readonly router: RequestRouter,
    @Inject(SigninsRepository) private readonly repository: SigninsRepository,
  ) {}

  onApplicationBootstrap(): void {
    this.router.handle(Subjects.reportsSigninsQuery, SigninsQueryRequest, (request, context) =>
      this.query(request, context.receivedAt),
    );
  }

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

  async onModuleDestroy(): Promise<void> {
    // Stop taking requests before the database pool closes.
    await this.router.stop();
  }
}
