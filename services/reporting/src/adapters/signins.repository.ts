import type pg from 'pg';
import { ContractError, invalidRequest, unavailable, type SigninResult, type SigninVia } from '@mfa/contracts';
import { isTransientDependencyError } from '@mfa/messaging';
import type { DeliveryPatch, SigninPatch, TenantPatch } from '../domain/signin-projection.js';
import type { ReportPosition, SigninRow } from '../domain/signin-report.js';
import { erasureOf, KEPT_PSEUDONYM } from './erasures.repository.js';

/**
 * When the tenant's current incarnation began, as SQL over its `tenants` row `t`: once a deletion
 * (TenantDeleted, or the deletion TenantErased names) is known, the latest of its creation,
 * deletion and erasure times; NULL while it was never deleted. A row of the tenant from before it
 * is a former tenant's: written before the deletion was known, it goes with the erasure
 * (applyTenants); written after, it is not written at all (ofCurrentTenant); and no report query
 * reads it (sinceIncarnation), whatever order the consumers project the streams in.
 */
export const incarnationStart = (t: string): string =>
  `CASE WHEN ${t}.deleted_at IS NOT NULL OR ${t}.erased_at IS NOT NULL THEN GREATEST(${t}.deleted_at, ${t}.erased_at, ${t}.created_at) END`;

/**
 * The condition an input row (`input`, whose `tenant_id` and `time` columns are the row's) of a
 * projection's insert meets unless it is a former tenant's (incarnationStart): a late event of a
 * deleted tenant from before its deletion (the outcome of a challenge pending at the deletion, a
 * lagging consumer, a redelivery, a full replay after TRUNCATE) is then never stored. One from
 * after the erasure may be a new tenant's whose creation is not projected yet: stored, never
 * reported while the tenant is unknown, and deleted by the creation if from before it. Part of the
 * batch's one statement (an anti-join with the tenants, by their key): no round trip of its own.
 */
export const ofCurrentTenant = (input: string, time: string): string =>
  `NOT EXISTS (SELECT 1 FROM tenants t WHERE t.tenant_id = ${input}.tenant_id AND ${input}.${time} < ${incarnationStart('t')})`;

/**
 * A report query's condition on `column` (the row's time, TENANT_REPORT_TABLES) for the tenant
 * `$1`: only rows of its current incarnation (incarnationStart), computed once per query.
 */
export const sinceIncarnation = (column: string): string =>
  `${column} >= COALESCE((SELECT ${incarnationStart('t')} FROM tenants t WHERE t.tenant_id = $1), '-infinity'::timestamptz)`;

interface SigninFilter {
  tenantId: string;
  userId?: string | undefined;
  challengeId?: string | undefined;
  /** Inclusive. */
  from?: string | undefined;
  /** Exclusive. */
  to?: string | undefined;
  result?: SigninResult | undefined;
  via?: SigninVia | undefined;
  after?: ReportPosition | undefined;
  /**
   * Pending challenges that expired before this are reported; later ones are still in progress.
   * Rows without their start yet are reported once first written before this.
   */
  now: Date;
  limit: number;
}

// Columns a start event owns: taken from the incoming row only when it carries the earliest context.
const CONTEXT_COLUMNS = [
  'occurred_at',
  'user_id',
  'display_name',
  'email',
  'phone_number',
  'device_token',
  'auth_method',
  'server_name',
  'server_ip',
  'via',
  'client_ip',
  'application',
  'request_id',
  'expires_at',
  'pii',
  'user_gen',
  'context_seq',
] as const;
// Columns an outcome owns: the first outcome (lowest sequence) wins, later ones change nothing.
const OUTCOME_COLUMNS = ['result', 'result_detail', 'completed_at', 'result_seq', 'device_id'] as const;

const TAKE_CONTEXT = 'excluded.context_seq < COALESCE(signins.context_seq, excluded.context_seq + 1)';
const TAKE_OUTCOME = 'excluded.result_seq < COALESCE(signins.result_seq, excluded.result_seq + 1)';
const keepOrTake = (column: string, condition: string, table = 'signins') =>
  `${column} = CASE WHEN ${condition} THEN excluded.${column} ELSE ${table}.${column} END`;

