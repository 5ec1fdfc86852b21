import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import {
  Consumers,
  Streams,
  type AnyEvent,
  type ChallengeEvent,
  type ConsumerDefinition,
  type DispatchEvent,
  type TenantEvent,
} from '@mfa/contracts';
import {
  ensureConsumer,
  ensureStreams,
  EventConsumer,
  PoisonMessageError,
  type Delivery,
  type NatsClients,
} from '@mfa/messaging';
import { LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import type { Sequenced } from '../domain/signin-projection.js';
import { ReportProjection } from './report-projection.js';

export const STREAM_REPLICAS = Symbol('STREAM_REPLICAS');

const CHALLENGE_EVENTS = new Set<string>([
  'ChallengeStarted',
  'ChallengeRegistrationRequired',
  'ChallengeApproved',
  'ChallengeCodeRejected',
  'ChallengeAttemptsExhausted',
  'ChallengeExpired',
] satisfies ChallengeEvent['type'][]);
const DISPATCH_EVENTS = new Set<string>(['SmsSent', 'SmsDeliveryFailed'] satisfies DispatchEvent['type'][]);
const TENANT_EVENTS = new Set<string>(['TenantCreated', 'TenantSettingsChanged'] satisfies TenantEvent['type'][]);

/** Events of the types a consumer expects, with their stream sequence; anything else is poison. */
function sequenced<E extends AnyEvent>(deliveries: Delivery[], types: ReadonlySet<string>): Sequenced<E>[] {
  return deliveries.map(({ event, msg }) => {
    if (!types.has(event.type)) throw new PoisonMessageError(`unexpected ${event.type} event on ${msg.subject}`);
    return { event: event as E, seq: msg.info.streamSequence };
  });
}

/**
 * The durable consumers feeding the report. Streams and consumers are declared at boot (any
 * instance may come first); consumption starts once the application is up and stops, letting
 * in-flight batches commit, before the database pool closes.
 */
@Injectable()
export class ReportConsumers implements OnModuleInit, OnApplicationBootstrap, OnModuleDestroy {
  private readonly consumers: EventConsumer[] = [];

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(ReportProjection) private readonly projection: ReportProjection,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(STREAM_REPLICAS) private readonly replicas: number,
  ) {}

  async onModuleInit(): Promise<void> {
    await ensureStreams(this.nats.jsm, [Streams.challenges, Streams.dispatch, Streams.userSettings, Streams.deadLetters], this.replicas);
    for (const consumer of [Consumers.reportingChallenges, Consumers.reportingDispatch, Consumers.reportingTenants]) {
      await ensureConsumer(this.nats.jsm, consumer);
    }
  }

  async onApplicationBootstrap(): Promise<void> {
    const start = async (definition: ConsumerDefinition, handle: (deliveries: Delivery[]) => Promise<void>) => {
      const consumer = new EventConsumer({ js: this.nats.js, definition, log: this.log, handle, batchSize: 500, maxWaitMs: 50 });
      await consumer.start();
      this.consumers.push(consumer);
    };
    await start(Consumers.reportingChallenges, (d) =>
      this.projection.projectChallenges(sequenced<ChallengeEvent>(d, CHALLENGE_EVENTS)),
    );
    await start(Consumers.reportingDispatch, (d) =>
      this.projection.projectDispatch(sequenced<DispatchEvent>(d, DISPATCH_EVENTS)),
    );
    await start(Consumers.reportingTenants, (d) => this.projection.projectTenants(sequenced<TenantEvent>(d, TENANT_EVENTS)));
  }

  async onModuleDestroy(): Promise<void> {
    await Promise.all(this.consumers.splice(0).map((c) => c.stop()));
  }
}
