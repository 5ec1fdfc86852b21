import { ContractError, parseEvent, Streams, subjectToken, VoiceMessageBuckets } from '@mfa/contracts';
import { isObjectStoreNotFound, purgeObjectVersion, WORKING_EVERY_MS, type NatsClients } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import { Objm } from '@nats-io/obj';
import type { OathInventory } from '../adapters/oath-inventory.js';
import type { OffboardingCensusStore } from '../adapters/offboarding-census.js';
import type { ImportJobs } from '../adapters/import-jobs.js';
import type { ApiClientsService } from './api-clients.service.js';
import type { OathImportService } from './oath-import.service.js';
import type { UserSettingsService } from './user-settings.service.js';
import { eachAggregate } from './each-subject.js';
import { parseUserSubject } from './user-projector.js';

const offboarded = counter('mfa_tenant_offboarding_erased_total', 'What the offboarding of deleted tenants erased', ['what']);

/** Users erased at once: enough to hide the round trips, few enough for a shared NATS and Redis. */
const PARALLEL_USERS = 8;
/** A pass that erased users is followed by another, until one finds none left; at most this many. */
const MAX_PASSES = 10;
/**
 * Tenants offboarded at once by one instance unless TENANT_OFFBOARDING_CONCURRENCY says otherwise:
 * a large tenant's offboarding (~450 users/s) no longer holds up a small one deleted after it.
 * Each runs its own PARALLEL_USERS erasures, so this many times that against NATS and Redis.
 */
export const DEFAULT_OFFBOARDING_CONCURRENCY = 4;

export interface OffboardingCounts {
  users: number;
  hardwareTokens: number;
  recordings: number;
  clients: number;
}

interface OffboardingOptions {
  nats: Pick<NatsClients, 'js' | 'jsm'>;
  users: Pick<UserSettingsService, 'eraseOffboarded' | 'tenantDeletion' | 'recordTenantErased'>;
  clients: Pick<ApiClientsService, 'revokeAllOf'>;
  inventory: Pick<OathInventory, 'dropTenant'>;
  imports: Pick<ImportJobs, 'files' | 'deleteObject' | 'purgeTenant'>;
  /** Ends the tenant's import jobs and waits until none can write a token any more. */
  importJobs: Pick<OathImportService, 'endTenantJobs'>;
  census: Pick<OffboardingCensusStore, 'record' | 'remove'>;
  log: Logger;
}

/**
 * The offboarding of a deleted tenant (tenants.delete; TenantDeleted on its subject), run by the
 * durable consumer `user-settings-tenant-offboarding` on one instance at a time per tenant:
 * 1. every API client of the tenant revoked (tenants.delete did so before answering; again here,
 *    should it have stopped in between), and its unfinished import jobs ended (failed: the tenant
 *    was deleted), waiting until none of their workers can still write a token (a batch under way
 *    at the deletion writes after it; OathImportService.endTenantJobs);
 * 2. every user of the tenant erased as users.delete erases (crypto-shredding: the data key
 *    destroyed, UserErased, the projection reduced to a tombstone, the report pseudonymised), in
 *    passes over the log until one finds none left (a register that passed its tenant check just
 *    before the deletion may append after a pass read its users);
 * 3. its hardware tokens: their events purged from MFA_USER_SETTINGS (their secrets with them)
 *    and the Redis inventory dropped, once no erasure can give a token back any more;
 * 4. its recordings (MFA_VOICE_MESSAGES, MFA_VOICE_UPLOADS) and import files (MFA_IMPORTS),
 *    objects named `<tenant>/…`, then its import jobs' records (MFA_IMPORT_JOBS);
 * 5. TenantErased, with what was erased: the id may be created again.
 * Several tenants are offboarded at once (the consumer's concurrency): every step touches only the
 * tenant's own subjects, objects (`<tenant>/…`), Redis keys and census. Two offboardings of the
 * same tenant never run at once on an instance: a later one (the id created and deleted again while
 * the run before finishes, or the same deletion called again) waits for the one running.
 * Every step skips what is done already, so a redelivery (an instance stopped, a failure) resumes,
 * and the counts are of the whole offboarding: users whose erasure is at or after the deletion and
 * clients revoked since, read from the log; hardware tokens and objects, which their purge
 * consumes, from the census each step records before it purges (OffboardingCensusStore).
 */