/*
 * One statement per batch, so each batch is applied in one transaction. A single INSERT … SELECT
 * FROM unnest(arrays) carries the whole batch (one round trip however many events); the patches
 * hold at most one row per key because ON CONFLICT DO UPDATE may touch a row only once.
 *
 * Rows are written, and so locked, in key order: two instances writing batches that share rows
 * then wait for each other instead of deadlocking (40P01, which fails one of them for a retry).
 * The order is the statement's own, not the arrays': a hash join may reorder the rows it returns.
 *
 * A row of an erased user (erased_users, matched by pseudonym under any master key of the keyring,
 * and data key generation: erasureOf) is written with the pseudonym and no personal data, whatever
 * the batch carries: the erasure holds a lock that makes this check and its own update of older
 * rows leave no gap (ErasuresRepository).
 */
const upsertSignins = (erasure: string) => `
INSERT INTO signins (
  tenant_id, challenge_id, occurred_at, user_id, display_name, email, phone_number, device_token,
  auth_method, server_name, server_ip, client_ip, application, request_id, expires_at, context_seq,
  result, result_detail, completed_at, result_seq, failed_attempts, last_event_seq, pii, user_gen, resends, via, device_id)
SELECT i.tenant_id, i.challenge_id, i.occurred_at, COALESCE(e.pseudonym, i.user_id),
       CASE WHEN e.pseudonym IS NULL THEN i.display_name END,
       CASE WHEN e.pseudonym IS NULL THEN i.email END,
       CASE WHEN e.pseudonym IS NULL THEN i.phone_number END,
       i.device_token, i.auth_method, i.server_name, i.server_ip, i.client_ip, i.application, i.request_id,
       i.expires_at, i.context_seq, i.result, i.result_detail, i.completed_at, i.result_seq, i.failed_attempts,
       i.last_event_seq, CASE WHEN e.pseudonym IS NULL THEN i.pii END, i.user_gen, i.resends, i.via, i.device_id
  FROM unnest(
    $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::bigint[],
    $17::text[], $18::text[], $19::timestamptz[], $20::bigint[], $21::integer[], $22::bigint[], $23::text[], $24::integer[],
    $25::text[], $26::integer[], $27::text[], $28::text[])
    AS i(tenant_id, challenge_id, occurred_at, user_id, display_name, email, phone_number, device_token,
         auth_method, server_name, server_ip, client_ip, application, request_id, expires_at, context_seq,
         result, result_detail, completed_at, result_seq, failed_attempts, last_event_seq, pii, user_gen, pseudonym, resends, via, device_id)
  ${erasure}
 WHERE ${ofCurrentTenant('i', 'occurred_at')}
 ORDER BY i.tenant_id, i.challenge_id
ON CONFLICT (tenant_id, challenge_id) DO UPDATE SET
  ${CONTEXT_COLUMNS.map((c) => keepOrTake(c, TAKE_CONTEXT)).join(',\n  ')},
  ${OUTCOME_COLUMNS.map((c) => keepOrTake(c, TAKE_OUTCOME)).join(',\n  ')},
  failed_attempts = GREATEST(signins.failed_attempts, excluded.failed_attempts),
  resends = GREATEST(signins.resends, excluded.resends),
  last_event_seq = GREATEST(signins.last_event_seq, excluded.last_event_seq)`;

const ERASED_ROW = '(i.user_gen IS NULL OR i.user_gen <= e.gen)';
const UPSERT_SIGNINS = upsertSignins(erasureOf('i', ERASED_ROW));
/**
 * Without a previous master key (the usual case: MFA_PREVIOUS_ENCRYPTION_KEYS empty) each row has
 * one pseudonym, which matches at most one erasure by primary key: the plain join of before, which
 * the planner may hash (measured with ten erasures: 0.15 ms per batch of 500, against 0.8 ms for
 * erasureOf's probe per row). The subquery only renames (the pseudonym kept, KEPT_PSEUDONYM, is the
 * alias of a record made under a key that came after the user's first erasure): the planner pulls
 * it up into the same join.
 */
