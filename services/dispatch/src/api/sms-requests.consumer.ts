import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { Consumers, Streams } from '@mfa/contracts';
import { ensureConsumer, ensureStreams, EventConsumer, type NatsClients } from '@mfa/messaging';
import { LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { SmsDeliveryService } from '../delivery/sms-delivery.service.js';

export const STREAM_REPLICAS = Symbol('STREAM_REPLICAS');

/** Sends are slow (a vendor round trip) and independent: many at once, one message each. */
const CONCURRENCY = 64;
// No more unacknowledged messages than are being sent: a message waiting in the local buffer
// behind slow sends would outlive its ack wait and be delivered (and sent) twice.
const MAX_ACK_PENDING = CONCURRENCY;

/**
 * Consumes the SMS requests (ChallengeStarted on mfa.evt.challenge.started.sms) through the
 * shared durable consumer, so instances split the work and a crashed one's messages come back.
 */
@Injectable()
export class SmsRequestsConsumer implements OnApplicationBootstrap, OnModuleDestroy {
  private consumer: EventConsumer | undefined;
  private readonly stopping = new AbortController();

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(STREAM_REPLICAS) private readonly replicas: number,
    @Inject(SmsDeliveryService) private readonly delivery: SmsDeliveryService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await ensureStreams(this.nats.jsm, [Streams.challenges, Streams.dispatch, Streams.deadLetters], this.replicas);
    await ensureConsumer(this.nats.jsm, Consumers.dispatchSms, MAX_ACK_PENDING);
    this.consumer = new EventConsumer({
      js: this.nats.js,
      definition: Consumers.dispatchSms,
      log: this.log,
      batchSize: 1,
      concurrency: CONCURRENCY,
      handle: async (deliveries) => {
        for (const delivery of deliveries) await this.delivery.deliver(delivery, this.stopping.signal);
      },
    });
    await this.consumer.start();
  }

  async onModuleDestroy(): Promise<void> {
    // Sends in flight finish; waits for a retry end early and their messages go back to JetStream.
    this.stopping.abort();
    await this.consumer?.stop();
  }
}
