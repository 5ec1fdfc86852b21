import type { AuditItem, AuditQueryReply } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import type { AuditRow } from '../adapters/audit.repository.js';
import { keysetCursors } from './keyset-cursor.js';

/** A point in the audit order (occurred_at DESC, event_id DESC): rows strictly after it. */
export interface AuditPosition {
  occurredAt: string;
  eventId: string;
}

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

/** The query kind audit cursors are bound to (with the tenant): no other report takes them. */
export const AUDIT_CURSOR_KIND = 'reports.audit';

/** The cursors of one tenant's audit trail (keyset-cursor.ts), positioned by event id. */
export function auditCursors(keyring: Keyring, tenantId: string) {
  const cursors = keysetCursors(keyring, tenantId, AUDIT_CURSOR_KIND, (id) => UUID.test(id));
  return {
    encode: (position: AuditPosition): string => cursors.encode({ occurredAt: position.occurredAt, id: position.eventId }),
    decode: (cursor: string): AuditPosition => {
      const { occurredAt, id } = cursors.decode(cursor);
      return { occurredAt, eventId: id };
    },
  };
}
export type AuditCursors = ReturnType<typeof auditCursors>;

/** One page from `limit + 1` rows: the extra row only tells that more may follow. */
export function toAuditPage(rows: readonly AuditRow[], limit: number, cursors: Pick<AuditCursors, 'encode'>): AuditQueryReply {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const reply: AuditQueryReply = { items: page.map(toAuditItem) };
  if (rows.length > limit && last) reply.nextCursor = cursors.encode({ occurredAt: last.position, eventId: last.eventId });
  return reply;
}