const UPSERT_SIGNINS_ONE_KEY = upsertSignins(`LEFT JOIN (SELECT e.tenant_id, e.pseudonym AS recorded_as, ${KEPT_PSEUDONYM} AS pseudonym, e.gen FROM erased_users e) e
    ON e.tenant_id = i.tenant_id AND e.recorded_as = i.pseudonym AND ${ERASED_ROW}`);

/*
 * Which of two outcomes of a challenge's delivery stands, whichever was projected first: the later
 * by stream sequence, except that a receipt and a `sent` of the same message keep the receipt
 * (receiptOverrides, domain/signin-projection.ts). A receipt can be recorded before the SmsSent of
 * its own message (an SMSC may answer within milliseconds of accepting it), so a receipt replaces a
 * stored `sent` of its message even from a lower sequence (two instances, a batch retried event by
 * event). Nothing else of the challenge is recorded in those milliseconds, so the outcomes rank the
 * same way in any order, and every column comes from the one that stands.
 */
const RECEIPT_OF_SENT = `excluded.status IN ('delivered', 'undelivered') AND deliveries.status = 'sent'
      AND deliveries.message_id IS NOT DISTINCT FROM excluded.message_id`;
const SENT_OF_RECEIPT = `excluded.status = 'sent' AND deliveries.status IN ('delivered', 'undelivered')
      AND deliveries.message_id IS NOT DISTINCT FROM excluded.message_id`;
const UPSERT_DELIVERIES = `
INSERT INTO deliveries (tenant_id, challenge_id, status, provider, message_id, attempts, occurred_at, event_seq, error)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::timestamptz[], $8::bigint[], $9::text[])
    AS i(tenant_id, challenge_id, status, provider, message_id, attempts, occurred_at, event_seq, error)
 WHERE ${ofCurrentTenant('i', 'occurred_at')}
 ORDER BY 1, 2 -- tenant, challenge: see UPSERT_SIGNINS
ON CONFLICT (tenant_id, challenge_id) DO UPDATE SET
  status = excluded.status,
  provider = excluded.provider,
  message_id = excluded.message_id,
  attempts = excluded.attempts,
  error = excluded.error,
  occurred_at = excluded.occurred_at,
  event_seq = excluded.event_seq
WHERE (${RECEIPT_OF_SENT})
   OR (deliveries.event_seq < excluded.event_seq AND NOT (${SENT_OF_RECEIPT}))`;

/*
 * The tenants of a batch, in key order (see UPSERT_SIGNINS). The state is taken from a later event
 * only: later by time, then by stream sequence (after a restore of the event log, new events reuse
 * sequences the report has seen). The other times are merged whatever the order, each the latest:
 * so the stored row is the same however the events were batched, re-delivered or replayed. Every
 * row is updated and returned, with the time before which the tenant's report rows are a former
 * tenant's (its latest erasure, or once created again that creation): NULL while it was never erased.
 */
const LATER_STATE = `(excluded.state_at, excluded.state_seq) > (COALESCE(tenants.state_at, '-infinity'), COALESCE(tenants.state_seq, 0))`;
const UPSERT_TENANTS = `
INSERT INTO tenants (tenant_id, state, state_at, state_seq, created_at, deleted_at, erased_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[])
 ORDER BY 1
ON CONFLICT (tenant_id) DO UPDATE SET
  ${['state', 'state_at', 'state_seq'].map((c) => keepOrTake(c, LATER_STATE, 'tenants')).join(',\n  ')},
  created_at = GREATEST(tenants.created_at, excluded.created_at),
  deleted_at = GREATEST(tenants.deleted_at, excluded.deleted_at),
  erased_at = GREATEST(tenants.erased_at, excluded.erased_at)
RETURNING tenant_id, CASE WHEN erased_at IS NOT NULL THEN GREATEST(erased_at, created_at) END AS former_before`;

/** The longest an erasure waits for the report writes begun before it (awaitWritesBegunBefore): past the statement timeout. */
const WRITES_BEGUN_WAIT_MS = 35_000;

/**
 * The report rows of a former tenant: those of the tenant from before the time the tenant's row
 * gives (UPSERT_TENANTS), in each of these tables. Not the erased users (erased_users: reapplying
 * erasures after a restore of the event log needs them) nor the audit trail (audit_log, kept for
 * good). By time, not by the tenant's state: a row of the tenant created again is never older than
 * its creation, whatever order the consumers project the streams in. A late row of the former tenant
 * (the outcome of a challenge pending at the deletion, projected after the erasure) is not written
 * once the deletion is known (ofCurrentTenant, in each projection's insert into these tables).
 */
