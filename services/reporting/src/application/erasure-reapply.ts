import type pg from 'pg';
import { EventSubjects, Streams, Subjects, subjectIds, type TenantsDeleteRequest, type UsersDeleteRequest } from '@mfa/contracts';
import { dataKeyGeneration, type Keyring } from '@mfa/crypto';
import { isNoMessageFound, isTransientDependencyError, readOnce, type NatsClients } from '@mfa/messaging';
import { UserDataKeys } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { knownPseudonyms } from './pseudonyms.js';

const USER_SUBJECT_PREFIX = EventSubjects.allUsers.slice(0, -1);
/** Users whose data keys are read at once, and whose pseudonyms go in one query. */
const BATCH = 500;

interface UserRef {
  tenantId: string;
  userId: string;
}

export interface ReapplyReport {
  dryRun: boolean;
  /**
   * Tenants the audit trail says were deleted (tenants.delete, `ok`) whom the restored log has as
   * they were before that deletion: deleted again (or, dry run, to be). Their users are left to
   * the tenant's offboarding.
   */
  tenantsDeletedAgain: Array<{ tenantId: string; deletedAt: string }>;
  /** tenants.delete refused or failed: run the tool again. */
  tenantsFailed: Array<{ tenantId: string; error: string }>;
  /** User subjects of the event log. */
  users: number;
  /** Users the log says are erased (its last event is UserErased): nothing to do. */
  erasedInLog: number;
  /** Users the report records as erased at their current data key's generation or later: erased again (or, dry run, to be). */
  erasedAgain: Array<UserRef & { gen: number }>;
  /**
   * Users whose events have no data key (MFA_USER_KEYS restored from an older backup than the log),
   * including a user erased and registered again whose key store holds only the erasure's tombstone.
   */
  withoutKey: UserRef[];
  /**
   * Users whose data key is destroyed (a tombstone of generation `gen`) though the log records no
   * erasure of that generation (MFA_USER_KEYS newer than the log), whose erasure is to be completed:
   * the dry run's. A run moves each to keyErasuresCompleted, or to failed.
   */
  keyErasedOnly: Array<UserRef & { gen: number }>;
  /** Those erasures completed (users.delete with onlyIfKeyErased: `gen`); none in a dry run. */
  keyErasuresCompleted: Array<UserRef & { gen: number }>;
  /** users.delete refused or failed, or the user's data key did not read: run the tool again (after fixing the keyring). */
  failed: Array<UserRef & { error: string }>;
}

export interface ErasureReapplyOptions {
  dryRun: boolean;
  /** users.delete through the public API (the caller adds the platform key); resolves to the reply. */
  erase: (request: UsersDeleteRequest) => Promise<{ error?: { code: string; message: string } }>;
  /** tenants.delete through the public API, with the platform key; resolves to the reply. */
  deleteTenant: (request: TenantsDeleteRequest) => Promise<{ error?: { code: string; message: string } }>;
  log: Logger;
}

/**
 * After a restore of the event log from a backup (docs/operations.md, "Backup and restore"), the
 * users erased since the backup are registered again in the log, and their data keys, which the
 * backup still held, open their personal data. The report in Postgres, which the restore does not
 * touch, records each erasure by pseudonym and data key generation (erased_users). This pass
 * computes every user's pseudonyms (under the current and each previous master key, as the
 * projection records them) and erases again, through users.delete, each user whose current data
 * key the report says was erased: its generation is at most the erased one. A user registered
 * again after an erasure has a later generation and is left alone. A user whose data key the key
 * store destroyed after the log's backup (MFA_USER_KEYS newer than the log) has that erasure
 * completed, through users.delete with onlyIfKeyErased. First, a tenant deleted after the backup
 * (the audit trail, which Postgres keeps, records each tenants.delete) that the restored log has
 * as it was before is deleted again: its offboarding then erases its users.
 */
export class ErasureReapply {
  private readonly keys: UserDataKeys;
  private readonly pseudonymsOf: (tenantId: string, userId: string) => string;

  constructor(
    private readonly nats: NatsClients,
    keyring: Keyring,
    private readonly db: Pick<pg.Pool, 'query'>,
    private readonly options: ErasureReapplyOptions,
  ) {
    this.keys = new UserDataKeys(nats, keyring, { maxEntries: BATCH });
    this.pseudonymsOf = knownPseudonyms(keyring);
  }

