import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { JetStreamManager, StoredMsg } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec } from '@nats-io/obj';
import { nextMessageOn, purgeObjectVersion, type ObjectStoreRecord } from '@mfa/messaging';

/**
 * An object's record in an object store, as the object store writes it (ADR-20): the last message
 * on `$O.<bucket>.M.<name, base64url>`, naming the chunks (`$O.<bucket>.C.<nuid>`) of its content.
 */
export interface ObjectRecord {
  name: string;
  /** The id of this version's content: a put again under the name writes chunks under another. */
  nuid: string;
  size: number;
  chunks: number;
  /** `SHA-256=<base64url>` of the content (nats.js; other clients write base64 or hex). */
  digest: string;
  deleted?: boolean;
  metadata?: Record<string, string>;
  options?: { link?: unknown };
  /** The record's sequence in the stream. */
  revision: number;
}

/** The version being read went while it was read: its name was put again (`replaced`), or deleted. */
export class ObjectChanged extends Error {
  override name = 'ObjectChanged';

  constructor(
    readonly object: string,
    readonly replaced: boolean,
  ) {
    super(replaced ? `${object} was put again while it was read` : `${object} was deleted while it was read`);
  }
}

/** Chunks that do not add up to what the record says (size, count or digest). */
export class ObjectCorrupt extends Error {
  override name = 'ObjectCorrupt';
}

const DIGEST_TYPE = 'SHA-256=';

/**
 * Reads an object store with message gets only (STREAM.MSG.GET, from the stream leader): the
 * record, then the chunks one by one, each the next on its subject after the one before. The
 * object store's own reader creates a push consumer per read instead, whose delivery subject the
 * server does not check against the creator's publish permissions (nats-io/nats-server#8274): a
 * user allowed that could have the server deliver bytes it stored to any subject. The console's
 * NATS user is allowed no consumer, so it reads this way.
 *
 * A read asks for one chunk when the reader wants more (bounded memory: a chunk or two, whatever
 * the size of the object), checks the count, the size and the digest, and never mixes two
 * versions: a version's chunks are purged when its name is put again or deleted, and a chunk
 * missing ends the read with ObjectChanged.
 */
export class ObjectReader {
  readonly stream: string;

  constructor(
    private readonly jsm: JetStreamManager,
    readonly bucket: string,
  ) {
    this.stream = `OBJ_${bucket}`;
  }

  /** The object's record, or undefined when there is none by that name (or it is deleted, or a link). */
  async info(name: string): Promise<ObjectRecord | undefined> {
    const record = await this.record(this.metaSubject(name));
    return record && isFile(record) ? record : undefined;
  }

  /**
   * The object's record and its content as a byte stream, or undefined when there is none. The
   * first chunk is read before answering, so that an object deleted or put again between its
   * record and its content is looked up once more; after that, a change fails the stream.
   */
  async read(name: string): Promise<{ info: ObjectRecord; body: Readable } | undefined> {
    for (let attempt = 1; ; attempt++) {
      const info = await this.info(name);
      if (!info) return undefined;
      const digest = digestBytes(info.digest);
      if (!digest) throw new ObjectCorrupt(`${name}: unknown digest ${JSON.stringify(info.digest)}`);
      if (info.chunks === 0) {
        if (info.size !== 0 || !digest.equals(createHash('sha256').digest())) throw new ObjectCorrupt(`${name}: no chunks for ${info.size} bytes`);
        return { info, body: Readable.from([], { objectMode: false }) };
      }
      const first = await this.chunkAfter(info.nuid, 0, info.revision);
      // A byte stream that asks for the next chunk only once the one before is taken.
      if (first) return { info, body: Readable.from(this.chunks(info, digest, first), { objectMode: false, highWaterMark: 1 }) };
      if (attempt === 2) throw await this.changed(info);
    }
  }

