import type { EventOf } from '@mfa/contracts';
import { eventIdOf } from '@mfa/messaging';

/**
 * The id of the outcome event of one SMS request, derived from the request's event id: a
 * redelivered request that is processed again publishes an outcome with the same id, which
 * JetStream drops as a duplicate (Nats-Msg-Id) within the stream's duplicate window. Version 4
 * bits, as outcome ids have always been written.
 */
export function outcomeEventId(sourceEventId: string): string {
  return eventIdOf(`${sourceEventId}:sms-outcome`, 4);
}

/** The request an outcome answers: a challenge's start, or a resend of its code (challenge.resend). */
export type OutcomeCause = Pick<EventOf<'ChallengeStarted' | 'ChallengeResendRequested'>, 'id' | 'tenantId' | 'metadata'> & { data: { challengeId: string } };

/**
 * The envelope of a request's outcome (SmsSent, SmsDeliveryFailed, VoiceCallPlaced, VoiceCallFailed):
 * its derived id, the challenge as aggregate, caused by the request and in its correlation.
 * Called inside the processing span, so createEvent stamps the outcome with its trace context.
 */
export function outcomeEnvelope(source: OutcomeCause, now: Date) {
  return {
    id: outcomeEventId(source.id),
    tenantId: source.tenantId,
    aggregateId: source.data.challengeId,
    now,
    metadata: { causationId: source.id, ...(source.metadata.correlationId ? { correlationId: source.metadata.correlationId } : {}) },
  };
}
