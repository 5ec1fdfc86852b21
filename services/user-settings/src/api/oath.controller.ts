import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import {
  OathImportRequest,
  OathImportStatusRequest,
  OathTokensActivateRequest,
  OathTokensAssignRequest,
  OathTokensListRequest,
  Subjects,
  type OathImportReply,
  type OathImportStatusReply,
  type OathTokensActivateReply,
  type OathTokensAssignReply,
  type OathTokensListReply,
} from '@mfa/contracts';
import { ContractPipe, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { OathImportService } from '../application/oath-import.service.js';
import { OathTokensService } from '../application/oath-tokens.service.js';

/** Hardware OATH tokens (admin scope; audited by the transport like every admin subject). */
@NatsController()
export class OathController {
  constructor(
    @Inject(OathImportService) private readonly imports: OathImportService,
    @Inject(OathTokensService) private readonly tokens: OathTokensService,
  ) {}

  @MessagePattern(Subjects.oathImport)
  import(@Payload(new ContractPipe(OathImportRequest)) request: OathImportRequest, @Ctx() ctx: NatsRequestContext): Promise<OathImportReply> {
    return this.imports.request(request, ctx.receivedAt, ctx.principal?.clientId);
  }

  @MessagePattern(Subjects.oathImportStatus)
  status(@Payload(new ContractPipe(OathImportStatusRequest)) request: OathImportStatusRequest, @Ctx() ctx: NatsRequestContext): Promise<OathImportStatusReply> {
    return this.imports.status(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.oathTokensList)
  list(@Payload(new ContractPipe(OathTokensListRequest)) request: OathTokensListRequest, @Ctx() ctx: NatsRequestContext): Promise<OathTokensListReply> {
    return this.tokens.list(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.oathTokensAssign)
  assign(@Payload(new ContractPipe(OathTokensAssignRequest)) request: OathTokensAssignRequest, @Ctx() ctx: NatsRequestContext): Promise<OathTokensAssignReply> {
    return this.tokens.assign(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.oathTokensActivate)
  activate(@Payload(new ContractPipe(OathTokensActivateRequest)) request: OathTokensActivateRequest, @Ctx() ctx: NatsRequestContext): Promise<OathTokensActivateReply> {
    return this.tokens.activate(request, ctx.receivedAt);
  }
}

/** Import workers run while the service runs; a stopping instance leaves its job at a checkpoint. */
@Injectable()
export class OathImportWorkers implements OnApplicationBootstrap, OnApplicationShutdown {
  constructor(@Inject(OathImportService) private readonly imports: OathImportService) {}

  onApplicationBootstrap(): void {
    this.imports.start();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.imports.stop();
  }
}
