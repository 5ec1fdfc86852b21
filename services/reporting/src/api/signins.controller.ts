import { Inject } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { SigninsQueryRequest, Subjects, type SigninsQueryReply } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import { ContractPipe, KEYRING, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { SigninReportService } from '../application/signin-report.service.js';

@NatsController()
export class SigninsController {
  constructor(
    @Inject(SigninReportService) private readonly report: SigninReportService,
    /** The service's keyring (runService provides it): it authenticates report cursors. */
    @Inject(KEYRING) private readonly keyring: Keyring,
  ) {}

  @MessagePattern(Subjects.reportsSigninsQuery)
  query(@Payload(new ContractPipe(SigninsQueryRequest)) request: SigninsQueryRequest, @Ctx() ctx: NatsRequestContext): Promise<SigninsQueryReply> {
    return this.report.query(request, ctx.receivedAt, this.keyring);
  }
}
