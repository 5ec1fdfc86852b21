import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { IMPORTS_BUCKET, IMPORT_RETENTION_SECONDS } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { Objm, StorageType } from '@nats-io/obj';
import { ImportJobs, importStoreSettings, jobObjects } from './adapters/import-jobs.js';
import { OathImportService } from './application/oath-import.service.js';
import { loadUserSettingsConfig } from './config.js';
import type { OathTokensService } from './application/oath-tokens.service.js';

const KiB = 1024;
const STREAM = `OBJ_${IMPORTS_BUCKET}`;

/**
 * MFA_IMPORTS cannot grow without bound, and an upload no import job claims does not stay: on a
 * nats-server of the test's own (the bucket's limit, its content and the jobs are the test's), with
 * limits far below the defaults. The sweeper is given the time, so nothing here waits for a clock.
 */
describe('the imports store: bounded, and rid of unclaimed uploads (real NATS)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  const tenantId = `store-${Date.now().toString(36)}`;
  const log = createLogger('oath-import-store-test', { level: 'error' });

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'oath-import-store-test', connectTimeoutMs: 5_000 });
  });

  after(async () => {
    await nats.nc.drain();
    await server.stop();
  });

  beforeEach(async () => {
    await nats.jsm.streams.delete(STREAM).catch(() => undefined);
  });

  const limitOf = async () => (await nats.jsm.streams.info(STREAM)).config.max_bytes;

  itWith({ real: ['nats'] }, 'a bucket made without a limit gets OATH_IMPORTS_MAX_BYTES at boot, and a put beyond it is refused', async () => {
    // As releases before the limit made it.
    await new Objm(nats.nc).create(IMPORTS_BUCKET, { replicas: 1, storage: StorageType.File, ttl: IMPORT_RETENTION_SECONDS * 1_000_000_000 });
    assert.equal(await limitOf(), -1);
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 1024 * KiB, unclaimedUploadMs: 60_000 });
    assert.deepEqual([await limitOf(), jobs.maxBytes], [1024 * KiB, 1024 * KiB]);
    await jobs.putObject(`${tenantId}/first`, new Uint8Array(600 * KiB));
    await assert.rejects(jobs.putObject(`${tenantId}/second`, new Uint8Array(600 * KiB)), /maximum bytes exceeded/);
    assert.equal(await jobs.size(`${tenantId}/second`), undefined);
    assert.equal(await jobs.size(`${tenantId}/first`), 600 * KiB);
  });

  itWith({ real: ['nats'] }, 'a limit below what the bucket holds is not applied at once (the server would drop parts of its files): it is reached as the bucket empties, which it can even when full', async () => {
    const roomy = await ImportJobs.open(nats, 1, { maxBytes: 2048 * KiB, unclaimedUploadMs: 60_000 });
    await roomy.putObject(`${tenantId}/kept`, new Uint8Array(700 * KiB).fill(7));
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 256 * KiB, unclaimedUploadMs: 60_000 });
    // Not lowered below what it holds, nor raised above the limit it had.
    assert.deepEqual([await limitOf(), jobs.maxBytes], [2048 * KiB, 2048 * KiB]);
    const kept = await jobs.getObject(`${tenantId}/kept`);
    assert.ok(kept?.length === 700 * KiB && kept.every((b) => b === 7), 'the file is whole');
    // Full to the brim, it can still be emptied (a deletion writes nothing).
    await jobs.putObject(`${tenantId}/filler`, new Uint8Array(1300 * KiB));
    await assert.rejects(jobs.putObject(`${tenantId}/more`, new Uint8Array(100 * KiB)), /maximum bytes exceeded/);
    for (const name of ['kept', 'filler']) {
      assert.equal(await jobs.deleteObject(`${tenantId}/${name}`), true);
      assert.equal(await jobs.size(`${tenantId}/${name}`), undefined);
    }
    assert.equal(await jobs.tighten(), 256 * KiB);
    assert.equal(await limitOf(), 256 * KiB);
  });

  itWith({ real: ['nats'] }, 'an upload no job claims is deleted once it has waited its time; one a job reads, the jobs’ own files and younger uploads stay', async () => {
    const unclaimedUploadMs = 60_000;
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 4096 * KiB, unclaimedUploadMs });
    const service = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log, requireTenant: async () => undefined });
    const csv = Buffer.from('upn,serial number,secret key,time interval,manufacturer,model\r\n,SN-1,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30,Contoso,Key\r\n');
    const abandoned = `${tenantId}/console-abandoned`;
    const claimed = `${tenantId}/cli-claimed`;
    const errorFile = jobObjects(tenantId, 'f'.repeat(24)).errors;
    for (const name of [abandoned, claimed, errorFile]) await jobs.putObject(name, csv);
    // A queued job reads `claimed` (no worker runs here: it stays queued).
    await service.request({ tenantId, format: 'csv', object: claimed } as never, new Date());

    const t0 = Date.now();
    assert.equal(await service.sweepUploads(t0), 0, 'first seen now');
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs - 1), 0, 'not yet');
    const younger = `${tenantId}/console-younger`;
    await jobs.putObject(younger, csv);
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs - 1), 0, 'the younger one is first seen now');
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs), 1);
    assert.equal(await jobs.size(abandoned), undefined, 'the abandoned upload is gone');
    for (const name of [claimed, errorFile, younger]) assert.equal(await jobs.size(name), csv.length, `${name} stays`);
    assert.equal(await service.sweepUploads(t0 + 2 * unclaimedUploadMs - 1), 1);
    assert.equal(await jobs.size(younger), undefined);
    assert.deepEqual([await jobs.size(claimed), await jobs.size(errorFile)], [csv.length, csv.length]);
  });

  it('the limits come from the environment, with defaults, and the boot refuses one below two of the largest files', () => {
    const settingsOf = (env: NodeJS.ProcessEnv) => importStoreSettings(loadUserSettingsConfig(env));
    assert.deepEqual(settingsOf({}), { maxBytes: 2 * 1024 ** 3, unclaimedUploadMs: 900_000 });
    assert.deepEqual(settingsOf({ OATH_IMPORTS_MAX_BYTES: String(1024 ** 3), OATH_UNCLAIMED_UPLOAD_SECONDS: '120' }), { maxBytes: 1024 ** 3, unclaimedUploadMs: 120_000 });
    assert.throws(() => settingsOf({ OATH_IMPORTS_MAX_BYTES: String(100 * 1024 ** 2) }), /OATH_IMPORTS_MAX_BYTES/);
    assert.throws(() => settingsOf({ OATH_UNCLAIMED_UPLOAD_SECONDS: '5' }), /OATH_UNCLAIMED_UPLOAD_SECONDS/);
  });
});