export const TENANT_REPORT_TABLES = [
  ['signins', 'occurred_at'],
  ['deliveries', 'occurred_at'],
  ['fraud_alerts', 'occurred_at'],
  ['fraud_notifications', 'occurred_at'],
  ['block_history', 'occurred_at'],
  ['user_lifetimes', 'registered_at'],
  ['user_erasures', 'erased_at'],
] as const;
/**
 * Rows deleted per statement: a large tenant's sign-ins are deleted in many short statements, each
 * well within the pool's statement timeout and committed on its own, so an erasure interrupted (a
 * restart, the event delivered again) goes on where it stopped.
 */
export const FORMER_ROWS_PER_STATEMENT = 5_000;
const deleteFormerRows = (table: string, time: string) => `
DELETE FROM ${table} WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM ${table} WHERE tenant_id = $1 AND ${time} < $2 LIMIT ${FORMER_ROWS_PER_STATEMENT}))`;
const DELETE_FORMER_ROWS = TENANT_REPORT_TABLES.map(([table, time]) => [table, deleteFormerRows(table, time)] as const);

/**
 * The projection's statements are named, so each connection parses and plans them once instead of
 * for every batch: a fifth less of Postgres's CPU per sign-in batch (docs/performance.md, issue 18,
 * sixth part). A migration that alters the tables makes Postgres plan them again by itself.
 */
const named = (name: string, text: string, values: unknown[]): pg.QueryConfig => ({ name, text, values });

/** The batch as one array per column, in the statement's column order: the arrays unnest() takes. */
function columnsOf<P, K extends keyof P>(patches: readonly P[], columns: readonly K[]): P[K][][] {
  return columns.map((column) => patches.map((patch) => patch[column]));
}

interface SigninRecord {
  challenge_id: string;
  occurred_at: Date;
  position: string;
  user_id: string;
  display_name: string | null;
  email: string | null;
  phone_number: string | null;
  pii: string | null;
  user_gen: number | null;
  device_token: string | null;
  auth_method: string | null;
  server_name: string | null;
  server_ip: string | null;
  via: SigninVia;
  client_ip: string | null;
  application: string | null;
  result: SigninResult | null;
  result_detail: string | null;
  delivery_status: 'sent' | 'failed' | 'delivered' | 'undelivered' | null;
  delivery_provider: string | null;
  delivery_error: string | null;
  resends: number;
  device_id: string | null;
}

/** The sign-in report in Postgres: projection writes and report reads. */
export class SigninsRepository {
  constructor(
    private readonly pool: pg.Pool,
    /** Report queries: DATABASE_READ_URL's replica when set, else the primary. */
    private readonly readPool: pg.Pool = pool,
  ) {}

  /** `pseudonym`: the user's pseudonyms (knownPseudonyms), one of which the user id becomes if the user is (or gets) erased, see ErasuresRepository. */
  async applySignins(patches: ReadonlyArray<SigninPatch & { pseudonym: string }>): Promise<void> {
    if (patches.length === 0) return;
    const oneKey = patches.every((p) => !p.pseudonym.includes(','));
    await this.pool.query(
      named(oneKey ? 'report-upsert-signins-one-key' : 'report-upsert-signins', oneKey ? UPSERT_SIGNINS_ONE_KEY : UPSERT_SIGNINS, columnsOf(patches, [
        'tenantId',
        'challengeId',
        'occurredAt',
        'userId',
        'displayName',
        'email',
        'phoneNumber',
        'deviceToken',
        'authMethod',
        'serverName',
        'serverIp',
        'clientIp',
        'application',
        'requestId',
        'expiresAt',
        'contextSeq',
        'result',
        'resultDetail',
        'completedAt',
        'resultSeq',
        'failedAttempts',
        'lastEventSeq',
        'pii',
        'userGen',
        'pseudonym',
        'resends',
        'via',
        'deviceId',
      ])),
    );
  }

