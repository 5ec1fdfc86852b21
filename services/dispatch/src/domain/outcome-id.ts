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