export class TenantOffboarding {
  /** The offboarding running on this instance, by tenant. */
  private readonly running = new Map<string, Promise<unknown>>();

  constructor(private readonly options: OffboardingOptions) {}

  /**
   * Offboards the tenant if it is being deleted; undefined when it is not (any more): a TenantDeleted
   * delivered again after its offboarding and the id created again since, or replayed. Waits first
   * for an offboarding of the same tenant running here (its census and its purges are the tenant's
   * alone only as long as one run has them), telling JetStream meanwhile that it is working.
   */
  async offboard(tenantId: string, now: () => Date, working: () => void, signal?: AbortSignal): Promise<OffboardingCounts | undefined> {
    // Checked again after each wait: another waiting for the same run may have started first.
    for (let other = this.running.get(tenantId); other; other = this.running.get(tenantId)) {
      const keepAlive = setInterval(working, WORKING_EVERY_MS);
      try {
        await other.catch(() => undefined);
      } finally {
        clearInterval(keepAlive);
      }
      if (signal?.aborted) throw new Error('stopping: the offboarding resumes at its redelivery');
    }
    const run = this.run(tenantId, now, working, signal);
    this.running.set(tenantId, run);
    try {
      return await run;
    } finally {
      // Only its own entry: a waiter may have started the next run of the tenant already.
      if (this.running.get(tenantId) === run) this.running.delete(tenantId);
    }
  }

  private async run(tenantId: string, now: () => Date, working: () => void, signal?: AbortSignal): Promise<OffboardingCounts | undefined> {
    const deletion = await this.options.users.tenantDeletion(tenantId, now()).catch((error: unknown) => {
      if (error instanceof ContractError && error.code === 'not_found') return undefined;
      throw error;
    });
    if (!deletion) return undefined;
    if (deletion.state === 'deleted') return { users: 0, hardwareTokens: 0, recordings: 0, clients: 0, ...deletion.erased };
    const { deletedAt } = deletion;
    const clients = await this.options.clients.revokeAllOf(tenantId, deletedAt, now());
    working();
    // Before anything is erased: an import job writes token events, and gives tokens to users.
    await this.options.importJobs.endTenantJobs(tenantId, working, signal);
    working();
    let users = 0;
    for (let pass = 1; ; pass++) {
      const { erasedNow, erasedSince } = await this.eraseUsers(tenantId, deletedAt, now, working, signal);
      users = erasedSince;
      if (erasedNow === 0) break;
      if (pass >= MAX_PASSES) throw new Error(`users of the deleted tenant kept appearing after ${pass} passes`);
    }
    const hardwareTokens = await this.dropHardwareTokens(tenantId, deletedAt);
    working();
    const recordings = await this.dropObjects(tenantId, deletedAt, [VoiceMessageBuckets.messages, VoiceMessageBuckets.uploads]);
    await this.dropImportFiles(tenantId);
    const counts = { users, hardwareTokens, recordings, clients };
    await this.options.users.recordTenantErased(tenantId, counts, now());
    for (const [what, n] of Object.entries(counts)) offboarded.inc({ what }, n);
    this.options.log.info('tenant offboarded', { tenantId, ...counts });
    // TenantErased holds the counts now; a census left behind is only a few bytes, of a deletion that is over.
    await this.options.census.remove(tenantId).catch((error: unknown) => this.options.log.warn('offboarding census not removed', { tenantId, error }));
    return counts;
  }

