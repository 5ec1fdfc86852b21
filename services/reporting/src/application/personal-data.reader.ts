import { unavailable } from '@mfa/contracts';
import { SealError } from '@mfa/crypto';
import { openPersonalData, type UserDataKeys } from '@mfa/service-kit';
import { counter } from '@mfa/telemetry';
import type { SigninRow } from '../domain/signin-report.js';
import type { Pseudonymizer } from './pseudonyms.js';

const unreadable = counter(
  'mfa_report_personal_data_unreadable_total',
  'Report rows whose sealed personal data could not be opened when read (no data key in MFA_USER_KEYS, or the value does not open under it): reported without it',
  ['cause'],
);

type UserKey = Awaited<ReturnType<UserDataKeys['get']>>;

/** A report row with the personal data of a sign-in: a sign-in's own, or a fraud alert's (from its sign-in). */
export type PersonalRow = Pick<SigninRow, 'userId' | 'displayName' | 'email' | 'phoneNumber' | 'pii'> & { challengeId?: string | null };

/**
 * Opens the sealed personal data of report rows when a report is read. The rows keep what the
 * start event sealed under the user's data key, so the projection never reads a key (it keeps up
 * with the hot path at any rate), Postgres and its backups hold no name, e-mail or phone number
 * in clear, and destroying a user's key (users.delete) makes them unreadable everywhere at once.
 *
 * Each distinct user of a page is looked up once, in parallel, through the keys' cache. A row
 * whose key generation was erased before the erasure reached the report is shown as the erasure
 * will leave it: by pseudonym, without personal data.
 */
export class PersonalDataReader {
  constructor(
    private readonly keys: Pick<UserDataKeys, 'get'>,
    private readonly pseudonymOf: Pseudonymizer,
    private readonly warn: (message: string, fields: Record<string, unknown>) => void = () => undefined,
  ) {}

  async open<R extends PersonalRow>(tenantId: string, rows: readonly R[]): Promise<R[]> {
    const lookups = new Map<string, Promise<UserKey>>();
    const keyOf = (userId: string, gen: number): Promise<UserKey> => {
      const id = `${userId}\u0000${gen}`;
      let lookup = lookups.get(id);
      if (!lookup) {
        lookup = this.keys.get(tenantId, userId, gen);
        lookups.set(id, lookup);
      }
      return lookup;
    };
    let keys: UserKey[];
    try {
      keys = await Promise.all(rows.map((row) => (row.pii ? keyOf(row.userId, row.pii.gen) : Promise.resolve(undefined))));
    } catch (error) {
      throw unavailable('the users’ data keys cannot be read', error);
    }
    return rows.map((row, i) => {
      if (!row.pii) return row;
      const key = keys[i];
      const cleared = { ...row, pii: null, displayName: null, email: null, phoneNumber: null };
      if (key === 'erased') return { ...cleared, userId: this.pseudonymOf(tenantId, row.userId) };
      if (!key) {
        // Not even the stream leader knows the key (the key stream was lost, or restored from an
        // older backup): the sign-in is still reported, without personal data.
        unreadable.inc({ cause: 'no_key' });
        return cleared;
      }
      try {
        const data = openPersonalData(key, { tenantId, userId: row.userId, purpose: 'challenge' }, row.pii.sealed);
        return { ...cleared, displayName: data.displayName ?? null, email: data.email ?? null, phoneNumber: data.phoneNumber ?? null };
      } catch (error) {
        if (!(error instanceof SealError)) throw error;
        // One damaged row must not take the tenant's whole report down.
        unreadable.inc({ cause: 'does_not_open' });
        this.warn('report row personal data does not open', { challengeId: row.challengeId, reason: error.message });
        return cleared;
      }
    });
  }
}