  async applyDeliveries(patches: readonly DeliveryPatch[]): Promise<void> {
    if (patches.length === 0) return;
    await this.pool.query(
      named('report-upsert-deliveries', UPSERT_DELIVERIES, columnsOf(patches, ['tenantId', 'challengeId', 'status', 'provider', 'messageId', 'attempts', 'occurredAt', 'seq', 'error'])),
    );
  }

  /**
   * The tenants' lifecycle; then the report rows of the former tenant under an id erased
   * (TenantErased), or erased and created again, are deleted (TENANT_REPORT_TABLES). The state is
   * committed first: the tenant is unknown to the queries from then on, and an erasure interrupted
   * midway is completed when its event is delivered again (the same deletes, by the stored row).
   * Returns how many rows of each table were deleted.
   */
  async applyTenants(patches: readonly TenantPatch[]): Promise<Record<string, number>> {
    if (patches.length === 0) return {};
    const columns = columnsOf(patches, ['tenantId', 'state', 'stateAt', 'stateSeq', 'createdAt', 'deletedAt', 'erasedAt']);
    const { rows } = await this.pool.query<{ tenant_id: string; former_before: Date | null }>(named('report-upsert-tenants', UPSERT_TENANTS, columns));
    const deleted: Record<string, number> = {};
    if (rows.some((row) => row.former_before !== null)) await this.awaitWritesBegunBefore();
    for (const { tenant_id: tenantId, former_before: before } of rows) {
      if (before === null) continue;
      for (const [table, sql] of DELETE_FORMER_ROWS) {
        for (let count = -1; count !== 0; ) {
          count = (await this.pool.query(named(`report-delete-former-${table}`, sql, [tenantId, before]))).rowCount ?? 0;
          deleted[table] = (deleted[table] ?? 0) + count;
        }
      }
    }
    return deleted;
  }

