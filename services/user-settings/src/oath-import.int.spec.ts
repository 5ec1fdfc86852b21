import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { pbkdf2 } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ContractError, MAX_INLINE_ERRORS_BYTES, notFound, unavailable } from '@mfa/contracts';
import { loadKeyring, seal, SealContext } from '@mfa/crypto';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { Objm } from '@nats-io/obj';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { ImportJobs, jobObjects, type ImportJob } from './adapters/import-jobs.js';
import { IMPORT_BATCH, OathImportService, TENANT_DELETED, UPLOAD_REPLACED } from './application/oath-import.service.js';
import type { OathTokensService, RowOutcome } from './application/oath-tokens.service.js';
import { parseCsv } from './domain/oath-import/csv.js';
import { parsePskc, PskcKeys } from './domain/oath-import/pskc.js';
import type { ParsedRow } from './domain/oath-import/types.js';

/**
 * A nats-server of the describe's own, a connection to it and the import buckets (`opened`, before
 * its tests); after them, the service a test left running (`running`), the connection and the server.
 */
function onOwnNatsServer(name: string, opened: (nats: NatsClients, jobs: ImportJobs) => void, running: () => OathImportService | undefined): void {
  let server: NatsServerProcess;
  let nats: NatsClients;
  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name, connectTimeoutMs: 5_000 });
    opened(nats, await ImportJobs.open(nats, 1));
  });
  after(async () => {
    await running()?.stop();
    await nats.nc.drain();
    await server.stop();
  });
}

/** The job once it ended (completed or failed), read every 20 ms for up to 30 s. */
async function jobEnded(jobs: ImportJobs, tenantId: string, jobId: string): Promise<ImportJob> {
  const end = Date.now() + 30_000;
  for (;;) {
    const now = await jobs.get(tenantId, jobId);
    if (now && (now.job.state === 'completed' || now.job.state === 'failed')) return now.job;
    if (Date.now() > end) throw new Error(`timed out waiting for job ${jobId} to end: ${JSON.stringify(now?.job)}`);
    await sleep(20);
  }
}

/**
 * Import jobs against real JetStream buckets, with a token service that fails when told to. On a
 * nats-server of the test's own: the shared buckets may hold other runs' unfinished jobs, which
 * this worker (with its fake token service) must not take up.
 */
describe('oath.import jobs and infrastructure trouble (real NATS)', () => {
  let nats: NatsClients;
  let jobs: ImportJobs;
  let service: OathImportService | undefined;
  const tenantId = `import-${Date.now().toString(36)}`;

  onOwnNatsServer('oath-import-test', (opened, buckets) => {
    nats = opened;
    jobs = buckets;
  }, () => service);

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

  itWith({ real: ['nats'] }, 'refuses an object store link: an upload is the file itself, not a name for another object', async () => {
    const requester = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log: createLogger('oath-import-test', { level: 'error' }), requireTenant: async () => undefined });
    const target = `${tenantId}/linked-${Date.now().toString(36)}.csv`;
    await jobs.putObject(target, Buffer.from('upn,serial number,secret key,time interval\r\n,SN-65,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30\r\n'));
    const store = await new Objm(nats.nc).open('MFA_IMPORTS');
    const link = `${tenantId}/link-${Date.now().toString(36)}.csv`;
    await store.link(link, (await store.info(target))!);
    const before = (await jobs.all()).length;
    await assert.rejects(
      requester.request({ tenantId, format: 'csv', object: link } as never, new Date()),
      (e: unknown) => e instanceof ContractError && e.code === 'invalid_request' && e.message === 'object: a link, not a file: upload the file itself',
    );
    assert.equal((await jobs.all()).length, before, 'no job was created');
  });

  itWith({ real: ['nats'] }, 'refuses an object not in the imports bucket with a message that does not echo its name', async () => {
    const requester = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring: loadKeyring({}).keyring, log: createLogger('oath-import-test', { level: 'error' }), requireTenant: async () => undefined });
    await assert.rejects(
      requester.request({ tenantId, format: 'csv', object: `${tenantId}/never-uploaded-Secret.csv` } as never, new Date()),
      (e: unknown) => e instanceof ContractError && e.code === 'not_found' && e.message === 'object: no such file in the imports bucket',
    );
  });
});

const PSK = '000102030405060708090a0b0c0d0e0f';
const PASSWORD = 'correct horse battery staple';

