import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { Consumers } from '@mfa/contracts';
import { EventConsumer, type NatsClients } from '@mfa/messaging';
import { LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { UserProjector } from '../application/user-projector.js';

/** Events handed to the projector at once; a batch rebuilds each user it touches only once. */
const BATCH_SIZE = 100;

/**
 * Runs the durable user projector: every user event, from this instance or any other, from now
 * or replayed after a Redis flush, ends up in the Redis projection auth-challenge reads.
 */
@Injectable()
export class UserProjectorConsumer implements OnApplicationBootstrap, OnModuleDestroy {
  private consumer: EventConsumer | undefined;

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(UserProjector) private readonly projector: UserProjector,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    this.consumer = new EventConsumer({
      js: this.nats.js,
      definition: Consumers.userProjector,
      log: this.log,
      batchSize: BATCH_SIZE,
      handle: (deliveries) => this.projector.handle(deliveries),
    });
    await this.consumer.start();
  }

  async onModuleDestroy(): Promise<void> {
    await this.consumer?.stop();
  }
}
