import type pg from 'pg';
import { inTransaction } from './database.js';

export interface Erasure {
  tenantId: string;
  userId: string;
  /**
   * The user's pseudonyms under every master key, oldest first and the current one last
   * (knownPseudonyms): the rows keep the one an earlier erasure of the user recorded, else the
   * current one.
   */
  pseudonyms: string;
  /** Data key generation destroyed: rows sealed under it or an older one are the erased user's. */
  gen: number;
  erasedAt: string;
}

/**
 * What the rows of an erased user keep instead of the user id, from erased_users `e`: the
 * pseudonym of the user's first erasure. A record the erasure made under a later key (see erase)
 * names it as its alias, so that the user's rows keep it after the key of the first erasure has
 * left the keyring, when only that later record still matches.
 */
export const KEPT_PSEUDONYM = 'COALESCE(e.alias, e.pseudonym)';

/**
 * The erasure a row to be written falls under, if any, as a join of `input` (whose `pseudonym`
 * column lists the user's pseudonyms, as knownPseudonyms does) with erased_users: its pseudonym
 * (what the row keeps instead of the user id, KEPT_PSEUDONYM), the pseudonym it is recorded under
 * (`recorded`) and its time. erased_users holds
 * each erased user under the pseudonym of the master key current when the erasure was first
 * projected (and, once the erasure is projected again after a rotation, under the new key's as
 * well, naming the first as its alias), so the row is matched under every key of the keyring, the
 * oldest key's wins, and every record of the user names the same pseudonym: all of the user's rows
 * keep one across rotations, also once the first erasure's key is gone, and a user recorded under
 * two keys still gives one row, which an upsert needs. One probe of erased_users' primary key per
 * key and row.
 */
export const erasureOf = (input: string, condition: string, join: 'LEFT JOIN' | 'JOIN' = 'LEFT JOIN'): string => `${join} LATERAL (
    SELECT ${KEPT_PSEUDONYM} AS pseudonym, e.pseudonym AS recorded, e.erased_at FROM erased_users e
     WHERE e.tenant_id = ${input}.tenant_id AND e.pseudonym = ANY(string_to_array(${input}.pseudonym, ',')) AND ${condition}
     ORDER BY array_position(string_to_array(${input}.pseudonym, ','), e.pseudonym)
     LIMIT 1) e ON true`;

// Rows of sign-ins of registrations up to `gen` (the key generation their start names, in its sealed
// data or as keyGen), and rows of no registration (a v1 row, a start for an unknown or erased user
// id, a row only outcome events have written so far): the same id registered again is a new user,
// whose sign-ins name a later generation.
const PSEUDONYMIZE_SIGNINS = `
UPDATE signins SET user_id = $2, display_name = NULL, email = NULL, phone_number = NULL, pii = NULL
 WHERE tenant_id = $1 AND user_id = $3 AND (user_gen IS NULL OR user_gen <= $4)`;
const PSEUDONYMIZE_AUDIT = `
UPDATE audit_log SET user_id = $2 WHERE tenant_id = $1 AND user_id = $3 AND occurred_at <= $4`;
// Fraud alerts keep no comment of an erased user, the history no reason (free text an admin typed about them).
const PSEUDONYMIZE_ALERTS = `
UPDATE fraud_alerts SET user_id = $2, comment = NULL WHERE tenant_id = $1 AND user_id = $3 AND occurred_at <= $4`;
const PSEUDONYMIZE_BLOCKS = `
UPDATE block_history SET user_id = $2, reason = NULL WHERE tenant_id = $1 AND user_id = $3 AND occurred_at <= $4`;
/**
 * The end of an erased user's block: an erasure leaves the user's block in force, so the unblock
 * that ends it (automatic at the block's end, or an administrator's) comes after the erasure and
 * names the user id in clear. It is the erased user's row all the same when the latest of the
 * user's rows before it is a block from up to the erasure. The same id registered again and blocked
 * after the erasure keeps its own rows: the unblock ending that block follows that block.
 *
 * The block is found by the user id, by the pseudonym the user's rows keep (which the keyring may
 * no longer compute: its key removed after the erasure was recorded under the current one) and by
 * each of the user's pseudonyms (a block an earlier release named by another key's).
 *
 * Run for each (tenant, user id, pseudonyms as knownPseudonyms lists them) as arrays, and only
 * rows of users in erased_users change: by the erasure, after its other updates, and by the fraud
 * projection after each batch of user rows, in the batch's transaction (FraudReportRepository), so
 * the row comes out the same whichever of the block, the unblock and the erasure is projected last.
 */
