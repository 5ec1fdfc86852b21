import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'csv-stringify/sync';
import {
  ContractError,
  invalidRequest,
  MAX_IMPORT_FILE_BYTES,
  MAX_INLINE_ERRORS_BYTES,
  notFound,
  OATH_ERRORS_CSV_HEADER,
  unavailable,
  type OathImportReply,
  type OathImportRequest,
  type OathImportStatusReply,
  type OathImportStatusRequest,
} from '@mfa/contracts';
import { open, seal, SealContext, type Keyring } from '@mfa/crypto';
import { isWrongLastSequence, WORKING_EVERY_MS } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import { isJobObject, jobKey, jobObjects, UploadChanged, type ImportJob, type ImportJobs, type StoredJob } from '../adapters/import-jobs.js';
import { decodeBase64 } from '../domain/oath-import/fields.js';
import { parseCsv } from '../domain/oath-import/csv.js';
import { parsePskc, PskcKeys } from '../domain/oath-import/pskc.js';
import { ImportFileError, zeroRow, type ParsedRow, type RejectedRow } from '../domain/oath-import/types.js';
import type { OathTokensService, RowOutcome } from './oath-tokens.service.js';

/** Rows per checkpoint: a crash redoes at most this many (each of them idempotent). */
export const IMPORT_BATCH = 500;
/** Rows of one batch worked on at once; rows of one user always go to the same lane, in file order. */
const LANES = 16;
/**
 * Jobs one instance runs at once by default (OATH_IMPORT_JOBS_PER_INSTANCE), each of another
 * tenant. Their batches take turns (one batch at a time per instance, as when it ran one job), so
 * a tenant's large job delays another tenant's small one by a batch, not by the whole job, and the
 * instance puts no more load on the event log than before. Each running job holds a batch of rows
 * and a reader of its file: more jobs at once hold more memory, not more load.
 */
export const DEFAULT_IMPORT_JOBS_PER_INSTANCE = 4;
/** How long a worker's claim on a job lasts unless renewed; another instance takes over after it. */
export const IMPORT_LEASE_MS = 30_000;
const HEARTBEAT_MS = 5_000;
/**
 * A worker writes a row's events only while the lease it last wrote has more than this to run
 * (asked right before each write: a write's own timeout is well within it): a worker whose job
 * was taken from it (ended by the offboarding of its deleted tenant, or taken over) or that cannot
 * renew its lease stops writing before the lease runs out, so that whoever waits for
 * IMPORT_LEASE_MS after taking the job knows that nothing more comes from it.
 */
const ROW_LEASE_MARGIN_MS = 10_000;
/** How often the offboarding of a deleted tenant looks again at the jobs it ended whose workers may still write. */
const ENDED_POLL_MS = 250;
/** How often workers look for jobs nobody runs (new ones, or ones whose worker died). */
const SCAN_MS = 2_000;
/** How often the uploads are looked over for those no job claimed: a quarter of the time they are kept, at most a minute. */
const sweepEvery = (unclaimedUploadMs: number) => Math.max(1_000, Math.min(60_000, Math.floor(unclaimedUploadMs / 4)));

/** The PSKC password or pre-shared key (hex) of a job, as sealed in its record. */
interface SealedKeys {
  password?: string;
  psk?: string;
}

class LeaseLost extends Error {
  override name = 'LeaseLost';
}

/**
 * The worker may no longer write for its job: its lease has less than ROW_LEASE_MARGIN_MS to run
 * (it could not renew it), or another wrote the job meanwhile (its tenant's offboarding ended it,
 * another worker took it over). The run stops; the job resumes from its last checkpoint.
 */
class LeaseRunningOut extends LeaseLost {
  override name = 'LeaseRunningOut';
}

/** The job's tenant was deleted (tenants.delete): nothing more of its file may be imported. */
class TenantGone extends Error {
  override name = 'TenantGone';
}

/**
 * The reason of a job whose tenant was deleted before it ended: ended by its worker before its next
 * batch, or by the tenant's offboarding. The rows imported before are erased with the tenant.
 */
export const TENANT_DELETED = 'the tenant was deleted; nothing more of the file was imported';

const isUnfinished = (job: ImportJob) => job.state === 'queued' || job.state === 'running';

/**
 * The reason of a job whose upload was put again under its name, or deleted, before the job had
 * read it for the last time (docs/api.md): the job reads only the version oath.import saw, so the
 * rows it processed came from that one, and nothing of the new file was imported.
 */
export const UPLOAD_REPLACED = 'the file was replaced in the imports bucket after this import was requested; the rows processed came from the file as it was then: import the new file in a new job';
export const UPLOAD_GONE = 'the file is no longer in the imports bucket';

/**
 * Import jobs of hardware tokens (oath.import): the request stores the file and a queued job and
 * answers at once; any instance's worker claims the job (a compare-and-set lease in MFA_IMPORT_JOBS)
 * and imports it in batches, recording after each batch how far it got. A worker that dies leaves
 * its lease to expire; another one (or the same after a restart) resumes at the last checkpoint.
 * Rows of the batch that was cut short are done again, which is harmless: a token this job already
 * imported is recognised by its aggregate (the job id is in its event) and not imported twice.
 * An instance runs jobs of several tenants at once (OATH_IMPORT_JOBS_PER_INSTANCE, one per tenant),
 * their batches taking turns, so that no tenant's large file holds up the others' imports.
 */
