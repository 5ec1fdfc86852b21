import type pg from 'pg';
import type { EventOf, Operator } from '@mfa/contracts';
import type { Sequenced } from '../domain/signin-projection.js';
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
  from?: string | undefined;
  to?: string | undefined;
  after?: { occurredAt: string; eventId: string } | undefined;
  limit: number;
}

const INSERT_AUDIT = `
INSERT INTO audit_log (event_id, tenant_id, occurred_at, client_id, operator, subject, user_id, outcome, event_seq)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::text[], $7::text[], $8::text[], $9::bigint[])
ON CONFLICT (event_id) DO NOTHING`;

/** The audit trail in Postgres: one insert per batch, keyset reads newest first. */
export class AuditRepository {
  constructor(private readonly pool: pg.Pool) {}

  async append(items: readonly Sequenced<EventOf<'AdminActionRecorded'>>[]): Promise<void> {
    if (items.length === 0) return;
    const columns: unknown[][] = [[], [], [], [], [], [], [], [], []];
    for (const { event, seq } of items) {
      const d = event.data;
      const row = [event.id, event.tenantId, event.occurredAt, d.clientId, d.operator ? JSON.stringify(d.operator) : null, d.subject, d.userId ?? null, d.outcome, seq];
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
    }>(this.pool, sql, params);
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
