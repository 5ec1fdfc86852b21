import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { Inject } from '@nestjs/common';
import {
  ClientsCreateRequest,
  ClientsListRequest,
  ClientsRevokeRequest,
  Subjects,
  TenantsConfigureRequest,
  TenantsGetRequest,
  TenantsDeleteRequest,
  type TenantsDeleteReply,
  forbidden,
  TotpActivateRequest,
  TotpEnrollRequest,
  UsersDeleteRequest,
  UsersGetRequest,
  UsersListRequest,
  UsersResetRequest,
  UsersMethodsDefaultRequest,
  UsersRememberedRevokeRequest,
  UsersAppPasswordsCreateRequest,
  UsersAppPasswordsDeleteRequest,
  AppPasswordsVerifyRequest,
  UsersTokensDeleteRequest,
  UsersRegisterRequest,
  UsersPinSetRequest,
  PinVerifyRequest,
  InternalSubjects,
  DeviceActivateRequest,
  DeviceReregisterRequest,
  UsersDevicesDeleteRequest,
  UsersPushEnrollRequest,
  type DeviceActivateReply,
  type UsersDevicesDeleteReply,
  type UsersPushEnrollReply,
  type UsersPinSetReply,
  type PinVerifyReply,
  type ClientsCreateReply,
  type ClientsListReply,
  type ClientsRevokeReply,
  type TenantsConfigureReply,
  type TenantsGetReply,
  type TotpActivateReply,
  type TotpEnrollReply,
  type UsersDeleteReply,
  type UsersGetReply,
  type UsersListReply,
  type UsersResetReply,
  type UsersMethodsDefaultReply,
  type UsersRememberedRevokeReply,
  type UsersAppPasswordsCreateReply,
  type UsersAppPasswordsDeleteReply,
  type AppPasswordsVerifyReply,
  type UsersTokensDeleteReply,
  type UsersRegisterReply,
} from '@mfa/contracts';
import { AuditTrail, Authenticator, ContractPipe, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { ApiClientsService } from '../application/api-clients.service.js';
import { UserSettingsService } from '../application/user-settings.service.js';

/** The audit trail's outcome for a users.register that completed an erasure before registering. */
export const ERASURE_COMPLETED = 'erasure_completed';

/**
 * The public request/reply API of user-settings: authorized by ApiKeyGuard (applied by
 * @NatsController), validated by the contract's schemas, answered by the services.
 */
@NatsController()
export class UserSettingsController {
  constructor(
    @Inject(UserSettingsService) private readonly service: UserSettingsService,
    @Inject(ApiClientsService) private readonly clients: ApiClientsService,
    @Inject(Authenticator) private readonly auth: Authenticator,
    @Inject(AuditTrail) private readonly audit: AuditTrail,
  ) {}

  /**
   * An IdP's register is not audited, but one that completes an erasure the key store holds and
   * the log misses (a restore of the two from different moments) erases personal data: the trail
   * records it, naming the caller and the user, with outcome `erasure_completed`.
   */
  @MessagePattern(Subjects.usersRegister)
  register(@Payload(new ContractPipe(UsersRegisterRequest)) request: UsersRegisterRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersRegisterReply> {
    return this.service.register(request, ctx.receivedAt, {
      erasureCompleted: () => this.audit.record(ctx, { tenantId: request.tenantId, userId: request.userId }, ERASURE_COMPLETED),
    });
  }

  @MessagePattern(Subjects.usersGet)
  get(@Payload(new ContractPipe(UsersGetRequest)) request: UsersGetRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersGetReply> {
    return this.service.get(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersList)
  list(@Payload(new ContractPipe(UsersListRequest)) request: UsersListRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersListReply> {
    return this.service.list(request, ctx.receivedAt);
  }

  /** Admin: every method cleared; audited by the transport like every admin subject. */
  @MessagePattern(Subjects.usersReset)
  reset(@Payload(new ContractPipe(UsersResetRequest)) request: UsersResetRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersResetReply> {
    return this.service.reset(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersMethodsDefault)
  chooseDefaultMethod(
    @Payload(new ContractPipe(UsersMethodsDefaultRequest)) request: UsersMethodsDefaultRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<UsersMethodsDefaultReply> {
    return this.service.chooseDefaultMethod(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersRememberedRevoke)
  revokeRemembered(
    @Payload(new ContractPipe(UsersRememberedRevokeRequest)) request: UsersRememberedRevokeRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<UsersRememberedRevokeReply> {
    return this.service.revokeRemembered(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersAppPasswordsCreate)
  createAppPassword(
    @Payload(new ContractPipe(UsersAppPasswordsCreateRequest)) request: UsersAppPasswordsCreateRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<UsersAppPasswordsCreateReply> {
    return this.service.createAppPassword(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersAppPasswordsDelete)
  deleteAppPasswords(
    @Payload(new ContractPipe(UsersAppPasswordsDeleteRequest)) request: UsersAppPasswordsDeleteRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<UsersAppPasswordsDeleteReply> {
    return this.service.deleteAppPasswords(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.appPasswordsVerify)
  verifyAppPassword(@Payload(new ContractPipe(AppPasswordsVerifyRequest)) request: AppPasswordsVerifyRequest, @Ctx() ctx: NatsRequestContext): Promise<AppPasswordsVerifyReply> {
    return this.service.verifyAppPassword(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersPinSet)
  setPin(@Payload(new ContractPipe(UsersPinSetRequest)) request: UsersPinSetRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersPinSetReply> {
    return this.service.setPin(request, ctx.receivedAt);
  }

  /** dispatch, during a voice call in PIN mode (internal: NATS permissions keep callers out). */
  @MessagePattern(InternalSubjects.pinVerify)
  verifyPin(@Payload(new ContractPipe(PinVerifyRequest)) request: PinVerifyRequest, @Ctx() ctx: NatsRequestContext): Promise<PinVerifyReply> {
    return this.service.verifyPin(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersPushEnroll)
  enrollPush(@Payload(new ContractPipe(UsersPushEnrollRequest)) request: UsersPushEnrollRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersPushEnrollReply> {
    return this.service.enrollPush(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersDevicesDelete)
  deleteDevice(@Payload(new ContractPipe(UsersDevicesDeleteRequest)) request: UsersDevicesDeleteRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersDevicesDeleteReply> {
    return this.service.deleteDevice(request, ctx.receivedAt);
  }

  /** auth-challenge's device API: an authenticator app activates with its code (internal). */
  @MessagePattern(InternalSubjects.deviceActivate)
  activateDevice(@Payload(new ContractPipe(DeviceActivateRequest)) request: DeviceActivateRequest, @Ctx() ctx: NatsRequestContext): Promise<DeviceActivateReply> {
    return this.service.activateDevice(request, ctx.receivedAt);
  }

  /** dispatch: a push provider refused a device's token (internal). */
  @MessagePattern(InternalSubjects.deviceReregister)
  reregisterDevice(@Payload(new ContractPipe(DeviceReregisterRequest)) request: DeviceReregisterRequest, @Ctx() ctx: NatsRequestContext): Promise<{ recorded: boolean }> {
    return this.service.reregisterDevice(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.usersTokensDelete)
  deleteToken(@Payload(new ContractPipe(UsersTokensDeleteRequest)) request: UsersTokensDeleteRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersTokensDeleteReply> {
    return this.service.deleteToken(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.totpEnroll)
  enrollTotp(@Payload(new ContractPipe(TotpEnrollRequest)) request: TotpEnrollRequest, @Ctx() ctx: NatsRequestContext): Promise<TotpEnrollReply> {
    return this.service.enrollTotp(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.totpActivate)
  activateTotp(@Payload(new ContractPipe(TotpActivateRequest)) request: TotpActivateRequest, @Ctx() ctx: NatsRequestContext): Promise<TotpActivateReply> {
    return this.service.activateTotp(request, ctx.receivedAt);
  }

  /**
   * Admin: erases the user (crypto-shredding); audited by the transport like every admin subject.
   * With `onlyIfKeyErased`, only completes an erasure the key store made (see the service).
   */
  @MessagePattern(Subjects.usersDelete)
  delete(@Payload(new ContractPipe(UsersDeleteRequest)) request: UsersDeleteRequest, @Ctx() ctx: NatsRequestContext): Promise<UsersDeleteReply> {
    const { tenantId, userId, onlyIfKeyErased } = request;
    return this.service.delete({ tenantId, userId, onlyIfKeyErased }, ctx.receivedAt);
  }

  /** Parsed without defaults filled in: omitted settings stay as they are. */
  @MessagePattern(Subjects.tenantsConfigure)
  configureTenant(
    @Payload(new ContractPipe(TenantsConfigureRequest)) request: TenantsConfigureRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<TenantsConfigureReply> {
    const mayCreateTenant = this.auth.mode === 'off' || ctx.principal?.kind === 'platform';
    return this.service.configureTenant(request, ctx.receivedAt, { mayCreateTenant });
  }

  @MessagePattern(Subjects.tenantsGet)
  getTenant(@Payload(new ContractPipe(TenantsGetRequest)) request: TenantsGetRequest, @Ctx() ctx: NatsRequestContext): Promise<TenantsGetReply> {
    return this.service.getTenant(request, ctx.receivedAt);
  }

  /**
   * Platform key only (or anyone with MFA_AUTH=off), as creating a tenant: a tenant's own admin key
   * cannot offboard it. The tenant's clients are revoked before the answer, so its keys stop at once.
   */
  @MessagePattern(Subjects.tenantsDelete)
  async deleteTenant(@Payload(new ContractPipe(TenantsDeleteRequest)) request: TenantsDeleteRequest, @Ctx() ctx: NatsRequestContext): Promise<TenantsDeleteReply> {
    if (this.auth.mode !== 'off' && ctx.principal?.kind !== 'platform') throw forbidden('only the platform key may delete a tenant');
    const reply = await this.service.deleteTenant(request, ctx.receivedAt);
    if (reply.state === 'deleting') await this.clients.revokeAllOf(request.tenantId, reply.deletedAt, ctx.receivedAt);
    return reply;
  }

  @MessagePattern(Subjects.clientsCreate)
  createClient(@Payload(new ContractPipe(ClientsCreateRequest)) request: ClientsCreateRequest, @Ctx() ctx: NatsRequestContext): Promise<ClientsCreateReply> {
    return this.clients.create(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.clientsList)
  listClients(@Payload(new ContractPipe(ClientsListRequest)) request: ClientsListRequest, @Ctx() ctx: NatsRequestContext): Promise<ClientsListReply> {
    return this.clients.list(request, ctx.receivedAt);
  }

  @MessagePattern(Subjects.clientsRevoke)
  revokeClient(@Payload(new ContractPipe(ClientsRevokeRequest)) request: ClientsRevokeRequest, @Ctx() ctx: NatsRequestContext): Promise<ClientsRevokeReply> {
    return this.clients.revoke(request, ctx.receivedAt);
  }
}