export class OathImportService {
  private readonly owner = `${process.pid}-${randomBytes(6).toString('base64url')}`;
  /** The runs of this instance, by tenant: one job of a tenant at a time here. */
  private readonly running = new Map<string, Promise<void>>();
  /** Whose batch goes next: the runs wait in the order they asked. */
  private readonly turns = new Turns();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private scanning = false;
  /** A scan was asked for while one was under way (a job just requested): it scans again at its end. */
  private rescan = false;
  /** The unfinished jobs, as the bucket's watch last said (undefined: not following, read the bucket). */
  private unfinished: Map<string, StoredJob> | undefined;
  /** The error files of ended jobs, by job key, as the same watch said (the sweeper keeps them). */
  private errorFiles: Map<string, string> | undefined;
  private following: { stop(): void } | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  /** When this instance first saw each upload (by name and content id), the start of its time to be claimed. */
  private readonly firstSeen = new Map<string, number>();
  /** Jobs this instance runs at once (OATH_IMPORT_JOBS_PER_INSTANCE). */
  private readonly jobsPerInstance: number;

  constructor(
    private readonly options: {
      jobs: ImportJobs;
      tokens: OathTokensService;
      keyring: Keyring;
      log: Logger;
      /** The tenant exists, else not_found. */
      requireTenant: (tenantId: string, now: Date) => Promise<void>;
      /** What holds a job's PSKC keys for one run (tests count its derivations); `new PskcKeys` by default. */
      pskcKeys?: (given: { password?: string; psk?: Buffer }) => PskcKeys;
      /** What reads a job's file into rows (tests see the secrets it hands out); parseCsv and parsePskc by default. */
      parse?: (format: ImportJob['format'], input: Buffer | AsyncIterable<Buffer>, keys: PskcKeys) => AsyncIterable<ParsedRow>;
      /** Jobs this instance runs at once (OATH_IMPORT_JOBS_PER_INSTANCE); DEFAULT_IMPORT_JOBS_PER_INSTANCE by default. */
      jobsPerInstance?: number;
    },
  ) {
    this.jobsPerInstance = options.jobsPerInstance ?? DEFAULT_IMPORT_JOBS_PER_INSTANCE;
  }

  /** Starts looking for jobs to run, and for uploads no job claimed. */
  start(): void {
    this.timer = setInterval(() => void this.scan(), SCAN_MS);
    this.timer.unref();
    this.sweepTimer = setInterval(() => void this.sweepUploads(), sweepEvery(this.options.jobs.settings.unclaimedUploadMs));
    this.sweepTimer.unref();
    this.warnAboveLimit();
    const unfinished = new Map<string, StoredJob>();
    const errorFiles = new Map<string, string>();
    this.options.jobs
      .follow((key, stored) => {
        if (stored && (stored.job.state === 'queued' || stored.job.state === 'running')) unfinished.set(key, stored);
        else unfinished.delete(key);
        if (stored?.job.errorsObject) errorFiles.set(key, stored.job.errorsObject);
        else errorFiles.delete(key);
      })
      .then((following) => {
        this.following = following;
        this.unfinished = unfinished;
        this.errorFiles = errorFiles;
        if (this.stopped) following.stop();
      })
      .catch((error: unknown) => this.options.log.warn('import jobs not followed; workers read the bucket at each scan', { error }));
    void this.scan();
  }

