import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContractError, unavailable } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { ImportJobs, jobObjects } from './adapters/import-jobs.js';
import { OathImportService } from './application/oath-import.service.js';
import type { OathTokensService, RowOutcome } from './application/oath-tokens.service.js';

/**
 * Import jobs against real JetStream buckets, with a token service that fails when told to. On a
 * nats-server of the test's own: the shared buckets may hold other runs' unfinished jobs, which
 * this worker (with its fake token service) must not take up.
 */
describe('oath.import jobs and infrastructure trouble (real NATS)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  let jobs: ImportJobs;
  let service: OathImportService | undefined;
  const tenantId = `import-${Date.now().toString(36)}`;

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'oath-import-test', connectTimeoutMs: 5_000 });
    jobs = await ImportJobs.open(nats, 1);
  });

  after(async () => {
    await service?.stop();
    await nats.nc.drain();
    await server.stop();
  });

  const until = async <T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const found = await probe();
      if (found !== undefined) return found;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await jobs.all())}`.slice(0, 3000));
      await sleep(100);
    }
  };

  itWith({ real: ['nats'] }, 'an unavailable store interrupts a job, which resumes from its checkpoint with its file; it does not fail it', async () => {
    let failures = 1;
    const imported: string[] = [];
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        if (failures > 0) {
          failures--;
          throw unavailable('event store unavailable');
        }
        imported.push(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    service = new OathImportService({ jobs, tokens, keyring: loadKeyring({}).keyring, log: createLogger('oath-import-test', { level: 'error' }), requireTenant: async () => undefined });
    service.start();
    const csv = 'upn,serial number,secret key,time interval,manufacturer,model\r\n,SN-1,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30,Contoso,Key\r\n,SN-2,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30,Contoso,Key\r\n';
    const { jobId } = await service.request({ tenantId, format: 'csv', content: csv } as never, new Date());

    // The first row met an unavailable store: the job stays running (its lease will lapse), the file stays.
    await until('the store to fail', async () => (failures === 0 ? true : undefined));
    await sleep(500);
    const stored = (await jobs.get(tenantId, jobId))!;
    assert.equal(stored.job.state, 'running', `the job is ${stored.job.state} (${stored.job.error ?? ''})`);
    assert.equal(stored.job.error, undefined);
    assert.notEqual(await jobs.size(jobObjects(tenantId, jobId).source), undefined, 'the file is still there');

    // Its lease lapses (as after IMPORT_LEASE_MS); a worker takes it up again and completes it.
    await jobs.update({ ...stored.job, lease: { owner: stored.job.lease!.owner, until: 0 } }, stored.revision);
    const done = await until('the job to complete', async () => {
      const now = await jobs.get(tenantId, jobId);
      return now && (now.job.state === 'completed' || now.job.state === 'failed') ? now.job : undefined;
    });
    assert.deepEqual([done.state, done.imported, done.failed, done.error], ['completed', 2, 0, undefined]);
    // The batch cut short is done again (a row done twice is recognised by its aggregate).
    assert.deepEqual([...new Set(imported)].sort(), ['SN-1', 'SN-2']);
    assert.equal(await jobs.size(jobObjects(tenantId, jobId).source), undefined, 'the file is dropped once the job ends');
  });

  itWith({ real: ['nats'] }, 'refuses to import a job’s own file (an error file, another job’s sealed file): the job would delete it when it ends', async () => {
    // No worker here; the first test's worker runs whatever job this would create.
    const requester = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log: createLogger('oath-import-test', { level: 'error' }), requireTenant: async () => undefined });
    const errorsFile = jobObjects(tenantId, 'c'.repeat(24)).errors;
    const errorsCsv = Buffer.from('row,user,serial,failure reason\r\n1,,SN-9,secret key: missing\r\n');
    await jobs.putObject(errorsFile, errorsCsv);
    for (const object of [errorsFile, jobObjects(tenantId, 'c'.repeat(24)).source]) {
      await assert.rejects(
        requester.request({ tenantId, format: 'csv', object } as never, new Date()),
        (e: unknown) => e instanceof ContractError && e.code === 'invalid_request' && !e.message.includes('c'.repeat(24)),
      );
    }
    assert.equal(Buffer.from((await jobs.getObject(errorsFile)) ?? []).toString('utf8'), errorsCsv.toString('utf8'), 'the error file is untouched');
    assert.deepEqual((await jobs.all()).filter(({ job }) => !job.source.sealed && job.source.object.includes('/jobs/')), [], 'no job reads a job’s file as an upload');
  });

  itWith({ real: ['nats'] }, 'refuses base64 content that is not strict base64, rather than importing what node’s lenient decoder makes of it', async () => {
    const requester = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log: createLogger('oath-import-test', { level: 'error' }), requireTenant: async () => undefined });
    const csv = Buffer.from('upn,serial number,secret key,time interval\r\n,SN-64,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30\r\n');
    const base64 = csv.toString('base64');
    const before = (await jobs.all()).length;
    // A damaged character, a truncation, base64url's alphabet.
    for (const content of [`${base64.slice(0, 20)}*${base64.slice(21)}`, base64.slice(0, -3), base64.replace(/\+/g, '-').replace(/\//g, '_') + '-_']) {
      await assert.rejects(
        requester.request({ tenantId, format: 'csv', content, encoding: 'base64' } as never, new Date()),
        (e: unknown) => e instanceof ContractError && e.code === 'invalid_request' && /^content: not base64/.test(e.message),
      );
    }
    assert.equal((await jobs.all()).length, before, 'no job was created');
    // Line breaks (as MIME wraps it) are fine.
    const { jobId } = await requester.request({ tenantId, format: 'csv', content: base64.replace(/.{16}/g, '$&\r\n'), encoding: 'base64' } as never, new Date());
    assert.ok((await jobs.get(tenantId, jobId))?.job.source.sealed);
  });

  itWith({ real: ['nats'] }, 'refuses an object not in the imports bucket with a message that does not echo its name', async () => {
    const requester = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log: createLogger('oath-import-test', { level: 'error' }), requireTenant: async () => undefined });
    await assert.rejects(
      requester.request({ tenantId, format: 'csv', object: `${tenantId}/never-uploaded-Secret.csv` } as never, new Date()),
      (e: unknown) => e instanceof ContractError && e.code === 'not_found' && e.message === 'object: no such file in the imports bucket',
    );
  });
});
