import type { JetStreamManager } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec } from '@nats-io/obj';

/** What an object store record (the last message on `$O.<bucket>.M.<name, base64url>`) says of its version. */
export interface ObjectStoreRecord {
  name: string;
  /** The id of the version's content: its chunks are the messages on `$O.<bucket>.C.<nuid>`. */
  nuid: string;
  /** A deletion marker (the object store's own delete): its chunks went with it. */
  deleted?: boolean;
  /** A link names another object (perhaps in another bucket). */
  options?: { link?: unknown };
  /** The record's sequence in the stream. */
  revision: number;
}

/**
 * Deletes the version object `name` of object store `bucket` has now, and leaves nothing of it:
 * its records up to the one read and no later (a put under the name meanwhile keeps its own),
 * then that version's chunks (a deletion marker has none). Unlike the object store's own delete,
 * it writes nothing (no deletion marker), so it works on a bucket that is full to its limit. One
 * STREAM.MSG.GET (from the stream leader) and STREAM.PURGEs, nothing else: no consumer, so a
 * user allowed no more than those can do it. With `only`, the version is purged only if `only`
 * accepts its record. Answers the record read (undefined when there is none) and whether it was
 * purged.
 */
export async function purgeObjectVersion(
  jsm: JetStreamManager,
  bucket: string,
  name: string,
  only?: (record: ObjectStoreRecord) => boolean,
): Promise<{ record: ObjectStoreRecord | undefined; purged: boolean }> {
  const stream = `OBJ_${bucket}`;
  const metaSubject = `$O.${bucket}.M.${Base64UrlPaddedCodec.encode(name)}`;
  const message = await jsm.streams.getMessage(stream, { last_by_subj: metaSubject });
  if (!message) return { record: undefined, purged: false };
  const record: ObjectStoreRecord = { ...message.json<Omit<ObjectStoreRecord, 'revision'>>(), revision: message.seq };
  if (only && !only(record)) return { record, purged: false };
  // The record first: no reader then finds a record whose chunks are gone.
  await jsm.streams.purge(stream, { filter: metaSubject, seq: record.revision + 1 });
  if (!record.deleted) await jsm.streams.purge(stream, { filter: `$O.${bucket}.C.${record.nuid}` });
  return { record, purged: true };
}
