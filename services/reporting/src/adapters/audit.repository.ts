import type pg from 'pg';
import type { EventOf, Operator } from '@mfa/contracts';
import type { Sequenced } from '../domain/signin-projection.js';
import { erasureOf } from './erasures.repository.js';
import { readReport } from './signins.repository.js';

export interface AuditRow {
  eventId: string;
  occurredAt: Date;
  /** occurred_at with the store's full (microsecond) precision, for the cursor. */
  position: string;
  clientId: string;
  operator: Operator | null;
  subject: string;
  userId: string | null;
  outcome: string;
}

export interface AuditFilter {
  tenantId: string;
  clientId?: string | undefined;
  userId?: string | undefined;
  /** The operator's `sub`, as recorded in the operator column. */
  operator?: string | undefined;
  subject?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  after?: { occurredAt: string; eventId: string } | undefined;
  limit: number;
}

// The target user of an action taken before that user was erased is recorded by pseudonym.
const INSERT_AUDIT = `
INSERT INTO audit_log (event_id, tenant_id, occurred_at, client_id, operator, subject, user_id, outcome, event_seq)
SELECT i.event_id, i.tenant_id, i.occurred_at, i.client_id, i.operator, i.subject, COALESCE(e.pseudonym, i.user_id), i.outcome, i.event_seq
  FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[])
    AS i(event_id, tenant_id, occurred_at, client_id, operator, subject, user_id, outcome, event_seq, pseudonym)
  ${erasureOf('i', 'i.occurred_at <= e.erased_at')}
ON CONFLICT (event_id) DO NOTHING`;

/**
 * Postgres text and jsonb hold no NUL: one in a field of an event (older services recorded a refused
 * request's user id as sent) would fail the whole batch, again on every redelivery, and the event
 * would end a dead letter. It is stored as U+FFFD.
 */
const text = (value: string): string => (value.includes('\u0000') ? value.replaceAll('\u0000', '\uFFFD') : value);

/** The audit trail in Postgres: one insert per batch, keyset reads newest first. */
export class AuditRepository {
  constructor(
    private readonly pool: pg.Pool,
    /** Report queries: DATABASE_READ_URL's replica when set, else the primary. */
    private readonly readPool: pg.Pool = pool,
  ) {}

  /** `pseudonymOf`: the user's pseudonyms (knownPseudonyms), one of which a target user id becomes once that user is erased (ErasuresRepository). */
  async append(items: readonly Sequenced<EventOf<'AdminActionRecorded'>>[], pseudonymOf: (tenantId: string, userId: string) => string): Promise<void> {
    if (items.length === 0) return;
    const columns: unknown[][] = [[], [], [], [], [], [], [], [], [], []];
    for (const { event, seq } of items) {
      const d = event.data;
      const pseudonym = d.userId === undefined ? null : pseudonymOf(event.tenantId, d.userId);
      const row = [event.id, event.tenantId, event.occurredAt, text(d.clientId), d.operator ? JSON.stringify(d.operator, (_, v: unknown) => (typeof v === 'string' ? text(v) : v)) : null, text(d.subject), d.userId === undefined ? null : text(d.userId), text(d.outcome), seq, pseudonym];
      row.forEach((value, i) => columns[i]!.push(value));
    }
    await this.pool.query(INSERT_AUDIT, columns);
  }

  async find(filter: AuditFilter): Promise<AuditRow[]> {
    const params: unknown[] = [filter.tenantId];
    const param = (value: unknown) => `$${params.push(value)}`;
    const where = ['tenant_id = $1'];
    if (filter.clientId !== undefined) where.push(`client_id = ${param(filter.clientId)}`);
    if (filter.userId !== undefined) where.push(`user_id = ${param(filter.userId)}`);
    // As written in the expression index audit_log_by_operator, so that the index serves it.
    if (filter.operator !== undefined) where.push(`operator ->> 'sub' = ${param(filter.operator)}`);
    if (filter.subject !== undefined) where.push(`subject = ${param(filter.subject)}`);
    if (filter.from !== undefined) where.push(`occurred_at >= ${param(filter.from)}::timestamptz`);
    if (filter.to !== undefined) where.push(`occurred_at < ${param(filter.to)}::timestamptz`);
    if (filter.after !== undefined) {
      where.push(`(occurred_at, event_id) < (${param(filter.after.occurredAt)}::timestamptz, ${param(filter.after.eventId)}::uuid)`);
    }
    const sql = `
      SELECT event_id, occurred_at,
             to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS position,
             client_id, operator, subject, user_id, outcome
        FROM audit_log
       WHERE ${where.join(' AND ')}
       ORDER BY occurred_at DESC, event_id DESC
       LIMIT ${param(filter.limit)}`;
    const { rows } = await readReport<{
      event_id: string;
      occurred_at: Date;
      position: string;
      client_id: string;
      operator: Operator | null;
      subject: string;
      user_id: string | null;
      outcome: string;
    }>(this.readPool, sql, params);
    return rows.map((r) => ({
      eventId: r.event_id,
      occurredAt: r.occurred_at,
      position: r.position,
      clientId: r.client_id,
      operator: r.operator,
      subject: r.subject,
      userId: r.user_id,
      outcome: r.outcome,
    }));
  }
}
