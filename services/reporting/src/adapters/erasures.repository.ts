import type pg from 'pg';
import { inTransaction } from './database.js';

export interface Erasure {
  tenantId: string;
  userId: string;
  /** What the user's rows keep instead of the user id. */
  pseudonym: string;
  /** Data key generation destroyed: rows sealed under it or an older one are the erased user's. */
  gen: number;
  erasedAt: string;
}

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
 * Run for each (tenant, user id, pseudonym) as arrays, and only rows of users in erased_users
 * change: by the erasure, after its other updates, and by the fraud projection after each batch
 * of user rows, in the batch's transaction (FraudReportRepository), so the row comes out the same
 * whichever of the block, the unblock and the erasure is projected last.
 */
export const PSEUDONYMIZE_BLOCK_ENDS = `
UPDATE block_history u SET user_id = b.pseudonym, reason = NULL
  FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::text[]) AS x(tenant_id, user_id, pseudonym)) b
  JOIN erased_users e ON e.tenant_id = b.tenant_id AND e.pseudonym = b.pseudonym
 WHERE u.tenant_id = b.tenant_id AND u.user_id = b.user_id
   AND u.action IN ('unblock', 'auto_unblock') AND u.occurred_at > e.erased_at
   AND (SELECT p.action = 'block' AND p.occurred_at <= e.erased_at
          FROM block_history p
         WHERE p.tenant_id = u.tenant_id AND p.user_id IN (b.user_id, b.pseudonym)
           AND (p.occurred_at, p.event_seq) < (u.occurred_at, u.event_seq)
         ORDER BY p.occurred_at DESC, p.event_seq DESC
         LIMIT 1)`;
const RECORD_ERASURE = `
INSERT INTO erased_users (tenant_id, pseudonym, gen, erased_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, pseudonym) DO UPDATE SET
  gen = GREATEST(erased_users.gen, excluded.gen),
  erased_at = GREATEST(erased_users.erased_at, excluded.erased_at)`;

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
    const { tenantId, userId, pseudonym, gen, erasedAt } = erasure;
    await inTransaction(this.pool, async (client) => {
      // SHARE ROW EXCLUSIVE: conflicts with the projections' writes (ROW EXCLUSIVE) and with itself.
      await client.query('LOCK TABLE signins, audit_log, fraud_alerts, block_history IN SHARE ROW EXCLUSIVE MODE');
      await client.query(RECORD_ERASURE, [tenantId, pseudonym, gen, erasedAt]);
      await client.query(PSEUDONYMIZE_SIGNINS, [tenantId, pseudonym, userId, gen]);
      await client.query(PSEUDONYMIZE_AUDIT, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_ALERTS, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_BLOCKS, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_BLOCK_ENDS, [[tenantId], [userId], [pseudonym]]);
    });
  }
}
