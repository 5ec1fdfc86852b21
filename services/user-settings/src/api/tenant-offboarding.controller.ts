import { Inject } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Consumers, unavailable } from '@mfa/contracts';
import type { Delivery } from '@mfa/messaging';
import { JetStreamConsumer, JetStreamContext, LOGGER, NatsController } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { TenantOffboarding } from '../application/tenant-offboarding.js';

/**
 * Tenant events, several tenants at once (TENANT_OFFBOARDING_CONCURRENCY, never two offboardings of
 * one tenant at once on an instance): a TenantDeleted starts its tenant's offboarding (TenantOffboarding),
 * which tells JetStream it is still working while it erases, and is delivered again (and resumes)
 * if this instance stops or it fails. A deleted tenant must be offboarded whatever went wrong, so a
 * failure is logged and retried with back-off, as an outage is, never dead-lettered (where nothing
 * would start it again). Every other tenant event needs nothing here.
 */
@NatsController()
export class TenantOffboardingController {
  constructor(
    @Inject(TenantOffboarding) private readonly offboarding: TenantOffboarding,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  @JetStreamConsumer(Consumers.tenantOffboarding, { batchSize: 1 })
  async offboard(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext): Promise<void> {
    for (const { event, msg } of deliveries) {
      if (event.type !== 'TenantDeleted') continue;
      try {
        await this.offboarding.offboard(event.tenantId, () => new Date(), () => msg.working(), ctx.signal);
      } catch (error) {
        if (ctx.signal.aborted) throw error;
        this.log.error('tenant offboarding failed; it is retried and resumes where it stopped', { tenantId: event.tenantId, error });
        throw unavailable('tenant offboarding failed; retried', error);
      }
    }
  }
}