  /** Stops taking jobs and waits for those running to reach a checkpoint (their leases then expire). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.following?.stop();
    await Promise.all([...this.running.values()].map((run) => run.catch(() => undefined)));
  }

  async request(request: OathImportRequest, now: Date, clientId?: string): Promise<OathImportReply> {
    const { tenantId } = request;
    await this.options.requireTenant(tenantId, now);
    // Hex: never a leading '-' that a command line would take for an option.
    const jobId = randomBytes(12).toString('hex');
    const objects = jobObjects(tenantId, jobId);
    let source: ImportJob['source'];
    if (request.content !== undefined) {
      // Strict: node's decoder skips what it does not know and stops at a truncation without a word.
      const bytes = request.encoding === 'base64' ? decodeBase64(request.content) : Buffer.from(request.content, 'utf8');
      if (bytes === undefined) throw invalidRequest('content: not base64 (RFC 4648: A-Z, a-z, 0-9, "+" and "/", with its "=" padding; spaces and line breaks are ignored)');
      if (bytes.length === 0) throw invalidRequest('content: the file is empty');
      // The file holds the tokens' secrets: only its sealed form is stored, until the job ends.
      const sealed = seal(this.options.keyring, bytes, SealContext.importFile(tenantId, jobId, 'file'));
      bytes.fill(0);
      await this.infra(() => this.options.jobs.putObject(objects.source, Buffer.from(sealed, 'utf8')));
      source = { object: objects.source, sealed: true };
    } else {
      // A job's own file (another job's sealed file, an error file) is not an upload: the job would delete it when it ends.
      if (isJobObject(request.object!)) throw invalidRequest("object: the name of an import job's own file, not of an upload");
      // The version there now is the one the job imports: one put again under the name while the
      // job runs would otherwise have its rows mixed with the first one's (a run resumes by row
      // number), or end a read half-way. The object store keeps no older version to read instead.
      const upload = await this.infra(() => this.options.jobs.upload(request.object!));
      // A fixed message: replies never echo what the caller sent (docs/api.md).
      if (upload === undefined) throw notFound('object: no such file in the imports bucket');
      if (upload.link) throw invalidRequest('object: a link, not a file: upload the file itself');
      const { version } = upload;
      if (version.size > MAX_IMPORT_FILE_BYTES) throw invalidRequest(`object: larger than ${MAX_IMPORT_FILE_BYTES / 1024 / 1024} MiB; split the file`);
      source = { object: request.object!, sealed: false, version };
    }
    const keys: SealedKeys = { ...(request.password ? { password: request.password } : {}), ...(request.psk ? { psk: request.psk } : {}) };
    const at = now.toISOString();
    const job: ImportJob = {
      jobId,
      tenantId,
      format: request.format,
      source,
      ...(Object.keys(keys).length > 0 ? { sealedKeys: seal(this.options.keyring, Buffer.from(JSON.stringify(keys), 'utf8'), SealContext.importFile(tenantId, jobId, 'keys')) } : {}),
      replace: request.replace === true,
      ...(clientId ? { clientId } : {}),
      state: 'queued',
      total: 0,
      processed: 0,
      imported: 0,
      failed: 0,
      errorChunks: [],
      createdAt: at,
      updatedAt: at,
    };
    const revision = await this.infra(() => this.options.jobs.create(job));
    // Known here at once (the watch brings it a moment later): this worker may start it now.
    this.unfinished?.set(jobKey(tenantId, jobId), { job, revision });
    void this.scan();
    return { jobId };
  }

  async status(request: OathImportStatusRequest, now: Date): Promise<OathImportStatusReply> {
    const { tenantId, jobId } = request;
    await this.options.requireTenant(tenantId, now);
    const found = await this.infra(() => this.options.jobs.get(tenantId, jobId));
    if (!found) throw notFound('unknown import job');
    const { job } = found;
    let errors: { errorsCsv: string; errorsTruncated?: true } | undefined;
    if (job.errorsObject) {
      // Only the part the reply shows: an error file of 200,000 refused rows is some 20 MB, and the admin polls.
      const head = await this.infra(() => this.options.jobs.readHead(job.errorsObject!, MAX_INLINE_ERRORS_BYTES));
      if (head) {
        errors = head.size <= MAX_INLINE_ERRORS_BYTES ? { errorsCsv: head.bytes.toString('utf8') } : { errorsCsv: truncateCsv(head.bytes, MAX_INLINE_ERRORS_BYTES), errorsTruncated: true };
      }
    }
    return {
      jobId,
      format: job.format,
      state: job.state,
      total: job.total,
      processed: job.processed,
      imported: job.imported,
      failed: job.failed,
      ...(job.error ? { reason: job.error } : {}),
      ...(errors ?? {}),
      ...(job.errorsObject ? { errorsObject: job.errorsObject } : {}),
      createdAt: job.createdAt,
      updatedAt: job.updatedAt,
      ...(job.finishedAt ? { finishedAt: job.finishedAt } : {}),
    };
  }

  /**
   * For the offboarding of a deleted tenant, before it purges the tenant's hardware tokens: ends
   * every unfinished job of the tenant (failed, TENANT_DELETED, its sealed keys dropped; by
   * compare-and-set, so no worker can checkpoint or claim it afterwards), then waits until none of
   * their workers can still write a token: a worker whose lease it took says it stopped by removing
   * the lease (once its batch under way has ended), and one that does not (stopped, cut off) writes
   * nothing after IMPORT_LEASE_MS (ROW_LEASE_MARGIN_MS), after which the lease is removed here. A job
   * created after this looked is ended by its worker before its first row (the tenant is deleted
   * by then). Idempotent: a resumed offboarding finds the jobs ended, and waits again only for those
   * whose lease is still there. Calls `working` while it waits; stops when `signal` aborts.
   */
  async endTenantJobs(tenantId: string, working: () => void, signal?: AbortSignal): Promise<void> {
    const { jobs, log } = this.options;
    // The tenant's jobs, listed once: one created after this (its request checked the tenant just
    // before the deletion) is ended by its worker before its first row, the tenant deleted by then.
    const jobIds = (await jobs.ofTenant(tenantId)).map(({ job }) => job.jobId);
    // By job: when, on this clock, its worker can write nothing more (IMPORT_LEASE_MS after the lease was taken).
    const stopsBy = new Map<string, number>();
    let lastWorking = Date.now();
    for (let left = jobIds; left.length > 0; ) {
      if (signal?.aborted) throw new Error('stopping: the offboarding resumes at its redelivery');
      const waiting: string[] = [];
      for (const jobId of left) {
        const stored = await jobs.get(tenantId, jobId);
        if (!stored) continue;
        const { job, revision } = stored;
        const at = new Date().toISOString();
        if (isUnfinished(job)) {
          // Its lease stays: it says a worker may be in the middle of a batch (ImportJob.lease).
          const { sealedKeys: _keys, ...rest } = job;
          const ended: ImportJob = { ...rest, state: 'failed', error: TENANT_DELETED, finishedAt: at, updatedAt: at };
          if (!(await this.updated(ended, revision))) {
            waiting.push(jobId); // its worker wrote meanwhile (a heartbeat, a checkpoint, its end): read again
            continue;
          }
          log.info('import job ended: its tenant was deleted', { tenantId, jobId });
          if (job.lease) {
            stopsBy.set(jobId, Date.now() + IMPORT_LEASE_MS);
            waiting.push(jobId);
          }
          continue;
        }
        if (job.error !== TENANT_DELETED || !job.lease) continue;
        // Ended (here, or by an offboarding before this one) and its worker has not said it stopped.
        const by = stopsBy.get(jobId) ?? Date.now() + IMPORT_LEASE_MS;
        stopsBy.set(jobId, by);
        if (Date.now() < by) {
          waiting.push(jobId);
          continue;
        }
        const { lease: _lease, ...rest } = job;
        if (!(await this.updated({ ...rest, updatedAt: at }, revision))) waiting.push(jobId);
      }
      left = waiting;
      if (left.length === 0) return;
      if (Date.now() - lastWorking >= WORKING_EVERY_MS) {
        working();
        lastWorking = Date.now();
      }
      await sleep(ENDED_POLL_MS, undefined, signal ? { signal } : {}).catch(() => undefined);
    }
  }

