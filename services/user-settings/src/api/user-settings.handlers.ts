import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { z } from 'zod';
import { Subjects, TotpActivateRequest, TotpEnrollRequest, UsersRegisterRequest } from '@mfa/contracts';
import { RequestRouter, type RequestContext } from '@mfa/messaging';
import { UserSettingsService } from '../application/user-settings.service.js';
import { TenantsConfigureCommand } from './tenants-configure.schema.js';

/**
 * The public request/reply API of user-settings. The router validates every request against its
 * schema and turns thrown ContractErrors into error replies; handlers only translate.
 */
@Injectable()
export class UserSettingsHandlers implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    @Inject(RequestRouter) private readonly router: RequestRouter,
    @Inject(UserSettingsService) private readonly service: UserSettingsService,
  ) {}

  onApplicationBootstrap(): void {
    this.route(Subjects.usersRegister, UsersRegisterRequest, (r, c) => this.service.register(r, c.receivedAt));
    this.route(Subjects.totpEnroll, TotpEnrollRequest, (r, c) => this.service.enrollTotp(r, c.receivedAt));
    this.route(Subjects.totpActivate, TotpActivateRequest, (r, c) => this.service.activateTotp(r, c.receivedAt));
    this.route(Subjects.tenantsConfigure, TenantsConfigureCommand, (r, c) => this.service.configureTenant(r, c.receivedAt));
  }

  /** Stops taking requests and lets the ones being handled finish before Redis and NATS close. */
  async onModuleDestroy(): Promise<void> {
    await this.router.stop();
    await Promise.allSettled([...this.inFlight]);
  }

  private route<S extends z.ZodType>(
    subject: string,
    schema: S,
    handler: (request: z.infer<S>, context: RequestContext) => Promise<unknown>,
  ): void {
    this.router.handle(subject, schema, (request, context) => {
      const running = handler(request, context);
      this.inFlight.add(running);
      void running.finally(() => this.inFlight.delete(running)).catch(() => undefined);
      return running;
    });
  }
}
