import { Inject } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Consumers } from '@mfa/contracts';
import type { Delivery } from '@mfa/messaging';
import { JetStreamConsumer, JetStreamContext, NatsController } from '@mfa/service-kit';
import { TenantOffboarding } from '../application/tenant-offboarding.js';

/**
 * Tenant events, one at a time: a TenantDeleted starts its tenant's offboarding (TenantOffboarding),
 * which tells JetStream it is still working while it erases, and is delivered again (and resumes)
 * if this instance stops or it fails. Every other tenant event needs nothing here.
 */
@NatsController()
export class TenantOffboardingController {
  constructor(@Inject(TenantOffboarding) private readonly offboarding: TenantOffboarding) {}

  @JetStreamConsumer(Consumers.tenantOffboarding, { batchSize: 1 })
  async offboard(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext): Promise<void> {
    for (const { event, msg } of deliveries) {
      if (event.type !== 'TenantDeleted') continue;
      await this.offboarding.offboard(event.tenantId, () => new Date(), () => msg.working(), ctx.signal);
    }
  }
}