  /**
   * Waits until every write into TENANT_REPORT_TABLES begun before the tenants' rows just committed
   * has ended, so that the deletes that follow see its rows. A projection's insert (ofCurrentTenant)
   * that read the tenants before that commit may still write a former tenant's rows: it holds its
   * table's ROW EXCLUSIVE lock from before it read anything, so the transactions holding one that
   * began before now are the ones to wait for (pg_locks, pg_stat_activity: the service's own role
   * sees its sessions). Polled, holding no lock: neither a VACUUM nor anyone's write waits on it.
   * Bounded by WRITES_BEGUN_WAIT_MS (a write outlives the statement timeout no longer). Only for a
   * batch that erased a tenant or created one again (or their re-delivery), or changed the settings
   * of a tenant created again.
   */
  private async awaitWritesBegunBefore(): Promise<void> {
    const tables = TENANT_REPORT_TABLES.map(([table]) => table);
    const { rows } = await this.pool.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    const since = rows[0]!.now;
    for (const until = Date.now() + WRITES_BEGUN_WAIT_MS; Date.now() < until; ) {
      const { rowCount } = await this.pool.query(
        `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted
            AND l.relation = ANY($1::text[]::regclass[]) AND a.xact_start < $2 AND l.pid <> pg_backend_pid()
          LIMIT 1`,
        [tables, since],
      );
      if (!rowCount) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Whether the tenant is known to the report: created, and not deleted since (as a tenant never created). */
  async tenantExists(tenantId: string): Promise<boolean> {
    const { rowCount } = await this.read("SELECT 1 FROM tenants WHERE tenant_id = $1 AND state = 'active'", [tenantId]);
    return (rowCount ?? 0) > 0;
  }

  /**
   * Reported rows in report order: completed challenges, and pending ones past their expiry
   * (reported as failures, so the result filter matches them as 'failure'); a row whose start is
   * not projected yet only after `now`. At most `limit` rows.
   */
  async findSignins(filter: SigninFilter): Promise<SigninRow[]> {
    const params: unknown[] = [filter.tenantId, filter.now];
    const param = (value: unknown) => `$${params.push(value)}`;
    const where = [
      's.tenant_id = $1',
      '(s.result IS NOT NULL OR s.expires_at < $2::timestamptz)',
      // A row only an outcome has written so far bears the outcome's time and none of the start's
      // context (via, server, client IP, application, personal data): left out until its start is
      // projected, which moves it to the start's time, so that no reader (a SIEM export keeping
      // each challenge id once) takes it for the sign-in; shown all the same once it was first
      // written before `now`, so that a start that never comes (dead-lettered) hides no sign-in.
      '(s.context_seq IS NOT NULL OR s.projected_at < $2::timestamptz)',
      // Not a former tenant's row under the same id (one stored while the tenants consumer lagged).
      sinceIncarnation('s.occurred_at'),
    ];
    if (filter.userId !== undefined) where.push(`s.user_id = ${param(filter.userId)}`);
    if (filter.challengeId !== undefined) where.push(`s.challenge_id = ${param(filter.challengeId)}`);
    if (filter.from !== undefined) where.push(`s.occurred_at >= ${param(filter.from)}::timestamptz`);
    if (filter.to !== undefined) where.push(`s.occurred_at < ${param(filter.to)}::timestamptz`);
    if (filter.result !== undefined) where.push(`COALESCE(s.result, 'failure') = ${param(filter.result)}`);
    if (filter.via !== undefined) where.push(`s.via = ${param(filter.via)}`);
    if (filter.after !== undefined) {
      where.push(
        `(s.occurred_at, s.challenge_id) < (${param(filter.after.occurredAt)}::timestamptz, ${param(filter.after.challengeId)}::text)`,
      );
    }
    const sql = `
      SELECT s.challenge_id, s.occurred_at,
             to_char(s.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS position,
             s.user_id, s.display_name, s.email, s.phone_number, s.pii, s.user_gen, s.device_token, s.auth_method,
             s.server_name, s.server_ip, s.via, s.client_ip, s.application, s.result, s.result_detail, s.resends, s.device_id,
             d.status AS delivery_status, d.provider AS delivery_provider, d.error AS delivery_error
        FROM signins s
        LEFT JOIN deliveries d ON d.tenant_id = s.tenant_id AND d.challenge_id = s.challenge_id
       WHERE ${where.join(' AND ')}
       ORDER BY s.occurred_at DESC, s.challenge_id DESC
       LIMIT ${param(filter.limit)}`;
    const { rows } = await this.read<SigninRecord>(sql, params);
    return rows.map((r) => ({
      challengeId: r.challenge_id,
      occurredAt: r.occurred_at,
      position: r.position,
      userId: r.user_id,
      displayName: r.display_name,
      email: r.email,
      phoneNumber: r.phone_number,
      pii: r.pii === null || r.user_gen === null ? null : { sealed: r.pii, gen: r.user_gen },
      deviceToken: r.device_token,
      authMethod: r.auth_method,
      serverName: r.server_name,
      serverIp: r.server_ip,
      via: r.via,
      clientIp: r.client_ip,
      application: r.application,
      result: r.result,
      resultDetail: r.result_detail,
      deliveryStatus: r.delivery_status,
      deliveryProvider: r.delivery_provider,
      deliveryError: r.delivery_error,
      resends: r.resends,
      deviceId: r.device_id,
    }));
  }

  private read<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    return readReport<R>(this.readPool, sql, params);
  }
}

/**
 * Report reads answer contract errors: bad values are the caller's; a lost database, or a query
 * stopped at the pool's statement timeout, is `unavailable`.
 */
export async function readReport<R extends pg.QueryResultRow>(pool: pg.Pool, sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
  try {
    return await pool.query<R>(sql, params);
  } catch (error) {
    throw toContractError(error);
  }
}

const QUERY_CANCELED = '57014';

function toContractError(error: unknown): unknown {
  if (error instanceof ContractError) return error;
  const code = String((error as { code?: unknown })?.code ?? '');
  // Class 22 (data exception): e.g. a date Postgres cannot represent, such as year 0000.
  if (code.startsWith('22')) return invalidRequest('a value is out of the range the report can search', error);
  // 57014 query_canceled: the statement timeout (createPool) stopped it, or an operator cancelled it.
  if (code === QUERY_CANCELED) return unavailable('the report query took too long and was stopped: narrow it (a shorter from–to range, a userId) or try again later', error);
  // Connection failures, server shutting down, pool exhausted: the one classifier every service uses.
  if (isTransientDependencyError(error)) return unavailable('the report store is unavailable', error);
  return error;
}
