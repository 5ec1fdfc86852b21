import { createHash } from 'node:crypto';

/**
 * The id of the outcome event of one SMS request, derived from the request's event id: a
 * redelivered request that is processed again publishes an outcome with the same id, which
 * JetStream drops as a duplicate (Nats-Msg-Id) within the stream's duplicate window. Formatted
 * as an RFC 9562 version-4 UUID (version and variant bits set) so envelope validation accepts it.
 */
export function outcomeEventId(sourceEventId: string): string {
  const bytes = createHash('sha256').update(`${sourceEventId}:sms-outcome`).digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