  /**
   * One pass over the tenant's users in the log (the last event of each): erases those not erased
   * yet. `erasedNow`: erased by this pass; `erasedSince`: users whose erasure is at or after the
   * deletion, by this pass or before (a resumed offboarding counts them all).
   */
  private async eraseUsers(tenantId: string, deletedAt: string, now: () => Date, working: () => void, signal?: AbortSignal): Promise<{ erasedNow: number; erasedSince: number }> {
    let erasedNow = 0;
    let erasedSince = 0;
    let lastWorking = Date.now();
    await eachAggregate(
      this.options.nats.js,
      `mfa.evt.user.${subjectToken(tenantId)}.*`,
      async (msg) => {
        if (signal?.aborted) throw new Error('stopping: the offboarding resumes at its redelivery');
        if (Date.now() - lastWorking > WORKING_EVERY_MS) {
          working();
          lastWorking = Date.now();
        }
        const ids = parseUserSubject(msg.subject);
        if (!ids || ids.tenantId !== tenantId) return;
        const last = parseEvent(msg.json());
        if (last.type !== 'UserErased') {
          await this.options.users.eraseOffboarded(tenantId, ids.userId, now());
          erasedNow++;
        } else if (last.occurredAt < deletedAt) return;
        erasedSince++;
      },
      { parallel: PARALLEL_USERS, log: this.options.log },
    );
    return { erasedNow, erasedSince };
  }

  /**
   * The tenant's hardware tokens: their events purged (secrets included), the inventory index
   * dropped. How many there were, as the census recorded them before the first purge.
   */
  private async dropHardwareTokens(tenantId: string, deletedAt: string): Promise<number> {
    const filter = `mfa.evt.oath.${subjectToken(tenantId)}.*`;
    const info = await this.options.nats.jsm.streams.info(Streams.userSettings.name, { subjects_filter: filter });
    const tokens = Object.keys(info.state.subjects ?? {}).length;
    const census = await this.options.census.record(
      tenantId,
      deletedAt,
      (c) => c.hardwareTokens !== undefined,
      (c) => ({ ...c, hardwareTokens: tokens }),
    );
    if (tokens > 0) await this.options.nats.jsm.streams.purge(Streams.userSettings.name, { filter });
    await this.options.inventory.dropTenant(tenantId);
    return census.hardwareTokens ?? 0;
  }

  /**
   * The tenant's objects (`<tenant>/…`) in the buckets that exist, each bucket's counted in the
   * census before the first is deleted; how many there were.
   */
  private async dropObjects(tenantId: string, deletedAt: string, buckets: readonly string[]): Promise<number> {
    let deleted = 0;
    for (const bucket of buckets) {
      let names: string[];
      try {
        const store = await new Objm(this.options.nats.js).open(bucket);
        names = (await store.list()).filter((o) => !o.deleted && o.name.startsWith(`${tenantId}/`)).map((o) => o.name);
      } catch (error) {
        // A bucket dispatch never made (no recording was ever uploaded): nothing of the tenant in it.
        if (isObjectStoreNotFound(error)) continue;
        throw error;
      }
      const census = await this.options.census.record(
        tenantId,
        deletedAt,
        (c) => c.objects?.[bucket] !== undefined,
        (c) => ({ ...c, objects: { ...c.objects, [bucket]: names.length } }),
      );
      for (const name of names) await purgeObjectVersion(this.options.nats.jsm, bucket, name);
      deleted += census.objects?.[bucket] ?? 0;
    }
    return deleted;
  }

  /**
   * The tenant's import files and jobs' files in MFA_IMPORTS (hardware token secrets, perhaps in
   * clear), then its jobs' records in MFA_IMPORT_JOBS (no worker can write one any more: step 1).
   */
  private async dropImportFiles(tenantId: string): Promise<void> {
    for (const file of await this.options.imports.files()) {
      if (!file.name.startsWith(`${tenantId}/`)) continue;
      if (!(await this.options.imports.deleteObject(file.name))) throw new Error('an import file of the deleted tenant could not be deleted');
    }
    await this.options.imports.purgeTenant(tenantId);
  }
}
