import { Inject } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import {
  FraudFromAppRequest,
  FraudFromCallRequest,
  InternalSubjects,
  FraudIpsListRequest,
  FraudIpsUnlockRequest,
  FraudReportRequest,
  Subjects,
  UsersBlockRequest,
  UsersUnblockRequest,
  type FraudIpsListReply,
  type FraudIpsUnlockReply,
  type FraudReportReply,
  type UsersBlockReply,
  type UsersUnblockReply,
} from '@mfa/contracts';
import { ContractPipe, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { BlocksService } from '../application/blocks.service.js';
import { FraudAlertsService } from '../application/fraud-alerts.service.js';
import { IpLockoutService } from '../application/ip-lockout.service.js';
import type { Actor } from '../domain/user-block.js';

/** Who acts: the calling API client and, through the console, the operator. */
function actorOf(ctx: NatsRequestContext): Actor | undefined {
  const actor: Actor = {};
  if (ctx.principal?.clientId) actor.clientId = ctx.principal.clientId;
  if (ctx.operator?.sub) actor.operator = ctx.operator.sub;
  return Object.keys(actor).length > 0 ? actor : undefined;
}

/**
 * users.block, users.unblock and fraud.ips.unlock (admin scope; audited by the transport like
 * every admin subject), fraud.report (challenges scope: what an IdP's key may send for its
 * users) and fraud.ips.list (reports scope).
 */
@NatsController()
export class BlocksController {
  constructor(
    @Inject(BlocksService) private readonly blocks: BlocksService,
    @Inject(FraudAlertsService) private readonly alerts: FraudAlertsService,
    @Inject(IpLockoutService) private readonly ips: IpLockoutService,
  ) {}

  @MessagePattern(Subjects.fraudIpsList)
  listIps(@Payload(new ContractPipe(FraudIpsListRequest)) request: FraudIpsListRequest, @Ctx() ctx: NatsRequestContext): Promise<FraudIpsListReply> {
    return this.ips.list(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.fraudIpsUnlock)
  unlockIp(@Payload(new ContractPipe(FraudIpsUnlockRequest)) request: FraudIpsUnlockRequest, @Ctx() ctx: NatsRequestContext): Promise<FraudIpsUnlockReply> {
    return this.ips.unlock(request, ctx.receivedAt, actorOf(ctx));
  }

  @MessagePattern(Subjects.fraudReport)
  report(@Payload(new ContractPipe(FraudReportRequest)) request: FraudReportRequest, @Ctx() ctx: NatsRequestContext): Promise<FraudReportReply> {
    return this.alerts.report(request, ctx.receivedAt, actorOf(ctx));
  }

  /** dispatch: the user entered the fraud code during a voice challenge's call (internal: signed by the services, ApiKeyGuard). */
  @MessagePattern(InternalSubjects.fraudFromCall)
  reportFromCall(@Payload(new ContractPipe(FraudFromCallRequest)) request: FraudFromCallRequest, @Ctx() ctx: NatsRequestContext): Promise<FraudReportReply> {
    return this.alerts.report({ ...request, source: 'phone' }, ctx.receivedAt);
  }

  /** auth-challenge's device API: the user reported a push as fraud in the authenticator app (internal: signed). */
  @MessagePattern(InternalSubjects.fraudFromApp)
  reportFromApp(@Payload(new ContractPipe(FraudFromAppRequest)) request: FraudFromAppRequest, @Ctx() ctx: NatsRequestContext): Promise<FraudReportReply> {
    const { deviceId, ...target } = request;
    return this.alerts.report({ ...target, source: 'app' }, ctx.receivedAt, undefined, deviceId);
  }

  @MessagePattern(Subjects.usersBlock)
  block(@Payload(new ContractPipe(UsersBlockRequest)) request: UsersBlockRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersBlockReply> {
    return this.blocks.block(request, ctx.receivedAt, actorOf(ctx));
  }

  @MessagePattern(Subjects.usersUnblock)
  unblock(@Payload(new ContractPipe(UsersUnblockRequest)) request: UsersUnblockRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersUnblockReply> {
    return this.blocks.unblock(request, ctx.receivedAt, actorOf(ctx));
  }
}
