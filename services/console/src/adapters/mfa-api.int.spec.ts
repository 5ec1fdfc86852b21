import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Objm, StorageType } from '@nats-io/obj';
import { ContractError, IMPORTS_BUCKET, VoiceMessageBuckets } from '@mfa/contracts';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { MfaApi } from './mfa-api.js';

/** The console's reads of the object stores, on a nats-server of the test's own (no bucket until the test makes it). */
describe('MfaApi: reading the object stores the services create (real NATS)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'console-mfa-api-test', connectTimeoutMs: 5_000 });
  });
  after(async () => {
    await nats?.nc.drain();
    await server?.stop();
  });

  const unavailable = (message: RegExp) => (e: unknown) => e instanceof ContractError && e.code === 'unavailable' && message.test(e.message);

  itWith({ real: ['nats'] }, 'before the services create a bucket, its reads are unavailable and say who creates it; then they read it', async () => {
    const api = new MfaApi(nats.nc, undefined);
    await assert.rejects(api.recording('t1', 'greetingPin', 'sv'), unavailable(/^the recording store is not ready \(dispatch creates it\)/));
    await assert.rejects(api.importFile('t1/jobs/j/errors.csv'), unavailable(/^the imports store is not ready \(user-settings creates it\)/));
    await assert.rejects(api.consoleImports('t1'), unavailable(/^the imports store is not ready \(user-settings creates it\)/));

    const recordings = await new Objm(nats.nc).create(VoiceMessageBuckets.messages, { storage: StorageType.File });
    await new Objm(nats.nc).create(IMPORTS_BUCKET, { storage: StorageType.File });
    assert.equal(await api.recording('t1', 'greetingPin', 'sv'), undefined);
    assert.equal(await api.importFile('t1/jobs/j/errors.csv'), undefined);
    assert.equal(await api.consoleImports('t1'), 0);
    await recordings.putBlob({ name: 't1/greetingPin/sv', metadata: { contentType: 'audio/wav' } }, new Uint8Array([1, 2, 3]));
    const played = await api.recording('t1', 'greetingPin', 'sv');
    assert.deepEqual(played && { contentType: played.contentType, size: played.size }, { contentType: 'audio/wav', size: 3 });
    const parts: Buffer[] = [];
    for await (const part of played!.body) parts.push(part as Buffer);
    assert.deepEqual([...Buffer.concat(parts)], [1, 2, 3]);
  });
});