  async run(): Promise<ReapplyReport> {
    const report: ReapplyReport = {
      dryRun: this.options.dryRun,
      tenantsDeletedAgain: [],
      tenantsFailed: [],
      users: 0,
      erasedInLog: 0,
      erasedAgain: [],
      withoutKey: [],
      keyErasedOnly: [],
      keyErasuresCompleted: [],
      failed: [],
    };
    // The users of a tenant deleted again are its offboarding's (users.delete would find no tenant).
    const offboarded = await this.deleteTenantsAgain(report);
    let batch: UserRef[] = [];
    // The last event of each user subject says whether the log has the user erased.
    await readOnce(this.nats.js, Streams.userSettings.name, EventSubjects.allUsers, { policy: 'last_per_subject' }, async (msg) => {
      const ids = subjectIds(USER_SUBJECT_PREFIX, msg.subject);
      if (!ids || offboarded.has(ids[0])) return;
      report.users++;
      if (lastEventType(msg.string()) === 'UserErased') {
        report.erasedInLog++;
        return;
      }
      batch.push({ tenantId: ids[0], userId: ids[1] });
      if (batch.length >= BATCH) {
        await this.check(batch, report);
        batch = [];
      }
    }, { log: this.options.log });
    if (batch.length > 0) await this.check(batch, report);
    return report;
  }

  private async check(users: UserRef[], report: ReapplyReport): Promise<void> {
    const live: Array<UserRef & { gen: number }> = [];
    const tombstoned: Array<UserRef & { gen: number }> = [];
    await Promise.all(
      users.map(async (user) => {
        // One key that does not read (wrapped with a master key the keyring lacks, a damaged record)
        // is that user's failure, not the run's: the others are still checked.
        const entry = await this.keys.current(user.tenantId, user.userId).catch((error: unknown) => {
          // NATS away is the run's failure (run it again), not the user's.
          if (isTransientDependencyError(error)) throw error;
          report.failed.push({ ...user, error: `data key unreadable: ${error instanceof Error ? error.message : String(error)}` });
          return null;
        });
        if (entry === null) return;
        if (!entry) report.withoutKey.push(user);
        else if (entry.kind === 'erased') tombstoned.push({ ...user, gen: entry.gen });
        else live.push({ ...user, gen: entry.gen });
      }),
    );
    // A tombstone the log's own erasure accounts for belongs to a user registered again since: the
    // key of that registration is what is missing (user-settings answers such a user `conflict`,
    // not `not_found`), and only the operator may decide to erase them (docs/operations.md). So
    // does one older than the key the log's data since its last erasure is sealed under: that key
    // is missing, not erased (user-settings refuses its conditional users.delete with `conflict`).
    // The others were erased after the log's backup: their erasure is completed with the condition
    // that the key store still holds its tombstone, so that a users.register that completed it
    // first and registered the user again (user-settings does that) is never undone.
    for (const user of tombstoned) {
      const inLog = await this.generationsInLog(user);
      if (inLog.erased >= user.gen || inLog.sealed > user.gen) report.withoutKey.push({ tenantId: user.tenantId, userId: user.userId });
      else if (this.options.dryRun) report.keyErasedOnly.push(user);
      else {
        const error = await this.erase({ tenantId: user.tenantId, userId: user.userId, onlyIfKeyErased: user.gen });
        if (error) report.failed.push({ tenantId: user.tenantId, userId: user.userId, error: `completing the key store’s erasure of generation ${user.gen}: ${error}` });
        else report.keyErasuresCompleted.push(user);
      }
    }
    if (live.length === 0) return;
    // Each user's pseudonyms under every master key of the keyring, one row per pseudonym.
    const byPseudonym = new Map<string, number>();
    const tenants: string[] = [];
    const pseudonyms: string[] = [];
    live.forEach((user, index) => {
      for (const pseudonym of this.pseudonymsOf(user.tenantId, user.userId).split(',')) {
        byPseudonym.set(`${user.tenantId}\n${pseudonym}`, index);
        tenants.push(user.tenantId);
        pseudonyms.push(pseudonym);
      }
    });
    const { rows } = await this.db.query<{ tenant_id: string; pseudonym: string; gen: number }>(
      `SELECT e.tenant_id, e.pseudonym, e.gen
         FROM erased_users e
         JOIN unnest($1::text[], $2::text[]) AS q(tenant_id, pseudonym) USING (tenant_id, pseudonym)`,
      [tenants, pseudonyms],
    );
    const erasedGen = new Map<number, number>();
    for (const row of rows) {
      const index = byPseudonym.get(`${row.tenant_id}\n${row.pseudonym}`)!;
      erasedGen.set(index, Math.max(erasedGen.get(index) ?? 0, row.gen));
    }
    for (const [index, gen] of erasedGen) {
      const user = live[index]!;
      if (gen < user.gen) continue; // registered again after that erasure
      report.erasedAgain.push(user);
      if (this.options.dryRun) continue;
      const error = await this.erase({ tenantId: user.tenantId, userId: user.userId });
      if (error) report.failed.push({ tenantId: user.tenantId, userId: user.userId, error });
    }
  }

