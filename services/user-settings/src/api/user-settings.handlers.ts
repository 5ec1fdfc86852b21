import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { Subjects, TotpActivateRequest, TotpEnrollRequest, UsersRegisterRequest } from '@mfa/contracts';
import { RequestRouter } from '@mfa/messaging';
import { UserSettingsService } from '../application/user-settings.service.js';
import { TenantsConfigureCommand } from './tenants-configure.schema.js';

/**
 * The public request/reply API of user-settings. The router validates every request against its
 * schema and turns thrown ContractErrors into error replies; handlers only translate.
 */
@Injectable()
export class UserSettingsHandlers implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(
    @Inject(RequestRouter) private readonly router: RequestRouter,
    @Inject(UserSettingsService) private readonly service: UserSettingsService,
  ) {}

  onApplicationBootstrap(): void {
    this.router.handle(Subjects.usersRegister, UsersRegisterRequest, (r, c) => this.service.register(r, c.receivedAt));
    this.router.handle(Subjects.totpEnroll, TotpEnrollRequest, (r, c) => this.service.enrollTotp(r, c.receivedAt));
    this.router.handle(Subjects.totpActivate, TotpActivateRequest, (r, c) => this.service.activateTotp(r, c.receivedAt));
    this.router.handle(Subjects.tenantsConfigure, TenantsConfigureCommand, (r, c) => this.service.configureTenant(r, c.receivedAt));
  }

  /** Stops taking requests; the router lets the ones being handled finish before Redis and NATS close. */
  async onModuleDestroy(): Promise<void> {
    await this.router.stop();
  }
}
