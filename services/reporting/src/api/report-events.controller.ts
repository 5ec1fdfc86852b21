import { Inject } from '@nestjs/common';
import { Payload } from '@nestjs/microservices';
import { Consumers, type AnyEvent, type ChallengeEvent, type DispatchEvent, type EventOf, type TenantEvent } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { JetStreamConsumer, NatsController, type JetStreamConsumerOptions } from '@mfa/service-kit';
import { ReportProjection } from '../application/report-projection.js';
import type { Sequenced } from '../domain/signin-projection.js';

const CHALLENGE_EVENTS = new Set<string>([
  'ChallengeStarted',
  'ChallengeRegistrationRequired',
  'ChallengeApproved',
  'ChallengeCodeRejected',
  'ChallengeAttemptsExhausted',
  'ChallengeExpired',
  'ChallengeDenied',
  'ChallengeBypassed',
  'ChallengeFraudReported',
  'ChallengeResendRequested',
  'ChallengeDeniedByUser',
  'ChallengeUserBlocked',
  'ChallengeVoided',
] satisfies ChallengeEvent['type'][]);
const DISPATCH_EVENTS = new Set<string>(['SmsSent', 'SmsDeliveryFailed', 'VoiceCallPlaced', 'VoiceCallFailed', 'SmsDeliveryReported', 'PushSent', 'PushDeliveryFailed'] satisfies DispatchEvent['type'][]);
const TENANT_EVENTS = new Set<string>(['TenantCreated', 'TenantSettingsChanged', 'TenantDeleted', 'TenantErased'] satisfies TenantEvent['type'][]);

/** What arrives together is projected together: fewer, larger transactions under load, for ≤ 50 ms of added lag. */
const BATCHES: JetStreamConsumerOptions = { batchSize: 500, maxWaitMs: 50 };

/** Events of the types a consumer expects, with their stream sequence; anything else is poison. */
function sequenced<E extends AnyEvent>(deliveries: Delivery[], types: ReadonlySet<string>): Sequenced<E>[] {
  return deliveries.map(({ event, msg }) => {
    if (!types.has(event.type)) throw new PoisonMessageError(`unexpected ${event.type} event on ${msg.subject}`);
    return { event: event as E, seq: msg.info.streamSequence };
  });
}

/** The durable consumers feeding the report; a batch is acked once its transaction committed. */
@NatsController()
export class ReportEventsController {
  constructor(@Inject(ReportProjection) private readonly projection: ReportProjection) {}

  @JetStreamConsumer(Consumers.reportingChallenges, BATCHES)
  challenges(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.projection.projectChallenges(sequenced<ChallengeEvent>(deliveries, CHALLENGE_EVENTS));
  }

  @JetStreamConsumer(Consumers.reportingDispatch, BATCHES)
  dispatch(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.projection.projectDispatch(sequenced<DispatchEvent>(deliveries, DISPATCH_EVENTS));
  }

  /** Every user event passes here; only UserErased concerns the report. */
  @JetStreamConsumer(Consumers.reportingErasures, { batchSize: 100 })
  erasures(@Payload() deliveries: Delivery[]): Promise<void> {
    const erased = deliveries.flatMap(({ event, msg }) =>
      event.type === 'UserErased' ? [{ event: event as EventOf<'UserErased'>, seq: msg.info.streamSequence }] : [],
    );
    return this.projection.projectErasures(erased);
  }

  @JetStreamConsumer(Consumers.reportingTenants, BATCHES)
  tenants(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.projection.projectTenants(sequenced<TenantEvent>(deliveries, TENANT_EVENTS));
  }
}
