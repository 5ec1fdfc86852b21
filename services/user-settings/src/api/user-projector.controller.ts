import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers } from '@mfa/contracts';
import type { Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { UserProjector } from '../application/user-projector.js';

/**
 * The durable user projector: every user event, from this instance or any other, from now or
 * replayed after a Redis flush, ends up in the Redis projection auth-challenge reads. A batch
 * rebuilds each user it touches only once.
 */
@NatsController()
export class UserProjectorController {
  constructor(@Inject(UserProjector) private readonly projector: UserProjector) {}

  @JetStreamConsumer(Consumers.userProjector, { batchSize: 100 })
  project(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.projector.handle(deliveries);
  }
}