  /** Writes the job if it is still at `revision`: false when another wrote it meanwhile; any other failure throws (the offboarding is retried). */
  private async updated(job: ImportJob, revision: number): Promise<boolean> {
    try {
      await this.options.jobs.update(job, revision);
      return true;
    } catch (error) {
      if (isWrongLastSequence(error)) return false;
      throw error;
    }
  }

  /**
   * Deletes the uploads no import job claimed in time (OATH_UNCLAIMED_UPLOAD_SECONDS): a file put
   * into MFA_IMPORTS that oath.import never names (a console page left after its upload, an import
   * that was not answered, a caller that never asks) would otherwise keep its seeds, in plaintext
   * for a plaintext file, and its share of the bucket for 7 days. The time counts from when this
   * instance first saw the upload, so no uploader's clock matters (after a restart it starts
   * again). An upload an unfinished job reads is kept (the job deletes it when it ends), and so are
   * an unfinished job's own files and an ended job's error file (keptBy); a job's file whose job
   * is gone or ended is not. Chunks no file names (an upload whose writer died before its record,
   * a deletion cut short) go the same way once their count has not changed for that time: they
   * would otherwise hold their share of the bucket's limit for 7 days, and refuse uploads. Answers
   * how many files and sets of stray chunks it deleted.
   */
  async sweepUploads(now = Date.now()): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    const { jobs, log } = this.options;
    try {
      const present = new Set<string>();
      let due: Array<{ name: string; job?: { tenantId: string; jobId: string } }> = [];
      for (const { name, nuid, job } of await jobs.files()) {
        const key = `${name}\n${nuid}`;
        present.add(key);
        const first = this.firstSeen.get(key);
        if (first === undefined) this.firstSeen.set(key, now);
        else if (now - first >= jobs.settings.unclaimedUploadMs) due.push({ name, ...(job ? { job } : {}) });
      }
      // Chunks no record names, by their count: one still growing is an upload being written.
      const strays: string[] = [];
      for (const { nuid, chunks } of await jobs.strayChunks()) {
        const key = `\0chunks\0${nuid}\0${chunks}`;
        present.add(key);
        const first = this.firstSeen.get(key);
        if (first === undefined) this.firstSeen.set(key, now);
        else if (now - first >= jobs.settings.unclaimedUploadMs) strays.push(nuid);
      }
      for (const key of this.firstSeen.keys()) if (!present.has(key)) this.firstSeen.delete(key);
      // Kept as the watch says; the rest is checked against the bucket itself, which has a job
      // another instance has just created.
      if (this.unfinished && this.errorFiles) {
        const watched = keptBy([...this.unfinished.values()].map(({ job }) => job));
        const errorFiles = this.errorFiles;
        due = due.filter((file) => !watched(file) && !(file.job && errorFiles.get(jobKey(file.job.tenantId, file.job.jobId)) === file.name));
      }
      let deleted = 0;
      if (due.length > 0) {
        const kept = keptBy((await jobs.all()).map(({ job }) => job));
        for (const file of due) {
          if (kept(file) || !(await jobs.deleteObject(file.name))) continue;
          deleted++;
          const tenantId = file.name.slice(0, file.name.indexOf('/'));
          if (file.job) log.info('import job file deleted: its job is gone or ended', { tenantId, object: file.name });
          else log.info('import upload deleted: no import job claimed it in time', { tenantId, object: file.name });
        }
      }
      for (const nuid of strays) {
        if (!(await jobs.purgeStrayChunks(nuid))) continue;
        deleted++;
        log.info('import chunks deleted: no file of the imports bucket names them', { nuid });
      }
      if (jobs.maxBytes > jobs.settings.maxBytes && (await jobs.tighten()) === jobs.settings.maxBytes) log.info('MFA_IMPORTS is back within OATH_IMPORTS_MAX_BYTES', { maxBytes: jobs.maxBytes });
      return deleted;
    } catch (error) {
      log.warn('looking for unclaimed import uploads failed', { error });
      return 0;
    } finally {
      this.sweeping = false;
    }
  }

  /** Says so when MFA_IMPORTS held more than its configured limit at boot (the limit is lowered as it empties). */
  private warnAboveLimit(): void {
    const { jobs, log } = this.options;
    if (jobs.maxBytes > jobs.settings.maxBytes) {
      log.warn('MFA_IMPORTS holds more than OATH_IMPORTS_MAX_BYTES: its limit is what it holds until uploads and error files expire', {
        configured: jobs.settings.maxBytes,
        limit: jobs.maxBytes,
      });
    }
  }

  /**
   * Claims and runs jobs nobody runs, oldest first, while this worker runs fewer than
   * its jobsPerInstance, and none of a tenant it runs a job of already: a tenant's second
   * job waits for its first (or for another instance), another tenant's starts at once.
   */
  private async scan(): Promise<void> {
    if (this.stopped) return;
    if (this.scanning) {
      this.rescan = true;
      return;
    }
    this.scanning = true;
    try {
      if (this.running.size >= this.jobsPerInstance) return;
      const now = Date.now();
      const jobs = this.unfinished ? [...this.unfinished.values()] : await this.options.jobs.all();
      const candidates = jobs
        .filter(({ job }) => (job.state === 'queued' || job.state === 'running') && (job.lease === undefined || job.lease.until < now))
        .sort((a, b) => a.job.createdAt.localeCompare(b.job.createdAt));
      for (const candidate of candidates) {
        if (this.stopped || this.running.size >= this.jobsPerInstance) break;
        const { tenantId } = candidate.job;
        if (this.running.has(tenantId)) continue;
        const claimed = await this.claim(candidate);
        if (!claimed) continue;
        this.running.set(
          tenantId,
          this.run(claimed).finally(() => {
            this.running.delete(tenantId);
            void this.scan();
          }),
        );
      }
    } catch (error) {
      this.options.log.warn('import job scan failed', { error });
    } finally {
      this.scanning = false;
      if (this.rescan) {
        this.rescan = false;
        void this.scan();
      }
    }
  }

  private async claim({ job, revision }: StoredJob): Promise<StoredJob | undefined> {
    const next: ImportJob = { ...job, state: 'running', lease: { owner: this.owner, until: Date.now() + IMPORT_LEASE_MS }, updatedAt: new Date().toISOString() };
    try {
      return { job: next, revision: await this.options.jobs.update(next, revision) };
    } catch {
      return undefined; // another worker was quicker
    }
  }

  private async run(claimed: StoredJob): Promise<void> {
    let current = claimed;
    const { tenantId, jobId } = current.job;
    const log = this.options.log;
    // Every write of the job goes through this chain: the heartbeat and the checkpoints never race.
    let writes: Promise<unknown> = Promise.resolve();
    const write = (change: (job: ImportJob) => ImportJob): Promise<void> => {
      const next = writes.then(async () => {
        const { lease: _lease, ...changed } = change(current.job);
        // An ended job keeps no lease: one there would say that another ended it while this worker ran.
        const lease = isUnfinished(changed) ? { lease: { owner: this.owner, until: Date.now() + IMPORT_LEASE_MS } } : {};
        const job: ImportJob = { ...changed, ...lease, updatedAt: new Date().toISOString() };
        try {
          current = { job, revision: await this.options.jobs.update(job, current.revision) };
        } catch (error) {
          throw new LeaseLost(`lost the lease of import job ${jobId}`, { cause: error });
        }
      });
      writes = next.catch(() => undefined);
      return next;
    };
    // Another wrote the job since this worker last did (the offboarding of its deleted tenant ended
    // it, a worker that took it for dead claimed it): the lanes stop at their next write.
    let overwritten = false;
    const heartbeat = setInterval(
      () =>
        void write((job) => job).catch((error: unknown) => {
          if (error instanceof LeaseLost && isWrongLastSequence(error.cause)) overwritten = true;
        }),
      HEARTBEAT_MS,
    );
    heartbeat.unref();
    // Asked right before each write of a row: the job is still this worker's, and the lease it last
    // wrote still has ROW_LEASE_MARGIN_MS to run (more than one write's timeout), so that nothing
    // it writes lands after IMPORT_LEASE_MS from when another took the job.
    const mayWrite = () => {
      if (overwritten) throw new LeaseLost(`import job ${jobId} was written by another`);
      if ((current.job.lease?.until ?? 0) - Date.now() <= ROW_LEASE_MARGIN_MS) throw new LeaseRunningOut(`the lease of import job ${jobId} runs out`);
    };
    log.info('import job running', { tenantId, jobId, format: current.job.format, resumedAt: current.job.processed });
    // One for the run: the count and the import read the file with the same derived key, and the psk is zeroed at the end.
    let keys: PskcKeys | undefined;
    // The rows read and not yet handed to a batch: their secrets are zeroed however the run ends.
    let batch: Array<{ index: number; row: ParsedRow }> = [];
    try {
      // A job of a deleted tenant is never started: it is closed at once, nothing of its file read.
      await this.checkTenant(tenantId);
      keys = this.keysOf(current.job);
      // Every row done: the run before stopped while closing the job, its file (and error chunks) maybe deleted already.
      const closing = current.job.total > 0 && current.job.processed >= current.job.total;
      if (!closing && current.job.total === 0) {
        let total = 0;
        for await (const row of this.rows(current.job, keys)) {
          total++;
          if (row.ok) row.token.secret.fill(0);
        }
        await write((job) => ({ ...job, total }));
      }
      let index = 0;
      const skip = current.job.processed;
      for await (const row of closing ? [] : this.rows(current.job, keys)) {
        index++;
        if (index <= skip) {
          // Done by an earlier run: read again only to find where to resume.
          zeroRow(row);
          continue;
        }
        batch.push({ index, row });
        if (batch.length === IMPORT_BATCH) {
          const full = batch;
          batch = [];
          if (!(await this.runBatch(current.job, full, write, mayWrite)) || this.stopped) return;
        }
      }
      if (batch.length > 0) {
        const last = batch;
        batch = [];
        if (!(await this.runBatch(current.job, last, write, mayWrite))) return;
      }
      await this.finish(current.job, write, undefined);
      log.info('import job completed', { tenantId, jobId, imported: current.job.imported, failed: current.job.failed });
    } catch (error) {
      if (error instanceof LeaseLost) {
        // Ended by the offboarding of its deleted tenant, which waits for this run to say it stopped:
        // no lane is importing any more (a batch ends only once all of them have).
        if (await this.acknowledgeEnd(tenantId, jobId)) log.info('import job ended: its tenant was deleted', { tenantId, jobId });
        else if (error instanceof LeaseRunningOut) log.warn('import job stopped: it could not keep its lease; it resumes from its last checkpoint', { tenantId, jobId, reason: error.message });
        else log.warn('import job taken over by another worker', { tenantId, jobId });
        return;
      }
      // Closing it fails with LeaseLost when the offboarding of its deleted tenant ended it first: it is told this run stopped.
      const notClosed = async (e: unknown) => {
        if (!(e instanceof LeaseLost && (await this.acknowledgeEnd(tenantId, jobId)))) log.warn('import job not closed', { tenantId, jobId, error: e });
      };
      if (error instanceof TenantGone) {
        await this.finish(current.job, write, TENANT_DELETED, false).catch(notClosed);
        log.info('import job failed', { tenantId, jobId, reason: TENANT_DELETED });
        return;
      }
      // A refusal fails the job; `unavailable` (a store that did not answer: a JetStream timeout,
      // a leader election) is infrastructure trouble like any other, below.
      if (error instanceof ImportFileError || (error instanceof ContractError && error.code !== 'unavailable')) {
        await this.finish(current.job, write, error.message).catch(notClosed);
        log.info('import job failed', { tenantId, jobId, reason: error.message });
        return;
      }
      // Infrastructure trouble: the lease runs out and a worker (maybe this one) resumes later.
      log.warn('import job interrupted; it resumes from its last checkpoint', { tenantId, jobId, error });
    } finally {
      for (const { row } of batch) zeroRow(row);
      keys?.dispose();
      clearInterval(heartbeat);
      await writes;
    }
  }

  /**
   * One batch: its rows through the lanes, its rejected rows into an error chunk, then the
   * checkpoint. A row that fails (the event store unavailable) stops every lane before its next
   * row, and the batch ends only once no lane is importing: nothing of the run goes on after it,
   * and the secrets of the rows no lane reached are zeroed with the others. False when the worker
   * stopped before the batch's turn came: nothing of it was done.
   */
  private async runBatch(
    job: ImportJob,
    batch: Array<{ index: number; row: ParsedRow }>,
    write: (change: (job: ImportJob) => ImportJob) => Promise<void>,
    mayWrite: () => void,
  ): Promise<boolean> {
    const outcomes = new Map<number, { row: ParsedRow; outcome: RowOutcome }>();
    let done: (() => void) | undefined;
    try {
      // The batches of this instance's jobs take turns; the lease is renewed meanwhile.
      done = await this.turns.take();
      // Stopping while it waited for its turn: nothing of it is done, and its rows are redone from
      // the last checkpoint where the job resumes (a stop waits for one batch per job, not four).
      if (this.stopped) return false;
      // Once a batch, not once a row: the tenant's offboarding ends the job and waits for its
      // worker before it purges the tokens, so a batch under way at the deletion is not lost.
      await this.checkTenant(job.tenantId);
      const lanes: Array<typeof batch> = Array.from({ length: LANES }, () => []);
      for (const item of batch) {
        const key = item.row.ok ? (item.row.token.userId ?? item.row.token.serialNumber) : String(item.index);
        lanes[laneOf(key)]!.push(item);
      }
      const now = () => new Date();
      let failed = false;
      const settled = await Promise.allSettled(
        lanes.map(async (lane) => {
          for (const { index, row } of lane) {
            if (failed) return;
            if (!row.ok) {
              outcomes.set(index, { row, outcome: { imported: false, reason: row.rejected.reason } });
              continue;
            }
            try {
              outcomes.set(index, { row, outcome: await this.options.tokens.importToken(job, row.token, now(), mayWrite) });
            } catch (error) {
              failed = true;
              throw error;
            } finally {
              row.token.secret.fill(0);
            }
          }
        }),
      );
      // A lost job first: its run says it stopped (acknowledgeEnd) whatever else failed beside it.
      const failures = settled.flatMap((lane) => (lane.status === 'rejected' ? [lane.reason as unknown] : []));
      const failure = failures.find((reason) => reason instanceof LeaseLost) ?? failures[0];
      if (failure !== undefined) throw failure;
    } finally {
      for (const { row } of batch) zeroRow(row);
      done?.();
    }
    const rejected: RejectedRow[] = [];
    let imported = 0;
    for (const { index } of batch) {
      const { row, outcome } = outcomes.get(index)!;
      if (outcome.imported) {
        imported++;
        continue;
      }
      const seen = row.ok ? { serialNumber: row.token.serialNumber, ...(row.token.userId ? { userId: row.token.userId } : {}) } : row.rejected;
      rejected.push({ row: index, ...(seen.serialNumber ? { serialNumber: seen.serialNumber } : {}), ...(seen.userId ? { userId: seen.userId } : {}), reason: outcome.imported ? '' : outcome.reason });
    }
    const chunk = Math.floor((batch[0]!.index - 1) / IMPORT_BATCH);
    if (rejected.length > 0) await this.infra(() => this.options.jobs.putObject(jobObjects(job.tenantId, job.jobId).errorChunk(chunk), Buffer.from(errorLines(rejected), 'utf8')));
    await write((j) => ({
      ...j,
      processed: j.processed + batch.length,
      imported: j.imported + imported,
      failed: j.failed + rejected.length,
      errorChunks: rejected.length > 0 && !j.errorChunks.includes(chunk) ? [...j.errorChunks, chunk] : j.errorChunks,
    }));
    return true;
  }

  /**
   * The error file from the chunks (not for a deleted tenant: `errorFile` false, the chunks only
   * deleted), the file and keys dropped, the job closed (completed, or failed with `error`).
   */
  private async finish(job: ImportJob, write: (change: (job: ImportJob) => ImportJob) => Promise<void>, error: string | undefined, errorFile = true): Promise<void> {
    const objects = jobObjects(job.tenantId, job.jobId);
    let errorsObject: string | undefined;
    if (!errorFile) {
      for (const chunk of job.errorChunks) await this.options.jobs.deleteObject(objects.errorChunk(chunk));
    } else if (job.errorChunks.length > 0) {
      const parts: Buffer[] = [Buffer.from(`${OATH_ERRORS_CSV_HEADER}\r\n`, 'utf8')];
      let missing = false;
      for (const chunk of [...job.errorChunks].sort((a, b) => a - b)) {
        const bytes = await this.infra(() => this.options.jobs.getObject(objects.errorChunk(chunk)));
        if (bytes) parts.push(Buffer.from(bytes));
        else missing = true;
      }
      // Chunks go only once the error file is written: with one gone, a file there is the whole one (a run stopped after writing it).
      if (!missing || (await this.infra(() => this.options.jobs.size(objects.errors))) === undefined) {
        await this.infra(() => this.options.jobs.putObject(objects.errors, Buffer.concat(parts)));
      }
      for (const chunk of job.errorChunks) await this.options.jobs.deleteObject(objects.errorChunk(chunk));
      errorsObject = objects.errors;
    }
    // Only the version the job read: an upload put again under its name is the tenant's new file.
    await this.options.jobs.deleteObject(job.source.object, job.source.version);
    await write((j) => {
      const { sealedKeys: _keys, lease: _lease, ...rest } = j;
      return {
        ...rest,
        state: error === undefined ? 'completed' : 'failed',
        ...(error !== undefined ? { error } : {}),
        ...(errorsObject ? { errorsObject } : {}),
        finishedAt: new Date().toISOString(),
      };
    });
  }

  /** Throws TenantGone when the tenant was deleted (not_found); any other failure as it comes. */
  private async checkTenant(tenantId: string): Promise<void> {
    try {
      await this.options.requireTenant(tenantId, new Date());
    } catch (error) {
      if (error instanceof ContractError && error.code === 'not_found') throw new TenantGone(TENANT_DELETED);
      throw error;
    }
  }

  /**
   * After this run lost its lease: if the job was ended by another while this instance held it
   * (the offboarding of its deleted tenant), removes the lease, saying that this run writes nothing
   * more. True when it did.
   */
  private async acknowledgeEnd(tenantId: string, jobId: string): Promise<boolean> {
    try {
      const stored = await this.options.jobs.get(tenantId, jobId);
      if (!stored || isUnfinished(stored.job) || stored.job.lease?.owner !== this.owner) return false;
      const { lease: _lease, ...rest } = stored.job;
      await this.options.jobs.update({ ...rest, updatedAt: new Date().toISOString() }, stored.revision);
      return true;
    } catch {
      return false; // the offboarding removes the lease itself once it has run out
    }
  }

  /** The job's PSKC password or psk, for one run: the caller disposes of it. */
  private keysOf(job: ImportJob): PskcKeys {
    const make = this.options.pskcKeys ?? ((given) => new PskcKeys(given));
    if (!job.sealedKeys) return make({});
    const opened = open(this.options.keyring, job.sealedKeys, SealContext.importFile(job.tenantId, job.jobId, 'keys'));
    let sealed: SealedKeys;
    try {
      sealed = JSON.parse(opened.toString('utf8')) as SealedKeys;
    } finally {
      opened.fill(0);
    }
    return make({ ...(sealed.password ? { password: sealed.password } : {}), ...(sealed.psk ? { psk: Buffer.from(sealed.psk, 'hex') } : {}) });
  }

  /** The job's file, parsed from the start; a file this service sealed is zeroed once read (or the reading stops). */
  private async *rows(job: ImportJob, keys: PskcKeys): AsyncGenerator<ParsedRow> {
    let input: Buffer | AsyncIterable<Buffer>;
    if (job.source.sealed) {
      const sealed = await this.infra(() => this.options.jobs.getObject(job.source.object));
      if (!sealed) throw new ImportFileError('the file of this job is gone');
      input = open(this.options.keyring, Buffer.from(sealed).toString('utf8'), SealContext.importFile(job.tenantId, job.jobId, 'file'));
    } else {
      const stream = await this.infra(() => this.options.jobs.readObject(job.source.object, job.source.version));
      // The job's error is read back by whoever asks its status: it names no value the caller sent.
      if (!stream) throw new ImportFileError(UPLOAD_GONE);
      input = stream;
    }
    try {
      yield* this.options.parse ? this.options.parse(job.format, input, keys) : job.format === 'csv' ? parseCsv(input) : parsePskc(input, keys);
    } catch (error) {
      // The version read went in the middle of the read (put again, or deleted).
      throw error instanceof UploadChanged ? fileErrorOf(error) : error;
    } finally {
      if (Buffer.isBuffer(input)) input.fill(0);
    }
  }

  private async infra<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof ContractError || error instanceof ImportFileError) throw error;
      if (error instanceof UploadChanged) throw fileErrorOf(error);
      this.options.log.warn('imports store call failed', { error });
      throw unavailable('imports store unavailable', error);
    }
  }
}

