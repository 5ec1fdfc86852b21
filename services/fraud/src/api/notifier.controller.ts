import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers, type EventOf } from '@mfa/contracts';
import { type Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { NotifierService } from '../application/notifier.service.js';

/** Every fraud alert (FraudReported), from any instance, one at a time: its e-mails. */
@NatsController()
export class NotifierController {
  constructor(@Inject(NotifierService) private readonly notifier: NotifierService) {}

  @JetStreamConsumer(Consumers.fraudNotifier, { batchSize: 1, concurrency: 4 })
  async notify(@Payload() deliveries: Delivery[]): Promise<void> {
    for (const { event, msg } of deliveries) {
      if (event.type !== 'FraudReported') continue;
      await this.notifier.notify(event as EventOf<'FraudReported'>, msg.info.deliveryCount, () => msg.working());
    }
  }
}
