import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers, type EventOf } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { FraudAlertsService } from '../application/fraud-alerts.service.js';

/**
 * Every fraud alert (FraudReported), from any instance: completed whatever became of the report
 * that recorded it (FraudAlertsService.complete: nothing is done twice). An outage is retried for
 * as long as it lasts, so an alert recorded is always completed.
 */
@NatsController()
export class FraudAlertsController {
  constructor(@Inject(FraudAlertsService) private readonly alerts: FraudAlertsService) {}

  @JetStreamConsumer(Consumers.fraudAlerts, { batchSize: 1, concurrency: 4 })
  async complete(@Payload() deliveries: Delivery[]): Promise<void> {
    for (const { event, msg } of deliveries) {
      if (event.type !== 'FraudReported') throw new PoisonMessageError(`unexpected ${event.type} on a fraud alert subject`);
      await this.alerts.complete(event as EventOf<'FraudReported'>, msg.seq);
    }
  }
}
