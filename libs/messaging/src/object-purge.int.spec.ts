import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { JetStreamManager, PurgeOpts } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec, Objm, StorageType, type ObjectStore } from '@nats-io/obj';
import { deployedNatsPasswords, itWith, startDeployedNatsServer, type NatsServerProcess } from '@mfa/testing';
import { connectNats, type NatsClients } from './connection.js';
import { purgeObjectVersion } from './object-purge.js';


/**
 * purgeObjectVersion on a nats-server of the test's own that runs deploy/nats/nats-server.conf:
 * the objects are written by the object store's own client as the services' user, and purged as
 * the console's user, which may make no consumer and no JetStream API call but a few (a call it
 * may not make is refused, and fails the purge). Its buckets are two it may purge.
 */
describe('purgeObjectVersion: an object store version purged with a message get and purges only (real NATS, the console’s user)', () => {
  const passwords = deployedNatsPasswords();
  let server: NatsServerProcess;
  let services: NatsClients;
  let consoleUser: NatsClients;
  let imports: ObjectStore;
  const bucket = 'MFA_IMPORTS';
  const stream = `OBJ_${bucket}`;
  const metaSubject = (name: string) => `$O.${bucket}.M.${Base64UrlPaddedCodec.encode(name)}`;
  const chunksSubject = (nuid: string) => `$O.${bucket}.C.${nuid}`;
  /** Messages the stream holds on `subject`. */
  const messagesOn = async (subject: string, on = stream) => Object.values((await services.jsm.streams.info(on, { subjects_filter: subject })).state.subjects ?? {}).reduce((a, b) => a + b, 0);

  /** The console's JetStream manager, its purges counted (and, with `beforePurge`, something done before the first). */
  const watched = (beforePurge?: () => Promise<void>) => {
    const purges: PurgeOpts[] = [];
    const streams = new Proxy(consoleUser.jsm.streams, {
      get(target, property) {
        if (property === 'purge') {
          return async (name: string, options: PurgeOpts) => {
            if (purges.push(options) === 1) await beforePurge?.();
            return target.purge(name, options);
          };
        }
        const value = Reflect.get(target, property, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    return { jsm: Object.create(consoleUser.jsm, { streams: { value: streams } }) as JetStreamManager, purges };
  };

  before(async () => {
    server = await startDeployedNatsServer(passwords);
    services = await connectNats({ url: server.url, name: 'object-purge-services', security: { user: { name: 'mfa-services', password: passwords.services } }, connectTimeoutMs: 5_000 });
    consoleUser = await connectNats({
      url: server.url,
      name: 'object-purge-console',
      security: { user: { name: 'mfa-console', password: passwords.console }, inboxPrefix: '_INBOX_console' },
      connectTimeoutMs: 5_000,
    });
    imports = await new Objm(services.nc).create(bucket, { storage: StorageType.File });
  });
  after(async () => {
    await consoleUser?.nc.close();
    await services?.nc.close();
    await server?.stop();
  });

  itWith({ real: ['nats'] }, 'purges the version read, its records and its chunks, on a full bucket where the object store’s delete is refused; other objects stay; none by that name is none', async () => {
    const uploads = 'MFA_VOICE_UPLOADS';
    const full = await new Objm(services.nc).create(uploads, { storage: StorageType.File, max_bytes: 8 * 1024 });
    const on = `OBJ_${uploads}`;
    await full.put({ name: 't/upload', options: { max_chunk_size: 512 } }, readable(randomBytes(2 * 1024)));
    const other = randomBytes(100);
    await full.putBlob({ name: 't/other' }, other);
    // Filled to the last bytes: small objects until one is refused.
    let filled = false;
    for (let n = 0; n < 500 && !filled; n++) filled = await full.putBlob({ name: `t/fill-${n}` }, randomBytes(8)).then(() => false, () => true);
    assert.ok(filled, 'the bucket is full');
    await assert.rejects(full.delete('t/upload'), 'the object store’s delete writes a record first, which a full bucket refuses');
    const stored = (await full.info('t/upload'))!;
    // (Some nats-server versions drop the oldest message, a chunk of it, as the bucket fills.)
    assert.ok((await messagesOn(`$O.${uploads}.C.${stored.nuid}`, on)) >= stored.chunks - 1);

    const { record, purged } = await purgeObjectVersion(consoleUser.jsm, uploads, 't/upload');
    assert.equal(purged, true);
    assert.deepEqual([record?.name, record?.nuid, record?.revision], ['t/upload', stored.nuid, stored.revision]);
    assert.equal(await messagesOn(`$O.${uploads}.M.${Base64UrlPaddedCodec.encode('t/upload')}`, on), 0, 'its records are gone');
    assert.equal(await messagesOn(`$O.${uploads}.C.${stored.nuid}`, on), 0, 'its chunks are gone');
    assert.equal(await full.info('t/upload'), null);
    assert.ok(Buffer.from((await full.getBlob('t/other'))!).equals(other));
    assert.deepEqual(await purgeObjectVersion(consoleUser.jsm, uploads, 't/upload'), { record: undefined, purged: false });
  });

  itWith({ real: ['nats'] }, 'only: a version it refuses stays whole, and its record is answered; one it accepts goes', async () => {
    const bytes = randomBytes(3000);
    await imports.put({ name: 'u/doc', options: { max_chunk_size: 1000 } }, readable(bytes));
    const stored = (await imports.info('u/doc'))!;
    const { jsm, purges } = watched();

    const refused = await purgeObjectVersion(jsm, bucket, 'u/doc', (record) => record.nuid !== stored.nuid);
    assert.deepEqual([refused.purged, refused.record?.nuid, refused.record?.revision], [false, stored.nuid, stored.revision]);
    assert.equal(purges.length, 0, 'nothing purged');
    assert.ok(Buffer.from((await imports.getBlob('u/doc'))!).equals(bytes));

    const accepted = await purgeObjectVersion(jsm, bucket, 'u/doc', (record) => record.nuid === stored.nuid);
    assert.equal(accepted.purged, true);
    assert.equal(await imports.info('u/doc'), null);
    assert.equal(await messagesOn(chunksSubject(stored.nuid)), 0);
  });

  itWith({ real: ['nats'] }, 'a put under the name after the record is read keeps its record and its chunks: only the records up to the one read go', async () => {
    await imports.put({ name: 'u/raced', options: { max_chunk_size: 1000 } }, readable(randomBytes(2500)));
    const first = (await imports.info('u/raced'))!;
    const second = randomBytes(1500);
    const { jsm } = watched(() => imports.put({ name: 'u/raced', options: { max_chunk_size: 1000 } }, readable(second)).then(() => undefined));

    const { record, purged } = await purgeObjectVersion(jsm, bucket, 'u/raced');
    assert.deepEqual([purged, record?.nuid], [true, first.nuid]);
    const now = await imports.info('u/raced');
    assert.ok(now && now.nuid !== first.nuid, 'the new version’s record stays');
    assert.ok(Buffer.from((await imports.getBlob('u/raced'))!).equals(second));
    assert.equal(await messagesOn(metaSubject('u/raced')), 1);
    assert.equal(await messagesOn(chunksSubject(first.nuid)), 0);
  });

  itWith({ real: ['nats'] }, 'a deletion marker: its records go, and no chunks are purged (it has none)', async () => {
    await imports.putBlob({ name: 'u/gone' }, randomBytes(200));
    await imports.delete('u/gone');
    assert.equal(await messagesOn(metaSubject('u/gone')), 1, 'the object store’s delete leaves its marker');
    const { jsm, purges } = watched();

    const { record, purged } = await purgeObjectVersion(jsm, bucket, 'u/gone');
    assert.deepEqual([purged, record?.deleted], [true, true]);
    assert.deepEqual(purges, [{ filter: metaSubject('u/gone'), seq: record!.revision + 1 }]);
    assert.equal(await messagesOn(metaSubject('u/gone')), 0);
  });
});

const readable = (bytes: Uint8Array) =>
  new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