/** Two PSKC files of three TOTP keys by python3-pskc: one under a key derived from PASSWORD, one under PSK. */
function pskcFiles(): { password: Buffer; psk: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'oath-import-jobs-'));
  try {
    execFileSync(
      '/usr/bin/python3',
      [
        '-c',
        String.raw`
import sys, pskc
def keys(p):
    for i in range(3):
        p.add_key(id='k%d' % i, serial='JOB-%d' % i, secret=bytes(range(i, i + 20)), algorithm='urn:ietf:params:xml:ns:keyprov:pskc:totp', response_length=6)
p = pskc.PSKC(); keys(p); p.encryption.setup_pbkdf2('${PASSWORD}', iterations=1000); p.write(sys.argv[1] + '/password.pskcxml')
p = pskc.PSKC(); keys(p); p.encryption.setup_preshared_key(key=bytes.fromhex('${PSK}')); p.write(sys.argv[1] + '/psk.pskcxml')
`,
        dir,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    return { password: readFileSync(join(dir, 'password.pskcxml')), psk: readFileSync(join(dir, 'psk.pskcxml')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A job's key material and its reading of the error file, on a nats-server of the test's own (its worker must be the only one). */
describe('oath.import jobs: key material and error files (real NATS)', () => {
  let nats: NatsClients;
  let jobs: ImportJobs;
  let service: OathImportService | undefined;
  const tenantId = `keys-${Date.now().toString(36)}`;
  const log = createLogger('oath-import-test', { level: 'error' });
  const keyring = loadKeyring({}).keyring;
  const files = pskcFiles();

  onOwnNatsServer('oath-import-keys-test', (opened, buckets) => {
    nats = opened;
    jobs = buckets;
  }, () => service);

  const ended = async (jobId: string): Promise<ImportJob> => {
    const end = Date.now() + 30_000;
    for (;;) {
      const now = await jobs.get(tenantId, jobId);
      if (now && (now.job.state === 'completed' || now.job.state === 'failed')) return now.job;
      if (Date.now() > end) throw new Error(`timed out waiting for job ${jobId}: ${JSON.stringify(now?.job)}`);
      await sleep(100);
    }
  };

  itWith({ real: ['nats'] }, 'a PSKC job derives its password key once per run although it reads the file twice (count, import); a resumed run derives it again and completes', async () => {
    const derivations: number[] = [];
    const pskcKeys = (given: { password?: string; psk?: Buffer }) => {
      const run = derivations.push(0) - 1;
      return new PskcKeys(given, (password, salt, iterations, length, hash) => {
        derivations[run]!++;
        return promisify(pbkdf2)(password, salt, iterations, length, hash);
      });
    };
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
    service = new OathImportService({ jobs, tokens, keyring, log, requireTenant: async () => undefined, pskcKeys });
    service.start();
    const { jobId } = await service.request({ tenantId, format: 'pskc', content: files.password.toString('base64'), encoding: 'base64', password: PASSWORD } as never, new Date());

    // The first run counted the keys, then met an unavailable store at its first one: it stopped at its checkpoint.
    const end = Date.now() + 20_000;
    while (failures > 0 || (await jobs.get(tenantId, jobId))?.job.total !== 3) {
      if (Date.now() > end) throw new Error('timed out waiting for the first run to stop');
      await sleep(100);
    }
    await sleep(500);
    const stored = (await jobs.get(tenantId, jobId))!;
    assert.deepEqual([stored.job.state, stored.job.processed], ['running', 0]);
    assert.deepEqual(derivations, [1], 'one derivation for both readings of the first run');

    // Its lease lapses; the resumed run reads the file once more, with a key of its own.
    await jobs.update({ ...stored.job, lease: { owner: stored.job.lease!.owner, until: 0 } }, stored.revision);
    const done = await ended(jobId);
    assert.deepEqual([done.state, done.total, done.imported, done.failed, done.error], ['completed', 3, 3, 0, undefined]);
    assert.deepEqual([...new Set(imported)].sort(), ['JOB-0', 'JOB-1', 'JOB-2']);
    assert.deepEqual(derivations, [1, 1]);
    await service.stop();
    service = undefined;
  });

  itWith({ real: ['nats'] }, 'the pre-shared key of a PSKC job is zeroed when its run ends', async () => {
    const given: Buffer[] = [];
    const pskcKeys = (keys: { password?: string; psk?: Buffer }) => {
      if (keys.psk) given.push(keys.psk);
      return new PskcKeys(keys);
    };
    const imported: string[] = [];
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        imported.push(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    service = new OathImportService({ jobs, tokens, keyring, log, requireTenant: async () => undefined, pskcKeys });
    service.start();
    const { jobId } = await service.request({ tenantId, format: 'pskc', content: files.psk.toString('base64'), encoding: 'base64', psk: PSK } as never, new Date());
    const done = await ended(jobId);
    assert.deepEqual([done.state, done.imported], ['completed', 3]);
    assert.deepEqual(imported.sort(), ['JOB-0', 'JOB-1', 'JOB-2'], 'the psk opened the file');
    // The run's finally block runs after the job's last write: wait for the worker to be idle.
    await service.stop();
    service = undefined;
    assert.equal(given.length, 1);
    assert.equal(given[0]!.length, 16);
    assert.ok(given[0]!.every((byte) => byte === 0), `the psk is ${given[0]!.toString('hex')}`);
  });

  itWith({ real: ['nats'] }, 'a job whose run stopped while closing it (its file and error chunks deleted, its record not yet closed) is closed by the next run, with its error file whole', async () => {
    const jobId = 'd'.repeat(24);
    const objects = jobObjects(tenantId, jobId);
    const errorsCsv = 'row,user,serial,failure reason\r\n2,,SN-2,secret key: missing\r\n';
    // As `finish` leaves it when the process dies before its last write: error file written, chunk and file deleted.
    await jobs.putObject(objects.errors, Buffer.from(errorsCsv, 'utf8'));
    const at = new Date().toISOString();
    await jobs.create({ jobId, tenantId, format: 'csv', source: { object: objects.source, sealed: true }, replace: false, state: 'running', total: 3, processed: 3, imported: 2, failed: 1, errorChunks: [0], createdAt: at, updatedAt: at, lease: { owner: 'a-worker-that-died', until: 0 } });
    const imported: string[] = [];
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        imported.push(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    service = new OathImportService({ jobs, tokens, keyring, log, requireTenant: async () => undefined });
    service.start();
    const done = await ended(jobId);
    await service.stop();
    service = undefined;
    assert.deepEqual([done.state, done.error, done.processed, done.imported, done.failed, done.errorsObject], ['completed', undefined, 3, 2, 1, objects.errors]);
    assert.deepEqual(imported, [], 'no row done again');
    assert.equal(Buffer.from((await jobs.getObject(objects.errors)) ?? []).toString('utf8'), errorsCsv, 'the error file keeps its rows');
  });

  itWith({ real: ['nats'] }, 'status reads only the head of a large error file, and the whole of a small one', async () => {
    // Rows of about 100 bytes: some 3 MiB, far more than a reply shows.
    const line = (i: number) => `${i},user-${i}@contoso.example,SN-${String(i).padStart(8, '0')},secret key: not Base32 (RFC 4648: letters A-Z and digits 2-7 only)\r\n`;
    const big = Buffer.from(`row,user,serial,failure reason\r\n${Array.from({ length: 30_000 }, (_, i) => line(i + 1)).join('')}`, 'utf8');
    const small = Buffer.from(`row,user,serial,failure reason\r\n${line(1)}${line(2)}`, 'utf8');
    const at = new Date().toISOString();
    const make = async (jobId: string, content: Buffer) => {
      const errorsObject = jobObjects(tenantId, jobId).errors;
      await jobs.putObject(errorsObject, content);
      const job: ImportJob = { jobId, tenantId, format: 'csv', source: { object: jobObjects(tenantId, jobId).source, sealed: true }, replace: false, state: 'completed', total: 2, processed: 2, imported: 0, failed: 2, errorChunks: [], errorsObject, createdAt: at, updatedAt: at, finishedAt: at };
      await jobs.create(job);
    };
    await make('a'.repeat(24), big);
    await make('b'.repeat(24), small);

    // The adapter reads whole chunks (128 KiB) up to the limit, not the file.
    const head = (await jobs.readHead(jobObjects(tenantId, 'a'.repeat(24)).errors, MAX_INLINE_ERRORS_BYTES))!;
    assert.equal(head.size, big.length);
    assert.ok(head.bytes.length >= MAX_INLINE_ERRORS_BYTES && head.bytes.length <= MAX_INLINE_ERRORS_BYTES + 128 * 1024, `read ${head.bytes.length} bytes`);
    assert.ok(head.bytes.equals(big.subarray(0, head.bytes.length)));

    // The service never reads an error file whole.
    const whole = () => Promise.reject(new Error('read the whole object'));
    const bounded = new Proxy(jobs, { get: (target, name) => (name === 'getObject' || name === 'readObject' ? whole : Reflect.get(target, name, target)) });
    const requester = new OathImportService({ jobs: bounded, tokens: {} as OathTokensService, keyring, log, requireTenant: async () => undefined });
    const truncated = await requester.status({ tenantId, jobId: 'a'.repeat(24) }, new Date());
    assert.equal(truncated.errorsTruncated, true);
    const shown = Buffer.from(truncated.errorsCsv!, 'utf8');
    assert.ok(shown.length <= MAX_INLINE_ERRORS_BYTES && shown.length > MAX_INLINE_ERRORS_BYTES - 200, `${shown.length} bytes shown`);
    assert.ok(big.subarray(0, shown.length).equals(shown) && truncated.errorsCsv!.endsWith('\r\n'), 'whole lines from the start of the file');
    const full = await requester.status({ tenantId, jobId: 'b'.repeat(24) }, new Date());
    assert.deepEqual([full.errorsCsv, full.errorsTruncated], [small.toString('utf8'), undefined]);
  });
});

/** A CSV seed file of `rows` tokens, unassigned, with serial numbers `<prefix>-1`… */
const seeds = (prefix: string, rows: number): Buffer =>
  Buffer.from(`serial number,secret key,time interval\r\n${Array.from({ length: rows }, (_, i) => `${prefix}-${i + 1},JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30\r\n`).join('')}`, 'utf8');

/**
 * What a job does when its run is cut short, when its upload is put again under its name, and
 * when it shares an instance with another tenant's: on a nats-server of the test's own (its
 * workers must be the only ones), with the domain's own parsers, watched as they hand rows out.
 */
describe('oath.import jobs: interrupted runs, replaced uploads and tenants sharing an instance (real NATS)', () => {
  let nats: NatsClients;
  let jobs: ImportJobs;
  let service: OathImportService | undefined;
  const log = createLogger('oath-import-test', { level: 'error' });
  const keyring = loadKeyring({}).keyring;
  /** Every secret the parsers handed to a job, as the job got it (the same buffer). */
  const handedOut: Buffer[] = [];
  const parse = async function* (format: 'csv' | 'pskc', input: Buffer | AsyncIterable<Buffer>, keys: PskcKeys): AsyncGenerator<ParsedRow> {
    for await (const row of format === 'csv' ? parseCsv(input) : parsePskc(input, keys)) {
      if (row.ok) handedOut.push(row.token.secret);
      yield row;
    }
  };
  const notZeroed = () => handedOut.filter((secret) => secret.some((byte) => byte !== 0)).length;

  onOwnNatsServer('oath-import-runs-test', (opened, buckets) => {
    nats = opened;
    jobs = buckets;
  }, () => service);

  const until = async <T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 30_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const found = await probe();
      if (found !== undefined) return found;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(20);
    }
  };
  const ended = (tenantId: string, jobId: string) => jobEnded(jobs, tenantId, jobId);
  /** The job's lease lapses, as IMPORT_LEASE_MS after its worker stopped. */
  const lapse = async (tenantId: string, jobId: string) => {
    const stored = (await jobs.get(tenantId, jobId))!;
    await jobs.update({ ...stored.job, lease: { owner: stored.job.lease!.owner, until: 0 } }, stored.revision);
  };
  const worker = (tokens: OathTokensService, jobsPerInstance?: number) => {
    service = new OathImportService({ jobs, tokens, keyring, log, requireTenant: async () => undefined, parse, jobsPerInstance });
    service.start();
    return service;
  };

  itWith({ real: ['nats'] }, 'the secrets of a batch cut short by a failure are all zeroed, those no lane reached too, and so are those a resumed run reads again to find its checkpoint', async () => {
    const tenantId = `zero-${Date.now().toString(36)}`;
    handedOut.length = 0;
    let calls = 0;
    const imported = new Set<string>();
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        // In the second batch (rows 501–1000): the lane of this row stops with most of its rows not reached.
        if (++calls === 700) throw unavailable('event store unavailable');
        await sleep(0);
        imported.add(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const first = worker(tokens);
    const { jobId } = await first.request({ tenantId, format: 'csv', content: seeds('Z', 1200).toString('utf8') } as never, new Date());
    await until('the store to fail', () => (calls >= 700 ? true : undefined));
    // The run ends at the failure (its job left at its checkpoint for a later run); its worker stops.
    await first.stop();
    const stopped = (await jobs.get(tenantId, jobId))!.job;
    assert.deepEqual([stopped.state, stopped.processed], ['running', 500]);
    assert.ok(handedOut.length >= 1700, `${handedOut.length} secrets handed out (1200 counted, then the import's)`);
    assert.equal(notZeroed(), 0, `${notZeroed()} of ${handedOut.length} secrets handed out are not zeroed after the run was cut short`);

    // A resumed run reads the first 500 rows again to skip them, then completes.
    handedOut.length = 0;
    await lapse(tenantId, jobId);
    const second = worker(tokens);
    const done = await ended(tenantId, jobId);
    await second.stop();
    service = undefined;
    assert.deepEqual([done.state, done.imported, done.failed], ['completed', 1200, 0]);
    assert.equal(imported.size, 1200);
    assert.equal(handedOut.length, 1200, 'the resumed run read the file once (its count was done)');
    assert.equal(notZeroed(), 0, `${notZeroed()} of the resumed run's ${handedOut.length} secrets are not zeroed`);
  });

  itWith({ real: ['nats'] }, 'an upload put again under its name while its job runs: the job reads only the version it was asked to import, fails with a reason saying so, and leaves the new file', async () => {
    const tenantId = `replaced-${Date.now().toString(36)}`;
    const object = `${tenantId}/tokens.csv`;
    const replacement = seeds('NEW', 1200);
    await jobs.putObject(object, seeds('OLD', 1200));
    let calls = 0;
    const imported: string[] = [];
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        if (++calls === 700) {
          // The tenant uploads another file under the same name, and the run is cut short (its instance stops).
          await jobs.putObject(object, replacement);
          throw unavailable('event store unavailable');
        }
        imported.push(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const first = worker(tokens);
    const { jobId } = await first.request({ tenantId, format: 'csv', object } as never, new Date());
    await until('the store to fail', () => (calls >= 700 ? true : undefined));
    await first.stop();
    assert.equal((await jobs.get(tenantId, jobId))!.job.processed, 500);

    // The run that resumes it finds another file under the name.
    await lapse(tenantId, jobId);
    const second = worker(tokens);
    const done = await ended(tenantId, jobId);
    await second.stop();
    service = undefined;
    assert.deepEqual([done.state, done.error, done.processed], ['failed', UPLOAD_REPLACED, 500]);
    assert.deepEqual(imported.filter((serial) => !serial.startsWith('OLD-')), [], 'no row of the new file imported');
    assert.deepEqual(Buffer.from((await jobs.getObject(object)) ?? []), replacement, 'the new file is still there, whole');
  });

  itWith({ real: ['nats'] }, 'an upload put again under its name while a run is reading it: the read ends at its next chunk, the job fails with the same reason, and the new file stays', async () => {
    const tenantId = `midread-${Date.now().toString(36)}`;
    const object = `${tenantId}/tokens.csv`;
    // Some 3 MiB: many chunks, read one by one as the rows are imported.
    const replacement = seeds('NEW', 60_000);
    await jobs.putObject(object, seeds('OLD', 60_000));
    let calls = 0;
    const imported: string[] = [];
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        if (++calls === 1) await jobs.putObject(object, replacement);
        imported.push(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const first = worker(tokens);
    const { jobId } = await first.request({ tenantId, format: 'csv', object } as never, new Date());
    const done = await ended(tenantId, jobId);
    await first.stop();
    service = undefined;
    assert.deepEqual([done.state, done.error], ['failed', UPLOAD_REPLACED]);
    assert.ok(done.processed < 60_000, `${done.processed} rows processed`);
    assert.deepEqual(imported.filter((serial) => !serial.startsWith('OLD-')), [], 'no row of the new file imported');
    assert.equal((await jobs.version(object))?.size, replacement.length, 'the new file stays');
  });

  itWith({ real: ['nats'] }, 'a tenant’s small job started while another tenant’s large job runs on the same instance finishes before the large one; the large one’s tenant waits for it with its next job, and the two share the lanes of one batch', async () => {
    const large = `large-${Date.now().toString(36)}`;
    const small = `small-${Date.now().toString(36)}`;
    let largeImported = 0;
    let largeWhenSmallDone: number | undefined;
    let smallImported = 0;
    let importing = 0;
    let mostAtOnce = 0;
    const tokens = {
      importToken: async (job: { tenantId: string; jobId: string }): Promise<RowOutcome> => {
        mostAtOnce = Math.max(mostAtOnce, ++importing);
        await sleep(2);
        importing--;
        if (job.tenantId === small) {
          if (++smallImported === 3) largeWhenSmallDone = largeImported;
        } else largeImported++;
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const shared = worker(tokens);
    const big = await shared.request({ tenantId: large, format: 'csv', content: seeds('L', 10_000).toString('utf8') } as never, new Date());
    await until('the large job to have done a batch', async () => ((await jobs.get(large, big.jobId))!.job.processed >= 500 ? true : undefined));
    // The large job's tenant asks for another; then another tenant asks for a small one.
    const next = await shared.request({ tenantId: large, format: 'csv', content: seeds('L2', 3).toString('utf8') } as never, new Date());
    const little = await shared.request({ tenantId: small, format: 'csv', content: seeds('S', 3).toString('utf8') } as never, new Date());
    const smallDone = await ended(small, little.jobId);
    const [largeThen, nextThen] = [(await jobs.get(large, big.jobId))!.job, (await jobs.get(large, next.jobId))!.job];
    const largeDone = await ended(large, big.jobId);
    const nextDone = await ended(large, next.jobId);
    await shared.stop();
    service = undefined;
    assert.deepEqual([smallDone.state, smallDone.imported, largeDone.state, largeDone.imported, nextDone.state], ['completed', 3, 'completed', 10_000, 'completed']);
    assert.equal(largeThen.state, 'running', `the large job was ${largeThen.state} when the small one ended`);
    assert.ok(largeWhenSmallDone !== undefined && largeWhenSmallDone < 10_000, `the large job had imported ${largeWhenSmallDone} of 10000 tokens when the small one's were done`);
    assert.equal(nextThen.state, 'queued', 'the large job’s tenant’s next job waits for it on this instance');
    // One batch at a time on the instance, of whichever job: no more load than one job put on it.
    assert.ok(mostAtOnce <= 16, `${mostAtOnce} rows imported at once`);
  });

  itWith({ real: ['nats'] }, 'a tenant whose id ends in a dot or holds two imports as any other (its job’s key is one NATS accepts)', async () => {
    const base = `dots-${Date.now().toString(36)}`;
    const imported: string[] = [];
    const tokens = {
      importToken: async (job: { tenantId: string }): Promise<RowOutcome> => {
        imported.push(job.tenantId);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const shared = worker(tokens);
    for (const tenant of [`${base}.`, `${base}..eu`]) {
      const { jobId } = await shared.request({ tenantId: tenant, format: 'csv', content: seeds('D', 2).toString('utf8') } as never, new Date());
      const done = await ended(tenant, jobId);
      assert.deepEqual([done.state, done.imported], ['completed', 2], tenant);
      assert.deepEqual((await jobs.ofTenant(tenant)).map(({ job }) => job.jobId), [jobId]);
    }
    await shared.stop();
    service = undefined;
    assert.deepEqual(imported, [`${base}.`, `${base}.`, `${base}..eu`, `${base}..eu`]);
  });

  itWith({ real: ['nats'] }, 'OATH_IMPORT_JOBS_PER_INSTANCE=1: another tenant’s job waits for the one under way on the instance', async () => {
    const [first, second] = ['one', 'two'].map((t) => `single-${t}-${Date.now().toString(36)}`);
    // Rows that take a while, as in the test above: with more jobs at once, the second would end while the first runs.
    const tokens = {
      importToken: async (): Promise<RowOutcome> => {
        await sleep(2);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const single = worker(tokens, 1);
    const big = await single.request({ tenantId: first!, format: 'csv', content: seeds('F', 5_000).toString('utf8') } as never, new Date());
    await until('the first job to have done a batch', async () => ((await jobs.get(first!, big.jobId))!.job.processed >= 500 ? true : undefined));
    const little = await single.request({ tenantId: second!, format: 'csv', content: seeds('T', 3).toString('utf8') } as never, new Date());
    const littleDone = await ended(second!, little.jobId);
    const bigThen = (await jobs.get(first!, big.jobId))!.job;
    await single.stop();
    service = undefined;
    assert.deepEqual([littleDone.state, littleDone.imported], ['completed', 3]);
    assert.deepEqual([bigThen.state, bigThen.imported], ['completed', 5_000], 'the second tenant’s job started only once the first had ended');
  });

  itWith({ real: ['nats'] }, 'a stopping instance finishes only the batch under way: the jobs waiting for their turn do nothing more, and resume from their checkpoints', async () => {
    const tenants = ['a', 'b', 'c'].map((t) => `stop-${t}-${Date.now().toString(36)}`);
    let stopping = false;
    let importedAfterStop = 0;
    const tokens = {
      importToken: async (): Promise<RowOutcome> => {
        await sleep(2);
        if (stopping) importedAfterStop++;
        return { imported: true };
      },
    } as unknown as OathTokensService;
    const shared = worker(tokens);
    const requested = await Promise.all(tenants.map((tenantId) => shared.request({ tenantId, format: 'csv', content: seeds(tenantId.slice(5, 6).toUpperCase(), 10_000).toString('utf8') } as never, new Date())));
    // All three running, each past a batch: two of them wait for their turn at any moment.
    await until('three jobs past a batch', async () => {
      const done = await Promise.all(tenants.map(async (tenantId, n) => (await jobs.get(tenantId, requested[n]!.jobId))!.job.processed));
      return done.every((processed) => processed >= 500) ? true : undefined;
    });
    stopping = true;
    await shared.stop();
    service = undefined;
    assert.ok(importedAfterStop <= 500, `${importedAfterStop} rows imported after stop(): more than the batch under way`);
    const left = await Promise.all(tenants.map(async (tenantId, n) => (await jobs.get(tenantId, requested[n]!.jobId))!.job));
    assert.ok(left.every((job) => job.state === 'running' && job.processed < 10_000), JSON.stringify(left.map((job) => [job.state, job.processed])));
  });
});

/**
 * Jobs of a tenant deleted (tenants.delete) before they end: on a nats-server of the test's own,
 * with a tenant check that says which tenants are deleted, as requireExistingTenant would.
 */
describe('oath.import jobs of a deleted tenant (real NATS)', () => {
  let nats: NatsClients;
  let jobs: ImportJobs;
  let service: OathImportService | undefined;
  const log = createLogger('oath-import-test', { level: 'error' });
  const keyring = loadKeyring({}).keyring;
  const deleted = new Set<string>();
  const requireTenant = async (tenantId: string) => {
    if (deleted.has(tenantId)) throw notFound('unknown tenant');
  };

  onOwnNatsServer('oath-import-deleted-test', (opened, buckets) => {
    nats = opened;
    jobs = buckets;
  }, () => service);

  const ended = (tenantId: string, jobId: string) => jobEnded(jobs, tenantId, jobId);

  itWith({ real: ['nats'] }, 'a job of a deleted tenant is never started: closed at once, failed (the tenant was deleted), nothing of its file read or imported, its file deleted', async () => {
    const tenantId = `gone-${Date.now().toString(36)}`;
    const jobId = 'e'.repeat(24);
    const objects = jobObjects(tenantId, jobId);
    // Requested just before the deletion: its sealed file and its queued record are there.
    await jobs.putObject(objects.source, Buffer.from(seal(keyring, seeds('GONE', 3), SealContext.importFile(tenantId, jobId, 'file')), 'utf8'));
    const at = new Date().toISOString();
    await jobs.create({ jobId, tenantId, format: 'csv', source: { object: objects.source, sealed: true }, replace: false, state: 'queued', total: 0, processed: 0, imported: 0, failed: 0, errorChunks: [], createdAt: at, updatedAt: at });
    deleted.add(tenantId);
    const imported: string[] = [];
    const tokens = {
      importToken: async (_job: unknown, token: { serialNumber: string }): Promise<RowOutcome> => {
        imported.push(token.serialNumber);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    service = new OathImportService({ jobs, tokens, keyring, log, requireTenant });
    service.start();
    const done = await ended(tenantId, jobId);
    await service.stop();
    service = undefined;
    assert.deepEqual([done.state, done.error, done.total, done.processed, done.imported], ['failed', TENANT_DELETED, 0, 0, 0]);
    assert.deepEqual(imported, [], 'no row imported');
    assert.equal(done.lease, undefined, 'an ended job keeps no lease');
    assert.equal(await jobs.size(objects.source), undefined, 'its file is deleted');
  });

  itWith({ real: ['nats'] }, 'a job whose tenant is deleted while it runs ends before its next batch: failed (the tenant was deleted), its file and error chunks deleted, no error file', async () => {
    const tenantId = `deleting-${Date.now().toString(36)}`;
    let calls = 0;
    const tokens = {
      importToken: async (): Promise<RowOutcome> => {
        // The tenant is deleted while the first batch runs.
        if (++calls === 1) deleted.add(tenantId);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    service = new OathImportService({ jobs, tokens, keyring, log, requireTenant });
    service.start();
    // A row refused in the first batch: an error chunk, which no error file may outlive the tenant in.
    const csv = Buffer.concat([Buffer.from('serial number,secret key,time interval\r\nDEL-0,,30\r\n', 'utf8'), seeds('DEL', 3 * IMPORT_BATCH).subarray('serial number,secret key,time interval\r\n'.length)]);
    const { jobId } = await service.request({ tenantId, format: 'csv', content: csv.toString('utf8') } as never, new Date());
    const done = await ended(tenantId, jobId);
    await service.stop();
    service = undefined;
    assert.deepEqual([done.state, done.error, done.processed, done.imported, done.failed], ['failed', TENANT_DELETED, IMPORT_BATCH, IMPORT_BATCH - 1, 1]);
    assert.equal(calls, IMPORT_BATCH - 1, 'the batch under way at the deletion ends; no row of the next one is imported');
    assert.equal(done.errorsObject, undefined, 'no error file');
    const objects = jobObjects(tenantId, jobId);
    assert.equal(await jobs.size(objects.errorChunk(0)), undefined, 'its error chunk is deleted');
    assert.equal(await jobs.size(objects.source), undefined, 'its file is deleted');
  });

  itWith({ real: ['nats'] }, 'the offboarding ends the tenant’s jobs; one whose worker never says it stopped is waited for IMPORT_LEASE_MS (whatever its lease’s clock says), the consumer told meanwhile that it works; an abort stops the wait, which a resumed offboarding does again', async () => {
    const tenantId = `orphan-${Date.now().toString(36)}`;
    const at = new Date().toISOString();
    const record = { tenantId, format: 'csv' as const, replace: false, total: 1_000, processed: 500, imported: 500, failed: 0, errorChunks: [], createdAt: at, updatedAt: at };
    // Its worker cut off in the middle of a batch, its clock an hour ahead.
    const running = 'a'.repeat(24);
    await jobs.create({ ...record, jobId: running, source: { object: jobObjects(tenantId, running).source, sealed: true }, sealedKeys: 'sealed', state: 'running', lease: { owner: 'a-worker-cut-off', until: Date.now() + 3_600_000 } });
    const queued = 'b'.repeat(24);
    await jobs.create({ ...record, jobId: queued, source: { object: jobObjects(tenantId, queued).source, sealed: true }, state: 'queued', processed: 0, imported: 0 });
    const completed = 'c'.repeat(24);
    await jobs.create({ ...record, jobId: completed, source: { object: jobObjects(tenantId, completed).source, sealed: true }, state: 'completed', processed: 1_000, imported: 1_000, finishedAt: at });
    // Another tenant, whose id begins with this one's.
    const other = `${tenantId}.eu`;
    await jobs.create({ ...record, tenantId: other, jobId: queued, source: { object: jobObjects(other, queued).source, sealed: true }, state: 'queued' });
    const offboarding = new OathImportService({ jobs, tokens: {} as OathTokensService, keyring, log, requireTenant });

    const stopping = new AbortController();
    const first = offboarding.endTenantJobs(tenantId, () => undefined, stopping.signal);
    for (let end = Date.now() + 30_000; (await jobs.get(tenantId, running))?.job.state !== 'failed'; await sleep(50)) assert.ok(Date.now() < end, 'the job is ended');
    stopping.abort();
    await assert.rejects(first, /stopping/);
    const cut = (await jobs.get(tenantId, running))!.job;
    assert.deepEqual([cut.state, cut.error, cut.sealedKeys, cut.lease?.owner], ['failed', TENANT_DELETED, undefined, 'a-worker-cut-off'], 'ended; its lease kept: its worker may still write');

    let working = 0;
    await offboarding.endTenantJobs(tenantId, () => working++);
    const [r, q, c, o] = await Promise.all([jobs.get(tenantId, running), jobs.get(tenantId, queued), jobs.get(tenantId, completed), jobs.get(other, queued)]);
    assert.deepEqual([r!.job.state, r!.job.error, r!.job.lease], ['failed', TENANT_DELETED, undefined], 'the lease removed once its worker can write no more');
    assert.deepEqual([q!.job.state, q!.job.error, q!.job.lease], ['failed', TENANT_DELETED, undefined]);
    assert.deepEqual([c!.job.state, c!.job.error], ['completed', undefined], 'an ended job stays as it was');
    assert.deepEqual([o!.job.state, o!.job.error], ['queued', undefined], 'the other tenant’s job is untouched');
    assert.ok(working >= 1, 'the consumer was told the offboarding works while it waited');
    // Done: a redelivery finds nothing to wait for.
    await offboarding.endTenantJobs(tenantId, () => assert.fail('nothing to wait for'));
  });

  itWith({ real: ['nats'] }, 'a worker that finds its tenant deleted after the offboarding ended its job says that it stopped: the offboarding does not wait for its lease to run out', async () => {
    const tenantId = `raced-${Date.now().toString(36)}`;
    // The worker's own handle on the buckets: what it writes is seen apart from the offboarding's writes.
    const workerJobs = await ImportJobs.open(nats, 1);
    const update = workerJobs.update.bind(workerJobs);
    const saidStopped: string[] = [];
    workerJobs.update = async (job, revision) => {
      const next = await update(job, revision);
      if (job.state === 'failed' && job.error === TENANT_DELETED && !job.lease) saidStopped.push(job.jobId);
      return next;
    };
    let calls = 0;
    const tokens = {
      importToken: async (): Promise<RowOutcome> => {
        if (++calls === 1) deleted.add(tenantId);
        return { imported: true };
      },
    } as unknown as OathTokensService;
    let jobId = '';
    // The check before the second batch answers only once the offboarding has ended the job.
    const raced = async (id: string) => {
      if (!deleted.has(id)) return;
      for (let end = Date.now() + 30_000; (await jobs.get(id, jobId))?.job.state !== 'failed'; await sleep(20)) if (Date.now() > end) throw new Error('the offboarding did not end the job');
      throw notFound('unknown tenant');
    };
    service = new OathImportService({ jobs: workerJobs, tokens, keyring, log, requireTenant: raced });
    service.start();
    ({ jobId } = await service.request({ tenantId, format: 'csv', content: seeds('RACE', 2 * IMPORT_BATCH).toString('utf8') } as never, new Date()));
    for (let end = Date.now() + 30_000; ((await jobs.get(tenantId, jobId))?.job.processed ?? 0) < IMPORT_BATCH; await sleep(20)) assert.ok(Date.now() < end, 'the first batch');
    await new OathImportService({ jobs, tokens: {} as OathTokensService, keyring, log, requireTenant }).endTenantJobs(tenantId, () => undefined);
    const done = (await jobs.get(tenantId, jobId))!.job;
    await service.stop();
    service = undefined;
    assert.deepEqual(saidStopped, [jobId], 'the worker removed the lease: it writes nothing more');
    assert.deepEqual([done.state, done.error, done.lease, done.processed, calls], ['failed', TENANT_DELETED, undefined, IMPORT_BATCH, IMPORT_BATCH]);
    assert.equal(await jobs.size(jobObjects(tenantId, jobId).source), undefined, 'its file is deleted');
  });
});
