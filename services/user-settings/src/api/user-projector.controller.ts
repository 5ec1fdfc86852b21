import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers, OATH_TOKEN_EVENT_TYPES } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { OathTokensService, parseOathSubject } from '../application/oath-tokens.service.js';
import { UserProjector } from '../application/user-projector.js';

const OATH_EVENTS: ReadonlySet<string> = new Set(OATH_TOKEN_EVENT_TYPES);

/**
 * The durable projector: every user event, from this instance or any other, from now or replayed
 * after a Redis flush, ends up in the Redis projection auth-challenge reads; every hardware token
 * event in the inventory index oath.tokens.list reads. A batch rebuilds each user or token it
 * touches only once.
 */
@NatsController()
export class UserProjectorController {
  constructor(
    @Inject(UserProjector) private readonly projector: UserProjector,
    @Inject(OathTokensService) private readonly tokens: OathTokensService,
  ) {}

  @JetStreamConsumer(Consumers.userProjector, { batchSize: 100 })
  async project(@Payload() deliveries: Delivery[]): Promise<void> {
    const tokens = new Map<string, { tenantId: string; serialNumber: string }>();
    for (const { event, msg } of deliveries) {
      if (!OATH_EVENTS.has(event.type)) continue;
      const ids = parseOathSubject(msg.subject);
      if (!ids) throw new PoisonMessageError(`token event on unexpected subject ${msg.subject.slice(0, 200)}`);
      tokens.set(msg.subject, ids);
    }
    await this.projector.handle(deliveries);
    const now = new Date();
    for (const { tenantId, serialNumber } of tokens.values()) await this.tokens.reindex(tenantId, serialNumber, now);
  }
}
