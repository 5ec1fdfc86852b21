import { Inject } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Consumers } from '@mfa/contracts';
import type { Delivery } from '@mfa/messaging';
import { JetStreamConsumer, JetStreamContext, NatsController } from '@mfa/service-kit';
import { SmsDeliveryService } from '../application/sms-delivery.service.js';
import { SmsResendService } from '../application/sms-resend.service.js';
import { DEFAULT_SEND_CONCURRENCY, sendConsumer } from '../config.js';

/** Sends are slow (a vendor round trip) and independent: many at once, one message each. */
const SMS_CONCURRENCY = DEFAULT_SEND_CONCURRENCY;

/**
 * The SMS requests (ChallengeStarted on mfa.evt.challenge.started.sms, and resends of their codes:
 * ChallengeResendRequested) through shared durable consumers, so instances split the work and a
 * crashed one's messages come back. When the service stops, sends in flight finish; waits for a
 * retry end early and their messages go back.
 */
@NatsController()
export class SmsRequestsController {
  constructor(
    @Inject(SmsDeliveryService) private readonly delivery: SmsDeliveryService,
    @Inject(SmsResendService) private readonly resends: SmsResendService,
  ) {}

  // No more unacknowledged messages than are being sent: a message waiting in the local buffer
  // behind slow sends would outlive its ack wait and be delivered (and sent) twice.
  @JetStreamConsumer(Consumers.dispatchSms, sendConsumer(SMS_CONCURRENCY))
  async deliver(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext): Promise<void> {
    for (const delivery of deliveries) await this.delivery.deliver(delivery, ctx.signal);
  }

  @JetStreamConsumer(Consumers.dispatchSmsResend, sendConsumer(SMS_CONCURRENCY))
  async resend(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext): Promise<void> {
    for (const delivery of deliveries) await this.resends.resend(delivery, ctx.signal);
  }
}
