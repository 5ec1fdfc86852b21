import { invalidRequest, type AuditItem, type AuditQueryReply } from '@mfa/contracts';
import { openCursor, sealCursor, type Keyring } from '@mfa/crypto';
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

/** The query kind audit cursors are bound to (with the tenant): no other report takes them. */
export const AUDIT_CURSOR_KIND = 'reports.audit';

/**
 * The cursors of one tenant's audit trail: the position of the last row returned, sealed with
 * the keyring (HMAC, see @mfa/crypto cursor.ts). A cursor that this report did not issue for this
 * tenant, or whose content is not a position, is `invalid_request`.
 */
export function auditCursors(keyring: Keyring, tenantId: string) {
  const scope = { tenantId, kind: AUDIT_CURSOR_KIND };
  const bad = () => invalidRequest('cursor: not a cursor this report issued');
  return {
    encode: (position: AuditPosition): string => sealCursor(keyring, scope, [position.occurredAt, position.eventId]),
    decode: (cursor: string): AuditPosition => {
      let value: unknown;
      try {
        value = openCursor(keyring, scope, cursor);
      } catch {
        throw bad();
      }
      if (!Array.isArray(value) || value.length !== 2) throw bad();
      const [occurredAt, eventId] = value as unknown[];
      if (typeof occurredAt !== 'string' || !MICROSECOND_UTC.test(occurredAt)) throw bad();
      if (typeof eventId !== 'string' || !UUID.test(eventId)) throw bad();
      return { occurredAt, eventId };
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
