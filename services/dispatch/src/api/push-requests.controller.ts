import { Inject } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Consumers } from '@mfa/contracts';
import type { Delivery } from '@mfa/messaging';
import { JetStreamConsumer, JetStreamContext, NatsController } from '@mfa/service-kit';
import { PushDeliveryService } from '../application/push-delivery.service.js';
import { DEFAULT_SEND_CONCURRENCY, sendConsumer } from '../config.js';

/** Pushes are slow (a vendor round trip per device) and independent: many at once, one message each. */
const PUSH_CONCURRENCY = DEFAULT_SEND_CONCURRENCY;

/**
 * The push requests (ChallengeStarted on mfa.evt.challenge.started.push) through a shared durable
 * consumer, so instances split the work and a crashed one's messages come back. When the service
 * stops, pushes in flight finish; waits for a retry end early and their messages go back.
 */
@NatsController()
export class PushRequestsController {
  constructor(@Inject(PushDeliveryService) private readonly delivery: PushDeliveryService) {}

  // As for SMS: no more unacknowledged messages than are being pushed, so none outlives its ack
  // wait in the local buffer and is delivered (and pushed) twice.
  @JetStreamConsumer(Consumers.dispatchPush, sendConsumer(PUSH_CONCURRENCY))
  async deliver(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext): Promise<void> {
    for (const delivery of deliveries) await this.delivery.deliver(delivery, ctx.signal);
  }
}
