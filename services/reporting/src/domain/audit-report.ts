import { invalidRequest, type AuditItem, type AuditQueryReply } from '@mfa/contracts';
import type { AuditRow } from '../adapters/audit.repository.js';

/** A point in the audit order (occurred_at DESC, event_id DESC): rows strictly after it. */
export interface AuditPosition {
  occurredAt: string;
  eventId: string;
}

const MICROSECOND_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function toAuditItem(row: AuditRow): AuditItem {
  return {
    occurredAt: row.occurredAt.toISOString(),
    clientId: row.clientId,
    ...(row.operator ? { operator: row.operator } : {}),
    subject: row.subject,
    ...(row.userId !== null ? { userId: row.userId } : {}),
    outcome: row.outcome,
  };
}

export function encodeAuditCursor(position: AuditPosition): string {
  return Buffer.from(JSON.stringify([position.occurredAt, position.eventId]), 'utf8').toString('base64url');
}

export function decodeAuditCursor(cursor: string): AuditPosition {
  const bad = () => invalidRequest('cursor: not a cursor this report issued');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(value) || value.length !== 2) throw bad();
  const [occurredAt, eventId] = value as unknown[];
  if (typeof occurredAt !== 'string' || !MICROSECOND_UTC.test(occurredAt)) throw bad();
  if (typeof eventId !== 'string' || !UUID.test(eventId)) throw bad();
  return { occurredAt, eventId };
}

/** One page from `limit + 1` rows: the extra row only tells that more may follow. */
export function toAuditPage(rows: readonly AuditRow[], limit: number): AuditQueryReply {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const reply: AuditQueryReply = { items: page.map(toAuditItem) };
  if (rows.length > limit && last) reply.nextCursor = encodeAuditCursor({ occurredAt: last.position, eventId: last.eventId });
  return reply;
}
