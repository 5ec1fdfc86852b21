import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ensureReplicas, nextMessageOn, provision, purgeObjectVersion, type NatsClients } from '@mfa/messaging';
import { StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { IMPORT_RETENTION_SECONDS, IMPORTS_BUCKET, MAX_IMPORT_FILE_BYTES, subjectToken, type OathImportFormat } from '@mfa/contracts';

/** The key-value bucket of import jobs: one entry per job, updated with compare-and-set. */
export const IMPORT_JOBS_BUCKET = 'MFA_IMPORT_JOBS';

/**
 * The limits of MFA_IMPORTS (docs/operations.md, "Configuration"). Its size is bounded so that
 * uploads nobody imports can never take the JetStream storage the event streams need: each
 * JetStream server reserves it for the bucket, and a put beyond it is refused. An upload no import
 * job names is deleted after OATH_UNCLAIMED_UPLOAD_SECONDS, not kept 7 days.
 */
export const ImportStoreEnv = z.object({
  OATH_IMPORTS_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(2 * MAX_IMPORT_FILE_BYTES)
    .max(2 ** 40)
    .default(8 * MAX_IMPORT_FILE_BYTES),
  OATH_UNCLAIMED_UPLOAD_SECONDS: z.coerce.number().int().min(60).max(86_400).default(900),
});

export interface ImportStoreSettings {
  /** Bytes MFA_IMPORTS holds at most (per replica). */
  maxBytes: number;
  /** How long an upload no unfinished job reads is kept, from when an instance first saw it. */
  unclaimedUploadMs: number;
}

/** The limits from the service's configuration (loadUserSettingsConfig checks them). */
export function importStoreSettings(config: z.infer<typeof ImportStoreEnv>): ImportStoreSettings {
  return { maxBytes: config.OATH_IMPORTS_MAX_BYTES, unclaimedUploadMs: config.OATH_UNCLAIMED_UPLOAD_SECONDS * 1000 };
}

/** The stream under MFA_IMPORTS, and its subjects (the object store's layout: ADR-20). */
const STREAM = `OBJ_${IMPORTS_BUCKET}`;
const chunksSubject = (nuid: string) => `$O.${IMPORTS_BUCKET}.C.${nuid}`;

/** A job's own objects (`<tenant>/jobs/<job>/…`: a sealed file, error chunks, the error file), kept by the job's lifecycle. */
const JOB_OBJECT = /^([^/]+)\/jobs\/([^/]+)\//;

/** Whether `name` is one of a job's own objects (`<tenant>/jobs/<job>/…`), never an upload. */
export const isJobObject = (name: string): boolean => JOB_OBJECT.test(name);

/**
 * One version of an object: what the object store wrote under a name by one put. A put again
 * under the same name writes new chunks under a new content id and then purges the old ones, so
 * a version is readable until its name is put again or deleted, and never changes meanwhile.
 */
export interface ObjectVersion {
  /** The object store's id of the content (its chunks' subject). */
  nuid: string;
  /** `SHA-256=<base64url>` of the content, as the object store recorded it. */
  digest: string;
  size: number;
}

/**
 * The version of an upload a job pinned is no longer there: its name was put again (`replaced`),
 * or it was deleted, while the job still had to read it.
 */
export class UploadChanged extends Error {
  override name = 'UploadChanged';

  constructor(readonly replaced: boolean) {
    super(replaced ? 'the upload was replaced under its name' : 'the upload was deleted');
  }
}

/**
 * An import job as stored. The worker that holds the lease (`lease.until` in the future) is the
 * only one that changes it; every change is conditional on the revision it read, so two instances
 * can never both think they run the same job.
 */
export interface ImportJob {
  jobId: string;
  tenantId: string;
  format: OathImportFormat;
  /**
   * The file in MFA_IMPORTS; `sealed` when the service sealed it (a file sent inline), else an
   * upload as the admin put it, and then `version`: the one oath.import saw, the only one the job
   * reads (absent in jobs recorded before versions were pinned, which read whatever is there).
   */
  source: { object: string; sealed: boolean; version?: ObjectVersion | undefined };
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
  /**
   * The worker's claim. An ended job has one only when it was ended by someone else while its
   * worker held it (the offboarding of its deleted tenant): that worker may still be in the middle
   * of a batch, and removes the lease once it has stopped.
   */
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
 * A job's key in MFA_IMPORT_JOBS: `<tenant>.<job>`. A tenant id that ends in "." or holds ".."
 * (valid ids) would make a key with an empty token, which NATS refuses: such an id is written
 * `=<base64url>` instead ("=" is in no tenant id, and base64url has no "."). Every other id is kept
 * as it is, so the keys of jobs stored before stay theirs.
 */
export function jobKey(tenantId: string, jobId: string): string {
  const tenant = tenantId.endsWith('.') || tenantId.includes('..') ? `=${subjectToken(tenantId)}` : tenantId;
  return `${tenant}.${jobId}`;
}

/**
 * Where import jobs live: their records in the key-value bucket MFA_IMPORT_JOBS, their files and
 * error files in the object store MFA_IMPORTS. Both keep entries for IMPORT_RETENTION_SECONDS after
 * their last change, and get STREAM_REPLICAS replicas like every stream of the service; MFA_IMPORTS
 * holds at most `settings.maxBytes`.
 */
export class ImportJobs {
  private constructor(
    private readonly kv: KV,
    private readonly objects: ObjectStore,
    private readonly jsm: JetStreamManager,
    readonly settings: ImportStoreSettings,
    private appliedMaxBytes: number,
  ) {}

  static async open(nats: NatsClients, replicas: number, settings: ImportStoreSettings = importStoreSettings(ImportStoreEnv.parse({}))): Promise<ImportJobs> {
    const { nc, jsm } = nats;
    const kv = await provision(`provisioning bucket ${IMPORT_JOBS_BUCKET}`, () =>
      new Kvm(nc).create(IMPORT_JOBS_BUCKET, { replicas, history: 1, ttl: IMPORT_RETENTION_SECONDS * 1000, storage: StorageType.File }),
    );
    const objects = await provision(`provisioning bucket ${IMPORTS_BUCKET}`, () =>
      new Objm(nc)
        .create(IMPORTS_BUCKET, { replicas, storage: StorageType.File, ttl: IMPORT_RETENTION_SECONDS * 1_000_000_000, max_bytes: settings.maxBytes })
        .catch((error: unknown) => Promise.reject(maxBytesError(settings.maxBytes, error))),
    );
    // Buckets made before STREAM_REPLICAS was raised keep their replicas through create: scale them.
    await ensureReplicas(jsm, `KV_${IMPORT_JOBS_BUCKET}`, replicas);
    await ensureReplicas(jsm, STREAM, replicas);
    // And their limit (none, or another OATH_IMPORTS_MAX_BYTES): set it.
    const applied = await provision(`limiting bucket ${IMPORTS_BUCKET} to ${settings.maxBytes} bytes`, () => limitBytes(jsm, settings.maxBytes));
    return new ImportJobs(kv, objects, jsm, settings, applied);
  }

  /**
   * The limit MFA_IMPORTS has now: the one configured, or, while the bucket holds more than that,
   * what it holds and room for two of the largest files (set at boot or by `tighten`).
   */
  get maxBytes(): number {
    return this.appliedMaxBytes;
  }

  /** Lowers the bucket's limit towards the one configured as far as what it holds allows; the limit then. */
  async tighten(): Promise<number> {
    if (this.appliedMaxBytes > this.settings.maxBytes) this.appliedMaxBytes = await limitBytes(this.jsm, this.settings.maxBytes);
    return this.appliedMaxBytes;
  }

  private key(tenantId: string, jobId: string): string {
    return jobKey(tenantId, jobId);
  }

  /** Records a new job; throws when the id is taken. */
  async create(job: ImportJob): Promise<number> {
    return this.kv.create(this.key(job.tenantId, job.jobId), JSON.stringify(job));
  }

  async get(tenantId: string, jobId: string): Promise<StoredJob | undefined> {
    return this.read(this.key(tenantId, jobId));
  }

  private async read(key: string): Promise<StoredJob | undefined> {
    const entry = await this.kv.get(key);
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
      const found = await this.read(key);
      if (found) jobs.push(found);
    }
    return jobs;
  }

  /** The jobs of one tenant still stored (the offboarding of a deleted tenant ends those unfinished). */
  async ofTenant(tenantId: string): Promise<StoredJob[]> {
    const keys: string[] = [];
    // A job id is one token (hex): `<tenant>.*` is this tenant's jobs, not those of a tenant whose id it begins.
    for await (const key of await this.kv.keys(jobKey(tenantId, '*'))) keys.push(key);
    const jobs: StoredJob[] = [];
    for (const key of keys) {
      const found = await this.read(key);
      if (found?.job.tenantId === tenantId) jobs.push(found);
    }
    return jobs;
  }

  /**
   * Removes the records of the tenant's jobs (the offboarding of a deleted tenant, once no worker
   * can write one any more): their counts, object names and client id would otherwise stay for
   * IMPORT_RETENTION_SECONDS. A worker that still held one finds it gone at its next write (the
   * compare-and-set fails) and stops. Returns how many were removed.
   */
  async purgeTenant(tenantId: string): Promise<number> {
    const stored = await this.ofTenant(tenantId);
    for (const { job } of stored) await this.kv.purge(this.key(tenantId, job.jobId));
    return stored.length;
  }

  async putObject(name: string, bytes: Uint8Array): Promise<void> {
    await this.objects.putBlob({ name }, bytes);
  }

  /** The object's size, or undefined when there is none by that name. */
  async size(name: string): Promise<number | undefined> {
    return (await this.version(name))?.size;
  }

  /** The version the object has now, or undefined when there is none by that name. */
  async version(name: string): Promise<ObjectVersion | undefined> {
    return (await this.upload(name))?.version;
  }

  /**
   * An upload as oath.import finds it, in one read: its version, and whether the name is an object
   * store link (to another object, or to another bucket) rather than a file: an upload is the file
   * itself, and following a link would let a tenant import whatever it names.
   */
  async upload(name: string): Promise<{ version: ObjectVersion; link: boolean } | undefined> {
    const info = await this.objects.info(name);
    if (!info || info.deleted) return undefined;
    return { version: { nuid: info.nuid, digest: info.digest, size: info.size }, link: Boolean(info.options?.link) };
  }

  async getObject(name: string): Promise<Uint8Array | undefined> {
    return (await this.objects.getBlob(name)) ?? undefined;
  }

  /**
   * The first bytes of the object, at least `max` of them when it has that many (whole chunks, so
   * a little more), with its size; undefined when there is none. Only those chunks are read, one
   * request each, from the stream leader (a replica answering direct gets may lag behind a file
   * just written): an error file can reach tens of MiB, of which a status reply shows 256 KiB.
   */
  async readHead(name: string, max: number): Promise<{ bytes: Buffer; size: number } | undefined> {
    const info = await this.objects.info(name);
    if (!info || info.deleted) return undefined;
    const parts: Uint8Array[] = [];
    let read = 0;
    let seq = 0;
    for (let chunk = 0; chunk < info.chunks && read < max; chunk++) {
      const message = await nextMessageOn(this.jsm, STREAM, chunksSubject(info.nuid), seq);
      // Chunks purged under a record (see readObject): what came so far is all there is.
      if (!message) break;
      seq = message.seq;
      parts.push(message.data);
      read += message.data.length;
    }
    return { bytes: Buffer.concat(parts), size: info.size };
  }

  /**
   * The object as a byte stream (files of any size), or undefined. An object whose chunks are not
   * all there (its record written after the sweeper purged them as stray: a writer silent for
   * longer than OATH_UNCLAIMED_UPLOAD_SECONDS) counts as gone: a read of it would wait for chunks
   * that never come.
   *
   * With `pinned`, only that version is read: UploadChanged when the name holds another one now,
   * or when the version goes while it is being read (put again or deleted: the object store
   * purges its chunks). The chunks are read one by one, by the version's content id, from the
   * stream leader, and the content is checked against the version's digest at the end: a read
   * never mixes two versions, and a chunk purged under it ends it at once rather than leaving it
   * waiting for a message that never comes (as the object store's own reader would).
   */
  async readObject(name: string, pinned?: ObjectVersion): Promise<AsyncIterable<Buffer> | undefined> {
    const info = await this.objects.info(name);
    if (!info || info.deleted) return undefined;
    if (pinned && (info.nuid !== pinned.nuid || info.digest !== pinned.digest)) throw new UploadChanged(true);
    if (info.chunks > 0 && (await this.chunkCounts(chunksSubject(info.nuid))).get(info.nuid) !== info.chunks) return undefined;
    return this.readChunks(name, { nuid: info.nuid, digest: info.digest, size: info.size }, info.chunks);
  }

  private async *readChunks(name: string, version: ObjectVersion, chunks: number): AsyncGenerator<Buffer> {
    const hash = createHash('sha256');
    let seq = 0;
    for (let chunk = 0; chunk < chunks; chunk++) {
      // As in readHead: the first chunk of this version after seq.
      const message = await nextMessageOn(this.jsm, STREAM, chunksSubject(version.nuid), seq);
      if (!message) throw await this.changedFrom(name, version);
      seq = message.seq;
      hash.update(message.data);
      yield Buffer.from(message.data.buffer, message.data.byteOffset, message.data.byteLength);
    }
    const recorded = digestBytes(version.digest);
    if (recorded && !recorded.equals(hash.digest())) throw await this.changedFrom(name, version);
  }

  /** Why `version` of `name` could not be read whole: the name holds another version now, or none. */
  private async changedFrom(name: string, version: ObjectVersion): Promise<UploadChanged> {
    const now = await this.version(name);
    return new UploadChanged(now !== undefined && now.nuid !== version.nuid);
  }

  /**
   * Deletes the object and leaves nothing of it, not even a deletion marker: purges write nothing,
   * so a bucket full to its limit can always be emptied (the object store's own delete writes its
   * marker first, which a full bucket refuses). Its record goes first, so no reader ever finds an
   * object whose chunks are gone (a read of those would wait for chunks that never come); chunks
   * left by a purge that failed half-way expire with the bucket's TTL. With `only`, the object is
   * deleted only if it is still that version. False when the store did not answer.
   */
  async deleteObject(name: string, only?: ObjectVersion): Promise<boolean> {
    // Refused, as the object store's own calls refuse an empty name (none is ever stored).
    if (!name) return false;
    try {
      // The records up to the one read, and no later: a put under the name in between (a tenant's
      // new upload) keeps its record, and its chunks are another content id's.
      const { record, purged } = await purgeObjectVersion(this.jsm, IMPORTS_BUCKET, name, only && ((stored) => stored.nuid === only.nuid));
      // Another version now has the name (an upload put again under it): that one is not ours to
      // delete; the chunks of ours go, should the put that replaced it have failed to purge them.
      if (record && !purged && only) await this.jsm.streams.purge(STREAM, { filter: chunksSubject(only.nuid) });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Chunks no object record names, by the id of their content, with how many there are: those of
   * an upload whose writer stopped before writing its record (the object store writes it last), or
   * of a deletion, or a put again under the same name, whose purge of the old chunks failed after
   * the record went. Nothing else ever removes them before the bucket's TTL (7 days), and they
   * count towards its limit. An upload still being written is among them too, its count growing:
   * the sweeper waits for a count unchanged for OATH_UNCLAIMED_UPLOAD_SECONDS. The chunks are
   * counted before the records are read, so an upload that completes in between is not listed.
   */
  async strayChunks(): Promise<Array<{ nuid: string; chunks: number }>> {
    const counts = await this.chunkCounts(chunksSubject('*'));
    if (counts.size === 0) return [];
    for (const info of await this.objects.list()) counts.delete(info.nuid);
    return [...counts].map(([nuid, chunks]) => ({ nuid, chunks }));
  }

  /** Purges chunks `strayChunks` listed, unless a record names them now. False when it did not. */
  async purgeStrayChunks(nuid: string): Promise<boolean> {
    try {
      if ((await this.objects.list()).some((info) => info.nuid === nuid)) return false;
      await this.jsm.streams.purge(STREAM, { filter: chunksSubject(nuid) });
      return true;
    } catch {
      return false;
    }
  }

  /** Messages per chunk subject matching `filter`, by content id. */
  private async chunkCounts(filter: string): Promise<Map<string, number>> {
    const info = await this.jsm.streams.info(STREAM, { subjects_filter: filter });
    const prefix = chunksSubject('');
    return new Map(Object.entries(info.state.subjects ?? {}).map(([subject, count]) => [subject.slice(prefix.length), count]));
  }

  /**
   * The files in MFA_IMPORTS, by name and by the id of their content (a name put again is another
   * file): the uploads, and the jobs' own, each with the job its name gives (`<tenant>/jobs/<job>/…`).
   */
  async files(): Promise<Array<{ name: string; nuid: string; job?: { tenantId: string; jobId: string } }>> {
    const infos = await this.objects.list();
    return infos
      .filter((info) => !info.deleted)
      .map((info) => {
        const [, tenantId, jobId] = JOB_OBJECT.exec(info.name) ?? [];
        return { name: info.name, nuid: info.nuid, ...(tenantId && jobId ? { job: { tenantId, jobId } } : {}) };
      });
  }
}

/**
 * The SHA-256 an object's record gives (`SHA-256=` and base64url, as nats.js writes it; base64 or
 * hex as other clients have), or undefined when it gives none that can be read.
 */
function digestBytes(digest: string): Buffer | undefined {
  if (!digest.startsWith('SHA-256=')) return undefined;
  const text = digest.slice('SHA-256='.length);
  const bytes = /^(?:[0-9a-f]{64}|[0-9A-F]{64})$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  return bytes.length === 32 ? bytes : undefined;
}

/**
 * Gives MFA_IMPORTS the limit asked, but never one below what it holds: the server would make room
 * by dropping the oldest messages, chunks of files still in use. A bucket that holds more keeps room
 * for two of the largest files, so imports go on meanwhile, but its limit never grows that way: it
 * only comes down as the bucket empties. Answers the limit it has then.
 */
async function limitBytes(jsm: JetStreamManager, maxBytes: number): Promise<number> {
  const info = await jsm.streams.info(STREAM);
  const current = info.config.max_bytes > 0 ? info.config.max_bytes : Number.POSITIVE_INFINITY;
  const limit = info.state.bytes <= maxBytes ? maxBytes : Math.min(info.state.bytes + 2 * MAX_IMPORT_FILE_BYTES, current);
  if (info.config.max_bytes === limit) return limit;
  try {
    await jsm.streams.update(STREAM, { ...info.config, max_bytes: limit });
  } catch (error) {
    throw maxBytesError(limit, error);
  }
  return limit;
}

/** The boot stops naming the variable when the JetStream servers cannot reserve the bucket's size. */
function maxBytesError(maxBytes: number, error: unknown): unknown {
  if (!/insufficient storage/i.test((error as Error)?.message ?? '')) return error;
  return new Error(`OATH_IMPORTS_MAX_BYTES=${maxBytes}: the JetStream servers cannot reserve that much for bucket ${IMPORTS_BUCKET} (their store is smaller, or taken): ${(error as Error).message}`, { cause: error });
}
