import { Readable } from 'node:stream';
import { ensureReplicas, provision, type NatsClients } from '@mfa/messaging';
import { StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { IMPORT_RETENTION_SECONDS, IMPORTS_BUCKET, type OathImportFormat } from '@mfa/contracts';

/** The key-value bucket of import jobs: one entry per job, updated with compare-and-set. */
export const IMPORT_JOBS_BUCKET = 'MFA_IMPORT_JOBS';

/**
 * An import job as stored. The worker that holds the lease (`lease.until` in the future) is the
 * only one that changes it; every change is conditional on the revision it read, so two instances
 * can never both think they run the same job.
 */
export interface ImportJob {
  jobId: string;
  tenantId: string;
  format: OathImportFormat;
  /** The file in MFA_IMPORTS; `sealed` when the service sealed it (a file sent inline), else an upload as the admin put it. */
  source: { object: string; sealed: boolean };
  /** PSKC password or pre-shared key, sealed (SealContext.importFile ... 'keys'); dropped when the job ends. */
  sealedKeys?: string | undefined;
  replace: boolean;
  /** The client that asked for it (audit), if known. */
  clientId?: string | undefined;
  state: 'queued' | 'running' | 'completed' | 'failed';
  total: number;
  processed: number;
  imported: number;
  failed: number;
  /** Batches (by index) whose rejected rows are in an error chunk object. */
  errorChunks: number[];
  error?: string | undefined;
  errorsObject?: string | undefined;
  createdAt: string;
  updatedAt: string;
  finishedAt?: string | undefined;
  lease?: { owner: string; until: number } | undefined;
}

export interface StoredJob {
  job: ImportJob;
  revision: number;
}

/** The job's objects in MFA_IMPORTS, under the tenant's prefix. */
export const jobObjects = (tenantId: string, jobId: string) => ({
  source: `${tenantId}/jobs/${jobId}/source`,
  errorChunk: (batch: number) => `${tenantId}/jobs/${jobId}/errors/${batch}`,
  errors: `${tenantId}/jobs/${jobId}/errors.csv`,
});

/**
 * Where import jobs live: their records in the key-value bucket MFA_IMPORT_JOBS, their files and
 * error files in the object store MFA_IMPORTS. Both keep entries for IMPORT_RETENTION_SECONDS after
 * their last change, and get STREAM_REPLICAS replicas like every stream of the service.
 */
export class ImportJobs {
  private constructor(
    private readonly kv: KV,
    private readonly objects: ObjectStore,
  ) {}

  static async open(nats: NatsClients, replicas: number): Promise<ImportJobs> {
    const { nc, jsm } = nats;
    const kv = await provision(`provisioning bucket ${IMPORT_JOBS_BUCKET}`, () =>
      new Kvm(nc).create(IMPORT_JOBS_BUCKET, { replicas, history: 1, ttl: IMPORT_RETENTION_SECONDS * 1000, storage: StorageType.File }),
    );
    const objects = await provision(`provisioning bucket ${IMPORTS_BUCKET}`, () =>
      new Objm(nc).create(IMPORTS_BUCKET, { replicas, storage: StorageType.File, ttl: IMPORT_RETENTION_SECONDS * 1_000_000_000 }),
    );
    // Buckets made before STREAM_REPLICAS was raised keep their replicas through create: scale them.
    await ensureReplicas(jsm, `KV_${IMPORT_JOBS_BUCKET}`, replicas);
    await ensureReplicas(jsm, `OBJ_${IMPORTS_BUCKET}`, replicas);
    return new ImportJobs(kv, objects);
  }

  private key(tenantId: string, jobId: string): string {
    return `${tenantId}.${jobId}`;
  }

  /** Records a new job; throws when the id is taken. */
  async create(job: ImportJob): Promise<number> {
    return this.kv.create(this.key(job.tenantId, job.jobId), JSON.stringify(job));
  }

  async get(tenantId: string, jobId: string): Promise<StoredJob | undefined> {
    const entry = await this.kv.get(this.key(tenantId, jobId));
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return undefined;
    return { job: entry.json<ImportJob>(), revision: entry.revision };
  }

  /** Writes `job` if the stored one is still at `revision`; the new revision. Throws when it moved. */
  async update(job: ImportJob, revision: number): Promise<number> {
    return this.kv.update(this.key(job.tenantId, job.jobId), JSON.stringify(job), revision);
  }

  /**
   * Follows the bucket: `seen` gets every stored job once, then each change as it is written (an
   * ordered consumer, which nats.js restarts after a reconnect); a deleted or unreadable entry
   * comes as undefined. The workers keep the unfinished jobs from it instead of re-reading the
   * bucket at every scan.
   */
  async follow(seen: (key: string, stored: StoredJob | undefined) => void): Promise<{ stop(): void }> {
    const entries = await this.kv.watch();
    void (async () => {
      for await (const entry of entries) {
        let stored: StoredJob | undefined;
        if (entry.operation === 'PUT' && entry.length > 0) {
          try {
            stored = { job: entry.json<ImportJob>(), revision: entry.revision };
          } catch {
            stored = undefined;
          }
        }
        seen(entry.key, stored);
      }
    })().catch(() => undefined);
    return { stop: () => entries.stop() };
  }

  /** Every job still stored (the workers' scan when following the bucket is not possible). */
  async all(): Promise<StoredJob[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys()) keys.push(key);
    const jobs: StoredJob[] = [];
    for (const key of keys) {
      const [tenantId, ...rest] = key.split('.');
      const found = await this.get(tenantId!, rest.join('.'));
      if (found) jobs.push(found);
    }
    return jobs;
  }

  async putObject(name: string, bytes: Uint8Array): Promise<void> {
    await this.objects.putBlob({ name }, bytes);
  }

  /** The object's size, or undefined when there is none by that name. */
  async size(name: string): Promise<number | undefined> {
    const info = await this.objects.info(name);
    return info && !info.deleted ? info.size : undefined;
  }

  async getObject(name: string): Promise<Uint8Array | undefined> {
    return (await this.objects.getBlob(name)) ?? undefined;
  }

  /** The object as a byte stream (files of any size), or undefined. */
  async readObject(name: string): Promise<Readable | undefined> {
    const result = await this.objects.get(name);
    if (!result) return undefined;
    return Readable.fromWeb(result.data as Parameters<typeof Readable.fromWeb>[0]);
  }

  async deleteObject(name: string): Promise<void> {
    await this.objects.delete(name).catch(() => undefined);
  }
}