export const PSEUDONYMIZE_BLOCK_ENDS = `
UPDATE block_history u SET user_id = e.pseudonym, reason = NULL
  FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::text[]) AS x(tenant_id, user_id, pseudonym)) b
  ${erasureOf('b', 'true', 'JOIN')}
 WHERE u.tenant_id = b.tenant_id AND u.user_id = b.user_id
   AND u.action IN ('unblock', 'auto_unblock') AND u.occurred_at > e.erased_at
   AND (SELECT p.action = 'block' AND p.occurred_at <= e.erased_at
          FROM block_history p
         WHERE p.tenant_id = u.tenant_id
           AND (p.user_id IN (b.user_id, e.pseudonym) OR p.user_id = ANY(string_to_array(b.pseudonym, ',')))
           AND (p.occurred_at, p.event_seq) < (u.occurred_at, u.event_seq)
         ORDER BY p.occurred_at DESC, p.event_seq DESC
         LIMIT 1)`;
// An earlier erasure of the user, under any key of the keyring, oldest first: the pseudonym it is
// recorded under, and the one the user's rows keep.
const RECORDED_PSEUDONYM = `
SELECT e.recorded AS pseudonym, e.pseudonym AS kept FROM (SELECT $1::text AS tenant_id, $2::text AS pseudonym) i
  ${erasureOf('i', 'true', 'JOIN')}`;
// An alias, once set, stays: it names the first erasure's pseudonym, which rows may already hold.
// One set on a record without it (an instance of the release before alias recorded the user
// under this key) points that record's later rows back to the first erasure's pseudonym.
const RECORD_ERASURE = `
INSERT INTO erased_users (tenant_id, pseudonym, gen, erased_at, alias) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id, pseudonym) DO UPDATE SET
  gen = GREATEST(erased_users.gen, excluded.gen),
  erased_at = GREATEST(erased_users.erased_at, excluded.erased_at),
  alias = COALESCE(erased_users.alias, excluded.alias)
RETURNING gen, erased_at`;

/**
 * Erasures in the report: the user's rows keep the pseudonym and lose their personal data. The
 * projections keep writing meanwhile, so the erasure takes a lock that waits for their open
 * statements and holds new ones back until it commits: a row committed before it is updated here,
 * a row written after it finds the user in erased_users (UPSERT_SIGNINS, INSERT_AUDIT, and the fraud
 * report's inserts). Erasures
 * are rare and the updates go through the by-user indexes, so the pause is short.
 */
export class ErasuresRepository {
  constructor(private readonly pool: pg.Pool) {}

  async erase(erasure: Erasure): Promise<void> {
    const { tenantId, userId, pseudonyms, gen, erasedAt } = erasure;
    await inTransaction(this.pool, async (client) => {
      // SHARE ROW EXCLUSIVE: conflicts with the projections' writes (ROW EXCLUSIVE) and with itself.
      await client.query('LOCK TABLE signins, audit_log, fraud_alerts, block_history IN SHARE ROW EXCLUSIVE MODE');
      // A user erased before a master key rotation (an erasure redelivered or replayed after it,
      // or the same id registered again and erased again) keeps the pseudonym recorded then.
      const { rows } = await client.query<{ pseudonym: string; kept: string }>(RECORDED_PSEUDONYM, [tenantId, pseudonyms]);
      const current = pseudonyms.split(',').at(-1)!;
      const recordedUnder = rows[0]?.pseudonym ?? current;
      const pseudonym = rows[0]?.kept ?? current;
      const recorded = await client.query<{ gen: number; erased_at: Date }>(RECORD_ERASURE, [tenantId, recordedUnder, gen, erasedAt, null]);
      // Recorded under the current key as well, with the latest erasure recorded under the older
      // one: once that key has left MFA_PREVIOUS_ENCRYPTION_KEYS its pseudonym can no longer be
      // computed, and the user's rows projected from then on are matched by this one instead of
      // keeping the user id. They keep the pseudonym recorded then (the alias), not this one:
      // one erased user, one pseudonym.
      if (recordedUnder !== current) {
        const latest = recorded.rows[0]!;
        await client.query(RECORD_ERASURE, [tenantId, current, latest.gen, latest.erased_at, pseudonym]);
      }
      await client.query(PSEUDONYMIZE_SIGNINS, [tenantId, pseudonym, userId, gen]);
      await client.query(PSEUDONYMIZE_AUDIT, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_ALERTS, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_BLOCKS, [tenantId, pseudonym, userId, erasedAt]);
      // Every pseudonym of the user, as the fraud projection passes them: a block named by any of them is found.
      await client.query(PSEUDONYMIZE_BLOCK_ENDS, [[tenantId], [userId], [pseudonyms]]);
    });
  }
}
