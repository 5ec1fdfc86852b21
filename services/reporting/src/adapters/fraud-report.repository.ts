import type pg from 'pg';
import { inTransaction } from './database.js';
import type { AlertRow, BlockRow, FraudRows, NotificationRow } from '../domain/fraud-projection.js';
import { erasureOf, PSEUDONYMIZE_BLOCK_ENDS } from './erasures.repository.js';
import { ofCurrentTenant, readReport, sinceIncarnation } from './signins.repository.js';

/** The user's pseudonyms (knownPseudonyms): a row keeps one instead of the user id when the user was erased by then (see ErasuresRepository). */
type Pseudonymizer = (tenantId: string, userId: string) => string;

const INSERT_ALERTS = `
INSERT INTO fraud_alerts (alert_id, tenant_id, occurred_at, user_id, source, challenge_id, client_ip, application, comment,
                          challenge_denied, blocked, blocked_until, reported_by, event_seq)
SELECT i.alert_id, i.tenant_id, i.occurred_at, COALESCE(e.pseudonym, i.user_id), i.source, i.challenge_id, i.client_ip, i.application,
       CASE WHEN e.pseudonym IS NULL THEN i.comment END, i.challenge_denied, i.blocked, i.blocked_until, i.reported_by, i.event_seq
  FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
              $10::boolean[], $11::boolean[], $12::timestamptz[], $13::text[], $14::bigint[], $15::text[])
    AS i(alert_id, tenant_id, occurred_at, user_id, source, challenge_id, client_ip, application, comment,
         challenge_denied, blocked, blocked_until, reported_by, event_seq, pseudonym)
  ${erasureOf('i', 'i.occurred_at <= e.erased_at')}
 WHERE ${ofCurrentTenant('i', 'occurred_at')}
ON CONFLICT (alert_id) DO NOTHING`;

const INSERT_NOTIFICATIONS = `
INSERT INTO fraud_notifications (event_id, tenant_id, alert_id, recipient, sent, detail, attempts, occurred_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::boolean[], $6::text[], $7::integer[], $8::timestamptz[])
    AS i(event_id, tenant_id, alert_id, recipient, sent, detail, attempts, occurred_at)
 WHERE ${ofCurrentTenant('i', 'occurred_at')}
ON CONFLICT (event_id) DO NOTHING`;

const INSERT_BLOCKS = `
INSERT INTO block_history (event_id, tenant_id, occurred_at, action, user_id, ip, reason, source, actor, until, dry_run, event_seq)
SELECT i.event_id, i.tenant_id, i.occurred_at, i.action, COALESCE(e.pseudonym, i.user_id), i.ip,
       CASE WHEN e.pseudonym IS NULL THEN i.reason END, i.source, i.actor, i.until, i.dry_run, i.event_seq
  FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[],
              $10::timestamptz[], $11::boolean[], $12::bigint[], $13::text[])
    AS i(event_id, tenant_id, occurred_at, action, user_id, ip, reason, source, actor, until, dry_run, event_seq, pseudonym)
  ${erasureOf('i', 'i.occurred_at <= e.erased_at')}
 WHERE ${ofCurrentTenant('i', 'occurred_at')}
ON CONFLICT (event_id) DO NOTHING`;

/**
 * Block rows of one user projected by two instances at once (the block by one, its unblock by the
 * other) would each miss the other's row in PSEUDONYMIZE_BLOCK_ENDS: a batch holds a transaction
 * lock per user (the two-key form, apart from node-pg-migrate's one-key lock), taken in one order
 * so two batches never wait for each other in a cycle.
 */
const USER_LOCKS = 0x6d666162; // 'mfab': the first key, the class of these locks
const LOCK_USERS = `
SELECT pg_advisory_xact_lock(${USER_LOCKS}, k)
  FROM (SELECT DISTINCT hashtext(t || ' ' || u) AS k FROM unnest($1::text[], $2::text[]) AS x(t, u) ORDER BY k) s`;

const columns = <R, K extends keyof R>(rows: readonly R[], keys: readonly K[]): unknown[][] => keys.map((k) => rows.map((r) => r[k]));