/**
 * Which files of MFA_IMPORTS `jobs` keep: an upload an unfinished job reads; a job's own file
 * (its sealed file, error chunks) while the job is unfinished, and its error file once it ended.
 * A job's file whose job is not there (a name forged by a holder of JetStream rights, a job that
 * expired) or ended (a deletion that failed) is not kept: it holds room, and a sealed file seeds.
 */
function keptBy(jobs: readonly ImportJob[]): (file: { name: string; job?: { tenantId: string; jobId: string } }) => boolean {
  const unfinished = (job: ImportJob) => job.state === 'queued' || job.state === 'running';
  const claimed = new Set(jobs.filter(unfinished).map((job) => job.source.object));
  const byId = new Map(jobs.map((job) => [`${job.tenantId}\n${job.jobId}`, job]));
  return (file) => {
    if (!file.job) return claimed.has(file.name);
    const job = byId.get(`${file.job.tenantId}\n${file.job.jobId}`);
    return job !== undefined && (unfinished(job) || file.name === job.errorsObject);
  };
}

/**
 * One batch at a time, handed out in the order asked. With at most one job of a tenant per
 * instance, that is round robin between the tenants whose jobs run here: a job asks for its next
 * turn only after its batch, behind every job that asked meanwhile, so none waits more than a
 * batch of each other job, and none is starved.
 */
