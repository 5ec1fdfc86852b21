import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe } from 'node:test';
import type { JetStreamManager } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec, Objm, StorageType, type ObjectStore } from '@nats-io/obj';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { itWith, testEnv } from '@mfa/testing';
import { ObjectChanged, ObjectCorrupt, ObjectReader } from './object-reader.js';

type GetQuery = { last_by_subj?: string; next_by_subj?: string; seq?: number };

/**
 * The console's reader of object stores, on a bucket of its own in the real NATS, written by the
 * object store's own client (nats.js) as the services write theirs.
 */
describe('ObjectReader: objects read by message gets, without a consumer (real NATS)', () => {
  let nats: NatsClients;
  let store: ObjectStore;
  const bucket = `CONSOLE_READER_${randomBytes(4).toString('hex').toUpperCase()}`;
  const stream = `OBJ_${bucket}`;
  const metaSubject = (name: string) => `$O.${bucket}.M.${Base64UrlPaddedCodec.encode(name)}`;

  /** The real JetStream manager, its message gets counted (and, with `before`, something done before each). */
  const watched = (before?: (query: GetQuery) => Promise<void>) => {
    const gets: GetQuery[] = [];
    const streams = new Proxy(nats.jsm.streams, {
      get(target, property) {
        if (property === 'getMessage') {
          return async (name: string, query: GetQuery) => {
            gets.push(query);
            await before?.(query);
            return target.getMessage(name, query as never);
          };
        }
        const value = Reflect.get(target, property, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const jsm = Object.create(nats.jsm, { streams: { value: streams } }) as JetStreamManager;
    return { reader: new ObjectReader(jsm, bucket), chunkGets: () => gets.filter((q) => q.next_by_subj !== undefined).length };
  };
  const bytesOf = async (body: AsyncIterable<Uint8Array>) => {
    const parts: Buffer[] = [];
    for await (const part of body) parts.push(Buffer.from(part));
    return Buffer.concat(parts);
  };
  /** What a read of the whole body ends with: its bytes, or the error that ended it. */
  const settle = (body: AsyncIterable<Uint8Array>) => bytesOf(body).then((bytes) => bytes, (error: unknown) => error);

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'console-object-reader-test', connectTimeoutMs: 5_000 });
    store = await new Objm(nats.nc).create(bucket, { storage: StorageType.File });
  });
  after(async () => {
    await nats.jsm.streams.delete(stream).catch(() => undefined);
    await nats.nc.drain();
  });

  itWith({ real: ['nats'] }, 'reads an object byte for byte, chunk by chunk, with its record (size, metadata); an empty one; none by that name', async () => {
    const bytes = randomBytes(1000 * 7 + 123);
    await store.put({ name: 't1/many', options: { max_chunk_size: 1000 }, metadata: { contentType: 'audio/wav' } }, readable(bytes));
    const { reader, chunkGets } = watched();
    const found = await reader.read('t1/many');
    assert.ok(found);
    assert.deepEqual([found.info.name, found.info.size, found.info.chunks, found.info.metadata], ['t1/many', bytes.length, 8, { contentType: 'audio/wav' }]);
    assert.ok((await bytesOf(found.body)).equals(bytes));
    assert.equal(chunkGets(), 8, 'one message get per chunk');

    await store.putBlob({ name: 't1/empty' }, new Uint8Array(0));
    const empty = await reader.read('t1/empty');
    assert.ok(empty);
    assert.equal((await bytesOf(empty.body)).length, 0);
    assert.equal(await reader.read('t1/nothing'), undefined);
    assert.equal(await reader.info('t1/nothing'), undefined);
  });

  itWith({ real: ['nats'] }, 'holds a chunk or two at a time: it asks for the next when the reader wants more, however large the object', async () => {
    // 40 chunks of the object store's default 128 KiB: 5 MiB.
    const bytes = randomBytes(40 * 128 * 1024);
    await store.put({ name: 't1/large' }, readable(bytes));
    const { reader, chunkGets } = watched();
    const found = await reader.read('t1/large');
    assert.ok(found);
    // A slow reader: between two chunks, the time three chunk fetches take, in which a reader
    // that ran ahead of it would fetch more.
    const chunkOfIt = { seq: 1, next_by_subj: `$O.${bucket}.C.${found.info.nuid}` } as unknown as { seq: number };
    const slowly = () => nats.jsm.streams.getMessage(stream, chunkOfIt);
    const read: Buffer[] = [];
    let ahead = 0;
    for await (const part of found.body) {
      read.push(part as Buffer);
      for (let i = 0; i < 3; i++) await slowly();
      // (A byte stream may hand over what it holds in one piece: counted in chunks' worth.)
      ahead = Math.max(ahead, chunkGets() - Math.ceil(Buffer.concat(read).length / (128 * 1024)));
    }
    assert.ok(ahead <= 2, `${ahead} chunks fetched ahead of the reader`);
    assert.ok(Buffer.concat(read).equals(bytes));
    assert.equal(chunkGets(), 40);
  });

  itWith({ real: ['nats'] }, 'an object deleted or put again while it is read ends the read with ObjectChanged, never bytes of two versions', async () => {
    for (const [change, replaced] of [[() => store.delete('t2/doc'), false], [() => store.putBlob({ name: 't2/doc' }, randomBytes(3000)), true]] as const) {
      await store.put({ name: 't2/doc', options: { max_chunk_size: 1000 } }, readable(randomBytes(10_000)));
      const found = await new ObjectReader(nats.jsm, bucket).read('t2/doc');
      assert.ok(found);
      const iterator = found.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      assert.equal((await iterator.next()).value.length, 1000);
      await change();
      const ended = await settle({ [Symbol.asyncIterator]: () => iterator });
      assert.ok(ended instanceof ObjectChanged, String(ended));
      assert.equal(ended.replaced, replaced);
      assert.equal(ended.object, 't2/doc');
    }
  });

  itWith({ real: ['nats'] }, 'an object put again between its record and its first chunk is read again once, whole in its new version; deleted there, it is none', async () => {
    const first = randomBytes(5000);
    const second = randomBytes(7000);
    await store.put({ name: 't3/doc', options: { max_chunk_size: 1000 } }, readable(first));
    let puts = 0;
    const { reader } = watched(async (query) => {
      if (query.next_by_subj !== undefined && puts++ === 0) await store.put({ name: 't3/doc', options: { max_chunk_size: 1000 } }, readable(second));
    });
    const found = await reader.read('t3/doc');
    assert.ok(found);
    assert.equal(found.info.size, second.length);
    assert.ok((await bytesOf(found.body)).equals(second));

    // Put again before each first chunk: after one more attempt, it gives up.
    const { reader: raced } = watched(async (query) => {
      if (query.next_by_subj !== undefined) await store.putBlob({ name: 't3/doc' }, randomBytes(100));
    });
    await assert.rejects(raced.read('t3/doc'), (e: unknown) => e instanceof ObjectChanged && e.replaced);

    let deletes = 0;
    const { reader: deleted } = watched(async (query) => {
      if (query.next_by_subj !== undefined && deletes++ === 0) await store.delete('t3/doc');
    });
    assert.equal(await deleted.read('t3/doc'), undefined);
  });

  itWith({ real: ['nats'] }, 'chunks that do not match the record (digest, size) fail the read; a record of an unknown digest, or a link, is refused before any byte', async () => {
    const bytes = randomBytes(3000);
    await store.put({ name: 't4/doc', options: { max_chunk_size: 1000 } }, readable(bytes));
    const record = (await nats.jsm.streams.getMessage(stream, { last_by_subj: metaSubject('t4/doc') }))!.json<Record<string, unknown>>();
    const forge = async (changes: Record<string, unknown>) => {
      await nats.js.publish(metaSubject('t4/doc'), JSON.stringify({ ...record, ...changes }));
    };
    const reader = new ObjectReader(nats.jsm, bucket);

    await forge({ digest: `SHA-256=${createHash('sha256').update('other').digest('base64url')}=` });
    assert.match(String(await settle((await reader.read('t4/doc'))!.body)), /ObjectCorrupt: t4\/doc: its content does not match its digest/);
    await forge({ size: 2999 });
    assert.ok((await settle((await reader.read('t4/doc'))!.body)) instanceof ObjectCorrupt);
    await forge({ size: 3001 });
    assert.match(String(await settle((await reader.read('t4/doc'))!.body)), /3000 bytes in its 3 chunks, 3001 in its record/);
    await forge({ digest: 'MD5=abc' });
    await assert.rejects(reader.read('t4/doc'), ObjectCorrupt);
    // The digest as nats.js writes it (base64url, padded), and as other clients do (hex).
    await forge({ digest: `SHA-256=${createHash('sha256').update(bytes).digest('hex')}` });
    assert.ok((await bytesOf((await reader.read('t4/doc'))!.body)).equals(bytes));

    await store.link('t4/link', (await store.info('t4/doc'))!);
    assert.equal((await store.info('t4/link'))?.options?.link?.name, 't4/doc');
    assert.equal(await reader.read('t4/link'), undefined, 'a link is not a file of the bucket');
  });

  itWith({ real: ['nats'] }, 'remove: purges the version read, on a full bucket too, where the object store’s delete is refused', async () => {
    const full = `CONSOLE_FULL_${randomBytes(4).toString('hex').toUpperCase()}`;
    const small = await new Objm(nats.nc).create(full, { storage: StorageType.File, max_bytes: 8 * 1024 });
    try {
      await small.putBlob({ name: 't/upload' }, randomBytes(2 * 1024));
      // Filled to the last bytes: small objects until one is refused.
      let filled = false;
      for (let n = 0; n < 500 && !filled; n++) filled = await small.putBlob({ name: `t/fill-${n}` }, randomBytes(8)).then(() => false, () => true);
      assert.ok(filled, 'the bucket is full');
      await assert.rejects(small.delete('t/upload'), 'the object store’s delete writes a record first, which a full bucket refuses');
      const reader = new ObjectReader(nats.jsm, full);
      assert.equal(await reader.remove('t/upload'), true);
      assert.equal(await reader.info('t/upload'), undefined);
      assert.equal((await nats.jsm.streams.info(`OBJ_${full}`, { subjects_filter: `$O.${full}.M.${Base64UrlPaddedCodec.encode('t/upload')}` })).state.subjects, undefined, 'its record is gone');
      assert.equal(await reader.remove('t/upload'), false);
    } finally {
      await nats.jsm.streams.delete(`OBJ_${full}`).catch(() => undefined);
    }
  });

  itWith({ real: ['nats'] }, 'remove: a deleted object or a link is none to remove: false, and its record stays', async () => {
    await store.putBlob({ name: 't6/doc' }, randomBytes(100));
    await store.link('t6/link', (await store.info('t6/doc'))!);
    await store.putBlob({ name: 't6/gone' }, randomBytes(100));
    await store.delete('t6/gone');
    const reader = new ObjectReader(nats.jsm, bucket);
    assert.equal(await reader.remove('t6/link'), false);
    assert.equal((await store.info('t6/link'))?.options?.link?.name, 't6/doc');
    assert.equal(await reader.remove('t6/gone'), false);
    assert.equal((await store.info('t6/gone'))?.deleted, true, 'the deletion marker stays');
    assert.equal(await reader.remove('t6/doc'), true);
  });

  itWith({ real: ['nats'] }, 'names: the live objects whose name is wanted, not the deleted ones, from the bucket’s record subjects', async () => {
    const reader = new ObjectReader(nats.jsm, bucket);
    assert.deepEqual(await reader.names((name) => name.startsWith('t5/')), []);
    for (const name of ['t5/console-a', 't5/console-b', 't5/console-c', 't5/jobs/j/source', 't50/console-a']) await store.putBlob({ name }, new Uint8Array(10));
    await store.delete('t5/console-b');
    assert.deepEqual((await reader.names((name) => name.startsWith('t5/console-'))).sort(), ['t5/console-a', 't5/console-c']);
    assert.deepEqual((await reader.names((name) => name.startsWith('t50/'))).sort(), ['t50/console-a']);
  });
});

const readable = (bytes: Uint8Array) =>
  new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
