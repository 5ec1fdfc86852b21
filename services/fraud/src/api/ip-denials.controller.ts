import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { IpLockoutService, type DenialEvent } from '../application/ip-lockout.service.js';
import { IpThrottleService } from '../application/ip-throttle.service.js';

const DENIALS = new Set(['ChallengeCodeRejected', 'ChallengeAttemptsExhausted', 'ChallengeExpired']);

/**
 * Per-IP lockout's and per-IP throttling's counting: the challenge denials, one durable consumer per kind (nats-server
 * 2.9 takes one filter subject per consumer), each denial counted against its client address.
 */
@NatsController()
export class IpDenialsController {
  constructor(
    @Inject(IpLockoutService) private readonly lockout: IpLockoutService,
    @Inject(IpThrottleService) private readonly throttle: IpThrottleService,
  ) {}

  private async count(deliveries: Delivery[]): Promise<void> {
    for (const { event } of deliveries) {
      if (!DENIALS.has(event.type)) throw new PoisonMessageError(`unexpected ${event.type} among challenge denials`);
      await this.lockout.countDenial(event as DenialEvent, new Date());
    }
  }

  @JetStreamConsumer(Consumers.fraudIpCodeRejected, { batchSize: 50 })
  codeRejected(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.count(deliveries);
  }

  @JetStreamConsumer(Consumers.fraudIpAttemptsExhausted, { batchSize: 50 })
  attemptsExhausted(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.count(deliveries);
  }

  @JetStreamConsumer(Consumers.fraudIpExpired, { batchSize: 50 })
  expired(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.count(deliveries);
  }

  /** Per-IP throttling's counting: the starts that send something, one durable consumer per method. */
  private async countStarts(deliveries: Delivery[]): Promise<void> {
    for (const { event } of deliveries) {
      if (event.type !== 'ChallengeStarted') throw new PoisonMessageError(`unexpected ${event.type} among challenge starts`);
      await this.throttle.countStart(event, new Date());
    }
  }

  @JetStreamConsumer(Consumers.fraudIpStartedSms, { batchSize: 50 })
  startedSms(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.countStarts(deliveries);
  }

  @JetStreamConsumer(Consumers.fraudIpStartedVoice, { batchSize: 50 })
  startedVoice(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.countStarts(deliveries);
  }

  @JetStreamConsumer(Consumers.fraudIpStartedPush, { batchSize: 50 })
  startedPush(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.countStarts(deliveries);
  }
}
