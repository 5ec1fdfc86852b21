import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers, type FraudUserEvent } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { BlocksService } from '../application/blocks.service.js';

/**
 * The durable block projector: every block and unblock, from any instance, ends up in Redis
 * (the command path writes it at once too; this covers a failure between the event and Redis).
 * Each is applied only if it is later in the stream than the user's last one projected, so a
 * user's last word wins whichever instance, and whichever retry, applies it last.
 */
@NatsController()
export class BlockProjectorController {
  constructor(@Inject(BlocksService) private readonly blocks: BlocksService) {}

  @JetStreamConsumer(Consumers.fraudBlocks, { batchSize: 100 })
  async project(@Payload() deliveries: Delivery[]): Promise<void> {
    for (const { event, msg } of deliveries) {
      if (event.type !== 'UserBlocked' && event.type !== 'UserUnblocked') throw new PoisonMessageError(`unexpected ${event.type} on a fraud user subject`);
      await this.blocks.project(event.tenantId, [{ event: event as FraudUserEvent, seq: msg.seq }]);
    }
  }
}
