import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { Inject } from '@nestjs/common';
import {
  Subjects,
  TenantsConfigureRequest,
  TotpActivateRequest,
  TotpEnrollRequest,
  UsersRegisterRequest,
  type TenantsConfigureReply,
  type TotpActivateReply,
  type TotpEnrollReply,
  type UsersRegisterReply,
} from '@mfa/contracts';
import { ContractPipe, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { UserSettingsService } from '../application/user-settings.service.js';

/** The public request/reply API of user-settings: validated by the contract's schemas, answered by the service. */
@NatsController()
export class UserSettingsController {
  constructor(@Inject(UserSettingsService) private readonly service: UserSettingsService) {}

  @MessagePattern(Subjects.usersRegister)
  register(@Payload(new ContractPipe(UsersRegisterRequest)) request: UsersRegisterRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersRegisterReply> {
    return this.service.register(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.totpEnroll)
  enrollTotp(@Payload(new ContractPipe(TotpEnrollRequest)) request: TotpEnrollRequest, @Ctx() ctx: NatsRequestContext): Promise<TotpEnrollReply> {
    return this.service.enrollTotp(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.totpActivate)
  activateTotp(@Payload(new ContractPipe(TotpActivateRequest)) request: TotpActivateRequest, @Ctx() ctx: NatsRequestContext): Promise<TotpActivateReply> {
    return this.service.activateTotp(request, ctx.receivedAt);
  }

  /** Parsed without defaults filled in: omitted settings stay as they are. */
  @MessagePattern(Subjects.tenantsConfigure)
  configureTenant(
    @Payload(new ContractPipe(TenantsConfigureRequest)) request: TenantsConfigureRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<TenantsConfigureReply> {
    return this.service.configureTenant(request, ctx.receivedAt);
  }
}
