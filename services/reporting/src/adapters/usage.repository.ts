import type pg from 'pg';
import type { Granularity, UsageCounts } from '../domain/usage-report.js';
import { ofCurrentTenant, readReport, sinceIncarnation } from './signins.repository.js';

// Registrations (user_lifetimes) and erasures (user_erasures) are separate facts, each kept once:
// the usage report counts them by their own times, so the projection may see an erasure before its
// registration (two instances, a retry after a back-off, a replay) and the figures come out the
// same. A fact already stored under a previous master key's hash of the user (a redelivery after a
// rotation) is not stored again; `$4` holds those hashes, comma-separated (base64url has no comma).
const facts = (table: string, column: string) => `
INSERT INTO ${table} (tenant_id, user_key, ${column})
SELECT f.tenant_id, f.user_key, f.at
  FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS f(tenant_id, user_key, at, previous)
 WHERE NOT EXISTS (SELECT 1 FROM ${table} t
                    WHERE t.tenant_id = f.tenant_id AND t.user_key = ANY(string_to_array(f.previous, ',')) AND t.${column} = f.at)
   AND ${ofCurrentTenant('f', 'at')}
ON CONFLICT DO NOTHING`;
const INSERT_REGISTERED = facts('user_lifetimes', 'registered_at');
const INSERT_ERASED = facts('user_erasures', 'erased_at');

export interface Lifetime {
  tenantId: string;
  /** A keyed hash of the user id: the usage report counts users and never names them. */
  userKey: string;
  at: string;
  /** The user's keys under the previous master keys (MFA_PREVIOUS_ENCRYPTION_KEYS). */
  previousKeys: readonly string[];
}

/** What the usage report counts: sign-ins of the report and users' lifetimes. */
export class UsageRepository {
  constructor(
    private readonly pool: pg.Pool,
    /** Report queries: DATABASE_READ_URL's replica when set, else the primary. */
    private readonly readPool: pg.Pool = pool,
  ) {}

  /** Registrations and erasures of a batch, one insert each: a replay writes nothing new. */
  async applyLifetimes(registered: readonly Lifetime[], erased: readonly Lifetime[]): Promise<void> {
    for (const [sql, lifetimes] of [[INSERT_REGISTERED, registered], [INSERT_ERASED, erased]] as const) {
      if (lifetimes.length === 0) continue;
      await this.pool.query(sql, [
        lifetimes.map((l) => l.tenantId),
        lifetimes.map((l) => l.userKey),
        lifetimes.map((l) => l.at),
        lifetimes.map((l) => l.previousKeys.join(',')),
      ]);
    }
  }

  /**
   * Per period of [first, to): sign-ins with a result by method (a sign-in left without one past
   * `expiredBefore` counts as failed, as the sign-in report shows it), registrations and erasures;
   * and the users registered and erased before `first`. The sign-ins are those the sign-in report
   * lists (SigninsRepository.findSignins): a row only an outcome has written so far, which bears the
   * outcome's time and no method, counts once its start is projected (at the start's time, by its
   * method), or once first written before `expiredBefore` if its start never comes.
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
            AND (context_seq IS NOT NULL OR projected_at < $4)
            AND ${sinceIncarnation('occurred_at')}
          GROUP BY 1, 2`,
        [tenantId, first, to, expiredBefore],
      ),
      readReport<{ kind: string; period: Date | null; n: string }>(
        this.readPool,
        `SELECT 'registered' AS kind, CASE WHEN registered_at >= $2 THEN ${bucket('registered_at')} END AS period, count(*) AS n
           FROM user_lifetimes WHERE tenant_id = $1 AND registered_at < $3 AND ${sinceIncarnation('registered_at')} GROUP BY 1, 2
         UNION ALL
         SELECT 'erased', CASE WHEN erased_at >= $2 THEN ${bucket('erased_at')} END, count(*)
           FROM user_erasures WHERE tenant_id = $1 AND erased_at < $3 AND ${sinceIncarnation('erased_at')} GROUP BY 1, 2`,
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
