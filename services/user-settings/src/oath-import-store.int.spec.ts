import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { IMPORTS_BUCKET, IMPORT_RETENTION_SECONDS } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { connectNats, isWrongLastSequence, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { Base64UrlPaddedCodec, Objm, StorageType } from '@nats-io/obj';
import { ImportJobs, importStoreSettings, jobKey, jobObjects } from './adapters/import-jobs.js';
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

  itWith({ real: ['nats'] }, 'an upload no job claims is deleted once it has waited its time, and so is a job’s file whose job is gone or ended; one a job reads, an unfinished job’s files, an ended job’s error file and younger uploads stay', async () => {
    const unclaimedUploadMs = 60_000;
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 4096 * KiB, unclaimedUploadMs });
    const service = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log, requireTenant: async () => undefined });
    const csv = Buffer.from('upn,serial number,secret key,time interval,manufacturer,model\r\n,SN-1,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30,Contoso,Key\r\n');
    const abandoned = `${tenantId}/console-abandoned`;
    const claimed = `${tenantId}/cli-claimed`;
    // An ended job: its error file is read for 7 days; its file, whose deletion failed, is not.
    const ended = 'f'.repeat(24);
    const errorFile = jobObjects(tenantId, ended).errors;
    const endedSource = jobObjects(tenantId, ended).source;
    const at = new Date().toISOString();
    const record = { tenantId, format: 'csv' as const, replace: false, total: 1, processed: 1, imported: 0, failed: 1, errorChunks: [], createdAt: at, updatedAt: at };
    await jobs.create({ ...record, jobId: ended, source: { object: endedSource, sealed: true }, state: 'completed', errorsObject: errorFile, finishedAt: at });
    // A running job's error chunk (its worker elsewhere), and a job's name no job has (forged by a holder of JetStream rights).
    const running = 'a'.repeat(24);
    const runningChunk = jobObjects(tenantId, running).errorChunk(0);
    await jobs.create({ ...record, jobId: running, source: { object: jobObjects(tenantId, running).source, sealed: true }, state: 'running', lease: { owner: 'elsewhere', until: Date.now() + 3_600_000 } });
    const forged = jobObjects(tenantId, '0'.repeat(24)).source;
    for (const name of [abandoned, claimed, errorFile, endedSource, runningChunk, forged]) await jobs.putObject(name, csv);
    // A queued job reads `claimed` (no worker runs here: it stays queued).
    await service.request({ tenantId, format: 'csv', object: claimed } as never, new Date());

    const t0 = Date.now();
    assert.equal(await service.sweepUploads(t0), 0, 'first seen now');
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs - 1), 0, 'not yet');
    const younger = `${tenantId}/console-younger`;
    await jobs.putObject(younger, csv);
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs - 1), 0, 'the younger one is first seen now');
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs), 3);
    for (const name of [abandoned, endedSource, forged]) assert.equal(await jobs.size(name), undefined, `${name} is gone`);
    for (const name of [claimed, errorFile, runningChunk, younger]) assert.equal(await jobs.size(name), csv.length, `${name} stays`);
    assert.equal(await service.sweepUploads(t0 + 2 * unclaimedUploadMs - 1), 1);
    assert.equal(await jobs.size(younger), undefined);
    assert.deepEqual([await jobs.size(claimed), await jobs.size(errorFile), await jobs.size(runningChunk)], [csv.length, csv.length, csv.length]);
  });

  itWith({ real: ['nats'] }, 'chunks no file names (an upload whose writer died, a deletion cut short) are deleted once unchanged for their time, and give their room back; an upload still being written stays', async () => {
    const unclaimedUploadMs = 60_000;
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 1024 * KiB, unclaimedUploadMs });
    const service = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log, requireTenant: async () => undefined });
    const chunk = new Uint8Array(100 * KiB).fill(1);
    const chunks = (nuid: string) => `$O.${IMPORTS_BUCKET}.C.${nuid}`;
    const countOf = async (nuid: string) => (await nats.jsm.streams.info(STREAM, { subjects_filter: chunks(nuid) })).state.subjects?.[chunks(nuid)] ?? 0;
    // An uploader that died after 5 chunks, before the record the object store writes last.
    const died = 'DIEDxUPLOADxxxxxxxxxxx';
    for (let i = 0; i < 5; i++) await nats.js.publish(chunks(died), chunk);
    // A deletion whose record went but whose purge of the chunks did not.
    const cutShort = `${tenantId}/cut-short`;
    await jobs.putObject(cutShort, new Uint8Array(300 * KiB).fill(2));
    const cutShortNuid = (await new Objm(nats.nc).open(IMPORTS_BUCKET).then((store) => store.info(cutShort)))!.nuid;
    await nats.jsm.streams.purge(STREAM, { filter: `$O.${IMPORTS_BUCKET}.M.${Base64UrlPaddedCodec.encode(cutShort)}` });
    assert.equal(await jobs.size(cutShort), undefined);
    // An upload being written, and a whole file (an ended job's error file).
    const growing = 'GROWINGxUPLOADxxxxxxxx';
    await nats.js.publish(chunks(growing), new Uint8Array(10 * KiB));
    const whole = jobObjects(tenantId, 'e'.repeat(24)).errors;
    const at = new Date().toISOString();
    await jobs.create({ tenantId, jobId: 'e'.repeat(24), format: 'csv', source: { object: jobObjects(tenantId, 'e'.repeat(24)).source, sealed: true }, replace: false, state: 'failed', total: 0, processed: 0, imported: 0, failed: 0, errorChunks: [], errorsObject: whole, createdAt: at, updatedAt: at });
    const errorsCsv = new Uint8Array(200 * KiB).fill(4);
    await jobs.putObject(whole, errorsCsv);
    // The stray chunks hold the bucket's room: an upload is refused.
    await assert.rejects(jobs.putObject(`${tenantId}/refused`, new Uint8Array(300 * KiB)), /maximum bytes exceeded/);

    const t0 = Date.now();
    assert.equal(await service.sweepUploads(t0), 0, 'first seen now');
    await nats.js.publish(chunks(growing), new Uint8Array(10 * KiB));
    assert.equal(await service.sweepUploads(t0 + unclaimedUploadMs), 2, 'the dead upload’s and the cut-short deletion’s chunks');
    assert.deepEqual([await countOf(died), await countOf(cutShortNuid), await countOf(growing)], [0, 0, 2]);
    assert.deepEqual(await jobs.getObject(whole), errorsCsv, 'a file with its record is whole');
    await jobs.putObject(`${tenantId}/accepted`, new Uint8Array(300 * KiB));
    assert.equal(await jobs.size(`${tenantId}/accepted`), 300 * KiB, 'the room is back');
    // The growing one goes once its count stays the same for the time.
    assert.equal(await service.sweepUploads(t0 + 2 * unclaimedUploadMs), 1);
    assert.equal(await countOf(growing), 0);
  });

  itWith({ real: ['nats'] }, 'a file whose record names chunks that are gone reads as no file (not a read that waits for ever)', async () => {
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 1024 * KiB, unclaimedUploadMs: 60_000 });
    const name = `${tenantId}/chunks-gone`;
    await jobs.putObject(name, new Uint8Array(300 * KiB).fill(3));
    const { nuid } = (await new Objm(nats.nc).open(IMPORTS_BUCKET).then((store) => store.info(name)))!;
    assert.ok(await jobs.readObject(name), 'whole: read');
    await nats.jsm.streams.purge(STREAM, { filter: `$O.${IMPORTS_BUCKET}.C.${nuid}` });
    assert.equal(await jobs.readObject(name), undefined);
  });

  itWith({ real: ['nats'] }, 'deleteObject: with a version, a name put again keeps its new file and the old version’s leftover chunks go; a deletion marker goes; an empty name is refused', async () => {
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 1024 * KiB, unclaimedUploadMs: 60_000 });
    const chunks = (nuid: string) => `$O.${IMPORTS_BUCKET}.C.${nuid}`;
    const countOf = async (subject: string) => (await nats.jsm.streams.info(STREAM, { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
    const name = `${tenantId}/pinned`;
    await jobs.putObject(name, new Uint8Array(50 * KiB).fill(5));
    const first = (await jobs.version(name))!;
    const second = new Uint8Array(60 * KiB).fill(6);
    await jobs.putObject(name, second);
    // A chunk of the first version left by a put again whose purge of them failed.
    await nats.js.publish(chunks(first.nuid), new Uint8Array(10 * KiB));

    assert.equal(await jobs.deleteObject(name, first), true);
    const kept = await jobs.getObject(name);
    assert.ok(kept && Buffer.from(kept).equals(second), 'the file put again stays');
    assert.equal(await countOf(chunks(first.nuid)), 0, 'the old version’s chunks are gone');
    const now = (await jobs.version(name))!;
    assert.equal(await jobs.deleteObject(name, now), true);
    assert.equal(await jobs.size(name), undefined);
    assert.equal(await countOf(chunks(now.nuid)), 0);
    assert.equal(await jobs.deleteObject(name, now), true, 'none left: nothing to do');

    const marked = `${tenantId}/marked`;
    await jobs.putObject(marked, new Uint8Array(KiB));
    await (await new Objm(nats.nc).open(IMPORTS_BUCKET)).delete(marked);
    const metaSubject = `$O.${IMPORTS_BUCKET}.M.${Base64UrlPaddedCodec.encode(marked)}`;
    assert.equal(await countOf(metaSubject), 1, 'the object store’s delete leaves its marker');
    assert.equal(await jobs.deleteObject(marked), true);
    assert.equal(await countOf(metaSubject), 0);

    assert.equal(await jobs.deleteObject(''), false);
  });

  it('the limits come from the environment, with defaults, and the boot refuses one below two of the largest files', () => {
    const settingsOf = (env: NodeJS.ProcessEnv) => importStoreSettings(loadUserSettingsConfig(env));
    assert.deepEqual(settingsOf({}), { maxBytes: 2 * 1024 ** 3, unclaimedUploadMs: 900_000 });
    assert.deepEqual(settingsOf({ OATH_IMPORTS_MAX_BYTES: String(1024 ** 3), OATH_UNCLAIMED_UPLOAD_SECONDS: '120' }), { maxBytes: 1024 ** 3, unclaimedUploadMs: 120_000 });
    assert.throws(() => settingsOf({ OATH_IMPORTS_MAX_BYTES: String(100 * 1024 ** 2) }), /OATH_IMPORTS_MAX_BYTES/);
    assert.throws(() => settingsOf({ OATH_UNCLAIMED_UPLOAD_SECONDS: '5' }), /OATH_UNCLAIMED_UPLOAD_SECONDS/);
  });

  itWith({ real: ['nats'] }, 'the jobs of a tenant are its own, also for tenant ids that end in a dot or hold two (which no key can as they are), a tenant whose id begins another’s included; purging a tenant’s records removes only its own', async () => {
    const jobs = await ImportJobs.open(nats, 1, { maxBytes: 1024 * KiB, unclaimedUploadMs: 60_000 });
    const at = new Date().toISOString();
    const base = `ids-${Date.now().toString(36)}`;
    const tenants = [base, `${base}.`, `${base}.eu`, `${base}..eu`, `${base}-2`];
    const jobIdOf = (i: number) => String(i + 1).repeat(24);
    for (const [i, tenant] of tenants.entries()) {
      const jobId = jobIdOf(i);
      await jobs.create({ tenantId: tenant, jobId, format: 'csv', source: { object: jobObjects(tenant, jobId).source, sealed: true }, replace: false, state: 'queued', total: 0, processed: 0, imported: 0, failed: 0, errorChunks: [], createdAt: at, updatedAt: at });
    }
    for (const [i, tenant] of tenants.entries()) {
      assert.deepEqual((await jobs.ofTenant(tenant)).map(({ job }) => [job.tenantId, job.jobId]), [[tenant, jobIdOf(i)]], tenant);
      assert.equal((await jobs.get(tenant, jobIdOf(i)))?.job.tenantId, tenant);
    }
    assert.deepEqual(
      (await jobs.all()).map(({ job }) => job.tenantId).filter((t) => t.startsWith(base)).sort(),
      [...tenants].sort(),
    );
    assert.equal(jobKey(base, 'x'), `${base}.x`, 'the keys of ordinary ids are as they were');

    // The offboarding of a deleted tenant removes its jobs' records, and only those: a tenant whose
    // id begins another's, or ends in a dot, keeps its own. A worker that still held one cannot
    // write it back at the revision it had (it stops).
    const held = (await jobs.get(`${base}.`, jobIdOf(1)))!;
    assert.equal(await jobs.purgeTenant(`${base}.`), 1);
    assert.equal(await jobs.purgeTenant(base), 1);
    assert.equal(await jobs.get(`${base}.`, jobIdOf(1)), undefined);
    assert.deepEqual(await jobs.ofTenant(base), []);
    await assert.rejects(jobs.update({ ...held.job, updatedAt: new Date().toISOString() }, held.revision), (error) => isWrongLastSequence(error));
    assert.deepEqual(
      (await jobs.all()).map(({ job }) => job.tenantId).filter((t) => t.startsWith(base)).sort(),
      [`${base}.eu`, `${base}..eu`, `${base}-2`].sort(),
    );
    assert.equal(await jobs.purgeTenant(base), 0, 'a second purge finds nothing');
  });
});
