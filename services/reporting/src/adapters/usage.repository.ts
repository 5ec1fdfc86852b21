import type pg from 'pg';
import type { Granularity, UsageCounts } from '../domain/usage-report.js';
import { readReport } from './signins.repository.js';

// One row per registration; a replay inserts nothing new.
const INSERT_REGISTERED = `
INSERT INTO user_lifetimes (tenant_id, user_key, registered_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT DO NOTHING`;
// An erasure ends the registration it follows, stored under any of the user's keys (the current
// master key's hash, or a previous key's for a user registered before a rotation); applied again,
// it sets the same value.
const RECORD_ERASED = `
UPDATE user_lifetimes u SET erased_at = $3
 WHERE (u.tenant_id, u.user_key, u.registered_at) = (
   SELECT tenant_id, user_key, registered_at FROM user_lifetimes
    WHERE tenant_id = $1 AND user_key = ANY($2::text[]) AND registered_at <= $3
    ORDER BY registered_at DESC LIMIT 1)`;

export interface Lifetime {
  tenantId: string;
  /** A keyed hash of the user id: the usage report counts users and never names them. */
  userKey: string;
  at: string;
  /** An erasure's: the user's keys under the previous master keys (MFA_PREVIOUS_ENCRYPTION_KEYS). */
  previousKeys?: readonly string[];
}

/** What the usage report counts: sign-ins of the report and users' lifetimes. */
export class UsageRepository {
  constructor(
    private readonly pool: pg.Pool,
    /** Report queries: DATABASE_READ_URL's replica when set, else the primary. */
    private readonly readPool: pg.Pool = pool,
  ) {}

  /** Registrations (one insert per batch) then erasures of a batch: a replay writes the same values. */
  async applyLifetimes(registered: readonly Lifetime[], erased: readonly Lifetime[]): Promise<void> {
    if (registered.length > 0) {
      await this.pool.query(INSERT_REGISTERED, [registered.map((l) => l.tenantId), registered.map((l) => l.userKey), registered.map((l) => l.at)]);
    }
    for (const l of erased) await this.pool.query(RECORD_ERASED, [l.tenantId, [l.userKey, ...(l.previousKeys ?? [])], l.at]);
  }

  /**
   * Per period of [first, to): sign-ins with a result by method (a sign-in left without one past
   * `expiredBefore` counts as failed, as the sign-in report shows it), registrations and erasures;
   * and the users registered and erased before `first`.
   */
  async counts(tenantId: string, first: Date, to: Date, granularity: Granularity, expiredBefore: Date): Promise<UsageCounts> {
    const bucket = (column: string) => `(date_trunc('${granularity}', ${column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`;
    const [signins, lifetimes] = await Promise.all([
      readReport<{ period: Date; method: string | null; success: string; failure: string }>(
        this.readPool,
        `SELECT ${bucket('occurred_at')} AS period, auth_method AS method,
                count(*) FILTER (WHERE result = 'success') AS success,
                count(*) FILTER (WHERE result = 'failure' OR (result IS NULL AND expires_at < $4)) AS failure
           FROM signins
          WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
          GROUP BY 1, 2`,
        [tenantId, first, to, expiredBefore],
      ),
      readReport<{ kind: string; period: Date | null; n: string }>(
        this.readPool,
        `SELECT 'registered' AS kind, CASE WHEN registered_at >= $2 THEN ${bucket('registered_at')} END AS period, count(*) AS n
           FROM user_lifetimes WHERE tenant_id = $1 AND registered_at < $3 GROUP BY 1, 2
         UNION ALL
         SELECT 'erased', CASE WHEN erased_at >= $2 THEN ${bucket('erased_at')} END, count(*)
           FROM user_lifetimes WHERE tenant_id = $1 AND erased_at < $3 GROUP BY 1, 2`,
        [tenantId, first, to],
      ),
    ]);
    const counts: UsageCounts = { signins: [], registeredBefore: 0, erasedBefore: 0, registrations: new Map(), erasures: new Map() };
    for (const r of signins.rows) {
      const success = Number(r.success);
      const failure = Number(r.failure);
      if (success + failure > 0) counts.signins.push({ period: r.period.getTime(), method: r.method, success, failure });
    }
    for (const r of lifetimes.rows) {
      const n = Number(r.n);
      if (r.period === null) {
        if (r.kind === 'registered') counts.registeredBefore += n;
        else counts.erasedBefore += n;
      } else {
        (r.kind === 'registered' ? counts.registrations : counts.erasures).set(r.period.getTime(), n);
      }
    }
    return counts;
  }
}