  /**
   * The names of the objects (not deleted) whose name `wanted` accepts. The bucket's record
   * subjects come from the stream's per-subject counts (one request per 100,000 of them, names
   * only), and only the records of the names wanted are read, a few at a time.
   */
  async names(wanted: (name: string) => boolean): Promise<string[]> {
    const prefix = `$O.${this.bucket}.M.`;
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${prefix}>` });
    const candidates = Object.keys(info.state.subjects ?? {}).filter((subject) => {
      const name = decodeName(subject.slice(prefix.length));
      return name !== undefined && wanted(name);
    });
    const live: string[] = [];
    for (let i = 0; i < candidates.length; i += 16) {
      const records = await Promise.all(candidates.slice(i, i + 16).map((subject) => this.record(subject)));
      for (const record of records) if (record && !record.deleted && wanted(record.name)) live.push(record.name);
    }
    return live;
  }

  /**
   * Deletes the object by purging its records up to the one read and that version's chunks
   * (purgeObjectVersion): unlike the object store's delete, it writes nothing first (a "deleted"
   * record), so it works on a bucket that is full, and a put under the name meanwhile keeps its
   * own record. False when there was none (or it is deleted, or a link: left as it is).
   */
  async remove(name: string): Promise<boolean> {
    return (await purgeObjectVersion(this.jsm, this.bucket, name, isFile)).purged;
  }

  private async *chunks(info: ObjectRecord, digest: Buffer, first: StoredMsg): AsyncGenerator<Buffer> {
    const hash = createHash('sha256');
    let size = 0;
    let message = first;
    for (let chunk = 1; ; chunk++) {
      // (StoredMsg decodes its base64 payload on every read of `data`.)
      const data = message.data;
      size += data.length;
      if (size > info.size) throw new ObjectCorrupt(`${info.name}: more than the ${info.size} bytes of its record`);
      hash.update(data);
      yield Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      if (chunk === info.chunks) break;
      const next = await this.chunkAfter(info.nuid, message.seq, info.revision);
      if (!next) throw await this.changed(info);
      message = next;
    }
    if (size !== info.size) throw new ObjectCorrupt(`${info.name}: ${size} bytes in its ${info.chunks} chunks, ${info.size} in its record`);
    if (!digest.equals(hash.digest())) throw new ObjectCorrupt(`${info.name}: its content does not match its digest`);
  }

  /**
   * The first chunk of content `nuid` after sequence `seq`, or undefined when there is none. Its
   * chunks all come before its record (the object store writes the record last).
   */
  private async chunkAfter(nuid: string, seq: number, revision: number): Promise<StoredMsg | undefined> {
    const message = await nextMessageOn(this.jsm, this.stream, `$O.${this.bucket}.C.${nuid}`, seq);
    return message && message.seq < revision ? message : undefined;
  }

  /** Why a version could not be read whole: its name holds another version now, or none. */
  private async changed(version: ObjectRecord): Promise<ObjectChanged> {
    const now = await this.info(version.name);
    return new ObjectChanged(version.name, now !== undefined && now.nuid !== version.nuid);
  }

  private async record(subject: string): Promise<ObjectRecord | undefined> {
    const message = await this.jsm.streams.getMessage(this.stream, { last_by_subj: subject });
    if (!message) return undefined;
    return { ...message.json<Omit<ObjectRecord, 'revision'>>(), revision: message.seq };
  }

  private metaSubject(name: string): string {
    return `$O.${this.bucket}.M.${Base64UrlPaddedCodec.encode(name)}`;
  }
}

/** Whether a record is an object of the bucket: not deleted, and not a link (which names another object, perhaps in another bucket). */
function isFile(record: Pick<ObjectStoreRecord, 'deleted' | 'options'>): boolean {
  return !record.deleted && !record.options?.link;
}

/** The name a record subject's last token encodes (as the object store encodes it), or undefined. */
function decodeName(token: string): string | undefined {
  try {
    return Base64UrlPaddedCodec.decode(token) as string;
  } catch {
    return undefined;
  }
}

/** The SHA-256 a record gives (`SHA-256=` and base64url as nats.js writes it; base64 or hex as others have), or undefined. */
function digestBytes(digest: string): Buffer | undefined {
  if (!digest.startsWith(DIGEST_TYPE)) return undefined;
  const text = digest.slice(DIGEST_TYPE.length);
  const bytes = /^(?:[0-9a-f]{64}|[0-9A-F]{64})$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  return bytes.length === 32 ? bytes : undefined;
}