class Turns {
  private busy = false;
  private readonly waiting: Array<() => void> = [];

  /** Resolves when it is the caller's turn, with what ends it (call it once). */
  async take(): Promise<() => void> {
    if (this.busy) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.busy = true;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.busy = false;
    };
  }
}

/** The job's reason when its upload changed under it. */
function fileErrorOf(error: UploadChanged): ImportFileError {
  return new ImportFileError(error.replaced ? UPLOAD_REPLACED : UPLOAD_GONE);
}

function laneOf(key: string): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
  return Math.abs(h) % LANES;
}

/** Rows of the error file (no header): row, user, serial, failure reason; spreadsheet formulas defused. */
function errorLines(rows: readonly RejectedRow[]): string {
  return stringify(
    rows.map((r) => [String(r.row), defuse(r.userId ?? ''), defuse(r.serialNumber ?? ''), defuse(r.reason)]),
    { record_delimiter: '\r\n' },
  );
}

/** A cell a spreadsheet would read as a formula gets a leading apostrophe (OWASP CSV injection). */
function defuse(cell: string): string {
  return /^[=+\-@\t\r]/.test(cell) ? `'${cell}` : cell;
}

/** The first whole lines of `csv` within `max` bytes. */
function truncateCsv(csv: Buffer, max: number): string {
  const cut = csv.subarray(0, max).toString('utf8');
  const end = cut.lastIndexOf('\r\n');
  return end > 0 ? cut.slice(0, end + 2) : cut;
}
