import type pg from 'pg';

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
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // SHARE ROW EXCLUSIVE: conflicts with the projections' writes (ROW EXCLUSIVE) and with itself.
      await client.query('LOCK TABLE signins, audit_log, fraud_alerts, block_history IN SHARE ROW EXCLUSIVE MODE');
      await client.query(RECORD_ERASURE, [tenantId, pseudonym, gen, erasedAt]);
      await client.query(PSEUDONYMIZE_SIGNINS, [tenantId, pseudonym, userId, gen]);
      await client.query(PSEUDONYMIZE_AUDIT, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_ALERTS, [tenantId, pseudonym, userId, erasedAt]);
      await client.query(PSEUDONYMIZE_BLOCKS, [tenantId, pseudonym, userId, erasedAt]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }
}