  /**
   * The tenants the audit trail records as deleted (the last `ok` tenants.delete of each) whose last
   * event in the restored log is from before that deletion, and so still a live tenant: deleted
   * again (not in a dry run). A tenant whose log holds the deletion (its offboarding resumes by
   * itself) or a later change (created again since) is left alone. Answers the tenants deleted again.
   */
  private async deleteTenantsAgain(report: ReapplyReport): Promise<Set<string>> {
    const { rows } = await this.db.query<{ tenant_id: string; deleted_at: Date }>(
      `SELECT tenant_id, max(occurred_at) AS deleted_at FROM audit_log WHERE subject = $1 AND outcome = 'ok' GROUP BY tenant_id ORDER BY tenant_id`,
      [Subjects.tenantsDelete],
    );
    const again = new Set<string>();
    for (const row of rows) {
      const last = await this.nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(row.tenant_id) }).catch((error: unknown) => {
        if (isNoMessageFound(error)) return null;
        throw error;
      });
      const event = last ? eventOf(last.string()) : undefined;
      const live = event?.type === 'TenantCreated' || event?.type === 'TenantSettingsChanged';
      const occurredAt = typeof event?.occurredAt === 'string' ? Date.parse(event.occurredAt) : NaN;
      if (!live || !(occurredAt < row.deleted_at.getTime())) continue;
      again.add(row.tenant_id);
      report.tenantsDeletedAgain.push({ tenantId: row.tenant_id, deletedAt: row.deleted_at.toISOString() });
      if (this.options.dryRun) continue;
      const reply = await this.options.deleteTenant({ tenantId: row.tenant_id }).catch((error: unknown) => ({ error: { code: 'failed', message: error instanceof Error ? error.message : String(error) } }));
      if (reply.error) report.tenantsFailed.push({ tenantId: row.tenant_id, error: `${reply.error.code}: ${reply.error.message}` });
    }
    return again;
  }

  /** users.delete: undefined once done, or what went wrong (`<code>: <message>`). */
  private async erase(request: UsersDeleteRequest): Promise<string | undefined> {
    const reply = await this.options.erase(request).catch((error: unknown) => ({ error: { code: 'failed', message: error instanceof Error ? error.message : String(error) } }));
    return reply.error ? `${reply.error.code}: ${reply.error.message}` : undefined;
  }

  /**
   * What the user's events say of data key generations (their last event is not UserErased):
   * `erased`, the latest generation an erasure recorded (0: none); `sealed`, the newest one the
   * personal data since that erasure is sealed under (0: none), as user-settings reads them.
   */
  private async generationsInLog(user: UserRef): Promise<{ erased: number; sealed: number }> {
    let erased = 0;
    let sealed = 0;
    await readOnce(this.nats.js, Streams.userSettings.name, EventSubjects.user(user.tenantId, user.userId), { policy: 'all' }, (msg) => {
      const event = eventOf(msg.string());
      if (event?.type === 'UserErased' && typeof event.data?.gen === 'number') {
        erased = Math.max(erased, event.data.gen);
        sealed = 0;
      } else if ((event?.type === 'UserRegistered' || event?.type === 'UserProfileChanged') && typeof event.data?.pii === 'string') {
        sealed = Math.max(sealed, dataKeyGeneration(event.data.pii) ?? 0);
      }
    }, { log: this.options.log });
    return { erased, sealed };
  }
}

/** The fields of a stored event this pass reads (a UserErased's `gen` is not sealed; `pii` is, and names its key's generation). */
type StoredFields = { type?: unknown; occurredAt?: unknown; data?: { gen?: unknown; pii?: unknown } };
function eventOf(body: string): StoredFields | undefined {
  try {
    const event: unknown = JSON.parse(body);
    return typeof event === 'object' && event !== null ? (event as StoredFields) : undefined;
  } catch {
    return undefined;
  }
}

function lastEventType(body: string): string | undefined {
  const type = eventOf(body)?.type;
  return typeof type === 'string' ? type : undefined;
}