/** occurred_at with the store's full (microsecond) precision, for the cursor. */
const POSITION = `to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

export interface AlertFilter {
  tenantId: string;
  userId?: string | undefined;
  source?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  after?: { occurredAt: string; id: string } | undefined;
  limit: number;
}

export interface BlockFilter {
  tenantId: string;
  userId?: string | undefined;
  ip?: string | undefined;
  action?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  after?: { occurredAt: string; id: string } | undefined;
  limit: number;
}

/** An alert as read, with the reported sign-in's personal data still sealed, and its e-mails counted. */
export interface StoredAlert extends Omit<AlertRow, 'tenantId' | 'occurredAt' | 'seq'> {
  occurredAt: Date;
  position: string;
  displayName: string | null;
  email: string | null;
  phoneNumber: string | null;
  /** The reported sign-in row's deciding app (signins.device_id). */
  deviceId: string | null;
  pii: { sealed: string; gen: number } | null;
  mailsSent: number;
  mailsFailed: number;
}

export interface StoredBlock extends Omit<BlockRow, 'tenantId' | 'occurredAt' | 'seq'> {
  occurredAt: Date;
  position: string;
}

/** A keyset WHERE clause builder: tenant first, then each filter given, then the position. */
function where(filter: { tenantId: string; from?: string | undefined; to?: string | undefined; after?: { occurredAt: string; id: string } | undefined }, prefix: string, idColumn: string, idType: string) {
  const params: unknown[] = [filter.tenantId];
  const param = (value: unknown) => `$${params.push(value)}`;
  // Not a former tenant's rows under the same id (incarnationStart).
  const clauses = [`${prefix}tenant_id = $1`, sinceIncarnation(`${prefix}occurred_at`)];
  if (filter.from !== undefined) clauses.push(`${prefix}occurred_at >= ${param(filter.from)}::timestamptz`);
  if (filter.to !== undefined) clauses.push(`${prefix}occurred_at < ${param(filter.to)}::timestamptz`);
  if (filter.after !== undefined) {
    clauses.push(`(${prefix}occurred_at, ${prefix}${idColumn}) < (${param(filter.after.occurredAt)}::timestamptz, ${param(filter.after.id)}::${idType})`);
  }
  return { params, param, clauses };
}

/** The fraud report and the blocked-user history in Postgres: one insert per table per batch, keyset reads newest first. */
export class FraudReportRepository {
  constructor(
    private readonly pool: pg.Pool,
    /** Report queries: DATABASE_READ_URL's replica when set, else the primary. */
    private readonly readPool: pg.Pool = pool,
  ) {}

  async apply(rows: FraudRows, pseudonymOf: Pseudonymizer): Promise<void> {
    const { alerts, notifications, blocks } = rows;
    if (alerts.length > 0) {
      const cols = columns(alerts, [
        'alertId', 'tenantId', 'occurredAt', 'userId', 'source', 'challengeId', 'clientIp', 'application', 'comment',
        'challengeDenied', 'blocked', 'blockedUntil', 'reportedBy', 'seq',
      ] as const);
      cols.push(alerts.map((a) => pseudonymOf(a.tenantId, a.userId)));
      await this.pool.query(INSERT_ALERTS, cols);
    }
    if (notifications.length > 0) {
      await this.pool.query(
        INSERT_NOTIFICATIONS,
        columns<NotificationRow, keyof NotificationRow>(notifications, ['eventId', 'tenantId', 'alertId', 'recipient', 'sent', 'detail', 'attempts', 'occurredAt']),
      );
    }
    if (blocks.length > 0) {
      const cols = columns(blocks, ['eventId', 'tenantId', 'occurredAt', 'action', 'userId', 'ip', 'reason', 'source', 'actor', 'until', 'dryRun', 'seq'] as const);
      cols[8] = blocks.map((b) => (b.actor ? JSON.stringify(b.actor) : null));
      cols.push(blocks.map((b) => (b.userId === null ? null : pseudonymOf(b.tenantId, b.userId))));
      const users = blocks.flatMap((b) => (b.userId === null ? [] : [{ tenantId: b.tenantId, userId: b.userId, pseudonym: pseudonymOf(b.tenantId, b.userId) }]));
      if (users.length === 0) await this.pool.query(INSERT_BLOCKS, cols);
      else await this.applyUserBlocks(cols, users);
    }
  }

  /** Rows naming users: inserted, then the ends of erased users' blocks pseudonymized, in one transaction. */
  private async applyUserBlocks(cols: unknown[][], users: { tenantId: string; userId: string; pseudonym: string }[]): Promise<void> {
    const tenants = users.map((u) => u.tenantId);
    const ids = users.map((u) => u.userId);
    await inTransaction(this.pool, async (client) => {
      await client.query(LOCK_USERS, [tenants, ids]);
      await client.query(INSERT_BLOCKS, cols);
      await client.query(PSEUDONYMIZE_BLOCK_ENDS, [tenants, ids, users.map((u) => u.pseudonym)]);
    });
  }

  async findAlerts(filter: AlertFilter): Promise<StoredAlert[]> {
    const { params, param, clauses } = where(filter, 'a.', 'alert_id', 'text');
    if (filter.userId !== undefined) clauses.push(`a.user_id = ${param(filter.userId)}`);
    if (filter.source !== undefined) clauses.push(`a.source = ${param(filter.source)}`);
    const sql = `
      SELECT a.alert_id, a.occurred_at, ${POSITION.replace('occurred_at', 'a.occurred_at')} AS position, a.user_id, a.source, a.challenge_id,
             a.client_ip, a.application, a.comment, a.challenge_denied, a.blocked, a.blocked_until, a.reported_by,
             s.display_name, s.email, s.phone_number, s.pii, s.user_gen, s.device_id,
             (SELECT count(*) FROM fraud_notifications n WHERE n.alert_id = a.alert_id AND n.sent)::int AS mails_sent,
             (SELECT count(*) FROM fraud_notifications n WHERE n.alert_id = a.alert_id AND NOT n.sent)::int AS mails_failed
        FROM fraud_alerts a
        LEFT JOIN signins s ON s.tenant_id = a.tenant_id AND s.challenge_id = a.challenge_id AND s.user_id = a.user_id
       WHERE ${clauses.join(' AND ')}
       ORDER BY a.occurred_at DESC, a.alert_id DESC
       LIMIT ${param(filter.limit)}`;
    const { rows } = await readReport<Record<string, unknown>>(this.readPool, sql, params);
    return rows.map((r) => ({
      alertId: r.alert_id as string,
      occurredAt: r.occurred_at as Date,
      position: r.position as string,
      userId: r.user_id as string,
      source: r.source as StoredAlert['source'],
      challengeId: (r.challenge_id as string | null) ?? null,
      clientIp: (r.client_ip as string | null) ?? null,
      application: (r.application as string | null) ?? null,
      comment: (r.comment as string | null) ?? null,
      challengeDenied: r.challenge_denied as boolean,
      blocked: r.blocked as boolean,
      blockedUntil: r.blocked_until ? (r.blocked_until as Date).toISOString() : null,
      reportedBy: (r.reported_by as string | null) ?? null,
      displayName: (r.display_name as string | null) ?? null,
      email: (r.email as string | null) ?? null,
      phoneNumber: (r.phone_number as string | null) ?? null,
      deviceId: (r.device_id as string | null) ?? null,
      pii: r.pii === null || r.pii === undefined || r.user_gen === null ? null : { sealed: r.pii as string, gen: r.user_gen as number },
      mailsSent: r.mails_sent as number,
      mailsFailed: r.mails_failed as number,
    }));
  }

  async findBlocks(filter: BlockFilter): Promise<StoredBlock[]> {
    const { params, param, clauses } = where(filter, '', 'event_id', 'uuid');
    if (filter.userId !== undefined) clauses.push(`user_id = ${param(filter.userId)}`);
    if (filter.ip !== undefined) clauses.push(`ip = ${param(filter.ip)}`);
    if (filter.action !== undefined) clauses.push(`action = ${param(filter.action)}`);
    const sql = `
      SELECT event_id, occurred_at, ${POSITION} AS position, action, user_id, ip, reason, source, actor, until, dry_run
        FROM block_history
       WHERE ${clauses.join(' AND ')}
       ORDER BY occurred_at DESC, event_id DESC
       LIMIT ${param(filter.limit)}`;
    const { rows } = await readReport<Record<string, unknown>>(this.readPool, sql, params);
    return rows.map((r) => ({
      eventId: r.event_id as string,
      occurredAt: r.occurred_at as Date,
      position: r.position as string,
      action: r.action as StoredBlock['action'],
      userId: (r.user_id as string | null) ?? null,
      ip: (r.ip as string | null) ?? null,
      reason: (r.reason as string | null) ?? null,
      source: (r.source as StoredBlock['source']) ?? null,
      actor: (r.actor as StoredBlock['actor']) ?? null,
      until: r.until ? (r.until as Date).toISOString() : null,
      dryRun: r.dry_run as boolean,
    }));
  }
}
