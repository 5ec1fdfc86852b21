import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { Objm } from '@nats-io/obj';
import { jetstreamManager } from '@nats-io/jetstream';
import { EventSubjects, IMPORTS_BUCKET, OATH_CSV_HEADER, OATH_ERRORS_CSV_HEADER, Streams, Subjects, type OathImportStatusReply, type OathTokenItem } from '@mfa/contracts';
import { base32Encode, totp } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, hasOathtool, itWith, oathtoolTotp, startStack, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/** A fresh random secret: bytes for our checks, Base32 for the file and for oathtool. */
function secret(bytes = 20) {
  const raw = randomBytes(bytes);
  return { raw, base32: base32Encode(raw) };
}

/** The code a token shows `offsetSteps` steps from now (oathtool when installed: an independent implementation). */
function codeOf(s: { raw: Buffer; base32: string }, options: { period?: 30 | 60; digits?: 6 | 8; algorithm?: 'SHA1' | 'SHA256'; offsetSteps?: number } = {}): string {
  const period = options.period ?? 30;
  const at = new Date(Date.now() + (options.offsetSteps ?? 0) * period * 1000);
  if (hasOathtool()) return oathtoolTotp(s.base32, { at, period, digits: options.digits ?? 6, algorithm: options.algorithm ?? 'SHA1' });
  return totp(s.raw, at.getTime(), { period, digits: options.digits ?? 6, algorithm: options.algorithm ?? 'SHA1' });
}

/** A plaintext PSKC file (RFC 6030 §4) of TOTP keys. */
function pskc(keys: Array<{ serial: string; secret: Buffer; digits: 6 | 8; period: 30 | 60; suite: 'HMAC-SHA1' | 'HMAC-SHA256' }>): string {
  const packages = keys.map(
    (k) => `  <pskc:KeyPackage>
    <pskc:DeviceInfo><pskc:Manufacturer>Acme</pskc:Manufacturer><pskc:SerialNo>${k.serial}</pskc:SerialNo><pskc:Model>T${k.digits}</pskc:Model></pskc:DeviceInfo>
    <pskc:Key Id="${k.serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <pskc:AlgorithmParameters><pskc:Suite>${k.suite}</pskc:Suite><pskc:ResponseFormat Length="${k.digits}" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret><pskc:PlainValue>${k.secret.toString('base64')}</pskc:PlainValue></pskc:Secret>
        <pskc:TimeInterval><pskc:PlainValue>${k.period}</pskc:PlainValue></pskc:TimeInterval>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>`,
  );
  return `<?xml version="1.0" encoding="UTF-8"?>\n<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc">\n${packages.join('\n')}\n</pskc:KeyContainer>\n`;
}

/**
 * Hardware OATH tokens through the whole stack: CSV and PSKC imports as background jobs, the
 * inventory, assignment, activation by the displayed code, sign-in with the token through
 * challenge.start/verify (method totp) with the replay guard, the 5-token limit, replacement,
 * and a job that survives the kill -9 of the instance running it.
 */
describe('end to end: hardware OATH tokens', () => {
  let stack: Stack;
  let nc: NatsConnection;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 15_000 });

  before(async () => {
    stack = await startStack({
      services: ['user-settings', 'auth-challenge'],
      env: { NODE_ENV: 'test', LOG_LEVEL: 'warn', NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-oath' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
  });

  const newTenant = async (prefix: string) => {
    const tenantId = uniqueTenant(prefix);
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    return tenantId;
  };
  const register = async (tenantId: string, userId = uniqueUser('hw')) => {
    const reply = await ask(Subjects.usersRegister, { tenantId, userId });
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    return userId;
  };
  const finished = (tenantId: string, jobId: string, timeoutMs = 60_000) =>
    eventually(
      async () => {
        const status = (await ask(Subjects.oathImportStatus, { tenantId, jobId })) as unknown as OathImportStatusReply;
        assert.equal((status as unknown as Reply).error, undefined, JSON.stringify(status));
        return status.state === 'completed' || status.state === 'failed' ? status : undefined;
      },
      timeoutMs,
      'the import job to end',
    );
  const importFile = async (tenantId: string, body: Record<string, unknown>) => {
    const reply = await ask(Subjects.oathImport, { tenantId, ...body });
    assert.equal(typeof reply.jobId, 'string', JSON.stringify(reply));
    return finished(tenantId, String(reply.jobId));
  };
  const list = async (tenantId: string, state?: string): Promise<OathTokenItem[]> => {
    const items: OathTokenItem[] = [];
    let cursor: string | undefined;
    do {
      const page = await ask(Subjects.oathTokensList, { tenantId, limit: 500, ...(state ? { state } : {}), ...(cursor ? { cursor } : {}) });
      assert.equal(page.error, undefined, JSON.stringify(page));
      items.push(...(page.items as OathTokenItem[]));
      cursor = page.nextCursor as string | undefined;
    } while (cursor);
    return items;
  };
  const signIn = async (tenantId: string, userId: string, code: string) => {
    const started = await ask(Subjects.challengeStart, { tenantId, userId, method: 'totp' });
    assert.equal(started.status, 'pending', JSON.stringify(started));
    return ask(Subjects.challengeVerify, { tenantId, challengeId: started.challengeId, code });
  };

  itWith({ real: wholeStack }, 'imports a CSV in the background, rejects bad rows into an error file, and a 60-second token activates and signs in with oathtool codes', async () => {
    const tenantId = await newTenant('hwcsv');
    const alice = await register(tenantId);
    const bob = await register(tenantId);
    const [a, b, c, d] = [secret(), secret(), secret(), secret()];
    const csv = [
      `\uFEFF${OATH_CSV_HEADER}`,
      `${alice},A-60,${a.base32},60,Contoso,"Key, 60 s"`,
      `${bob},B-30,${b.base32},30,Contoso,HardwareKey`,
      `,C-FREE,${c.base32},30,,`,
      // The seeds' own example: its secret is not Base32 (it has a 1).
      `Helga@contoso.com,1234567,1234567abcdef1234567abcdef,60,Contoso,HardwareKey`,
      `${alice},D-61,${d.base32},61,Contoso,HardwareKey`,
      `${bob},A-60,${d.base32},30,Contoso,Duplicate`,
      `nobody@${tenantId},E-1,${d.base32},30,Contoso,HardwareKey`,
    ].join('\r\n');
    const status = await importFile(tenantId, { format: 'csv', content: csv });
    assert.equal(status.state, 'completed');
    assert.deepEqual([status.total, status.processed, status.imported, status.failed], [7, 7, 3, 4]);
    const errors = status.errorsCsv!.trim().split('\r\n');
    assert.equal(errors[0], OATH_ERRORS_CSV_HEADER, 'the error file names its fields differently from the upload');
    assert.equal(errors.length, 5);
    assert.match(errors.find((l) => l.startsWith('4,'))!, /secret key/i);
    assert.match(errors.find((l) => l.startsWith('5,'))!, /time interval/i);
    assert.match(errors.find((l) => l.startsWith('6,'))!, /duplicate/i);
    assert.match(errors.find((l) => l.startsWith('7,'))!, /unknown user/i);
    assert.ok(!status.errorsCsv!.includes(d.base32), 'no secret in the error file');

    assert.deepEqual((await list(tenantId, 'unassigned')).map((t) => t.serialNumber), ['C-FREE']);
    assert.deepEqual((await list(tenantId, 'assigned')).map((t) => t.serialNumber).sort(), ['A-60', 'B-30']);
    const user = await ask(Subjects.usersGet, { tenantId, userId: alice });
    assert.deepEqual(
      (user.tokens as Array<Record<string, unknown>>).map(({ kind, serialNumber, state }) => ({ kind, serialNumber, state })),
      [{ kind: 'hardware', serialNumber: 'A-60', state: 'pending' }],
    );
    assert.deepEqual(user.methods, [], 'a pending token is no method yet');

    const wrong = await ask(Subjects.oathTokensActivate, { tenantId, serialNumber: 'A-60', code: '000000' });
    assert.equal(wrong.active, false);
    const activated = await ask(Subjects.oathTokensActivate, { tenantId, serialNumber: 'A-60', code: codeOf(a, { period: 60 }) });
    assert.equal(activated.active, true, JSON.stringify(activated));
    assert.equal((await list(tenantId, 'active'))[0]?.serialNumber, 'A-60');
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId, userId: alice })).methods, ['totp']);

    // The activation code's step is spent; the next step's code signs in once.
    assert.notEqual((await signIn(tenantId, alice, codeOf(a, { period: 60 }))).status, 'approved', 'the activation code does not sign in');
    const next = codeOf(a, { period: 60, offsetSteps: 1 });
    assert.equal((await signIn(tenantId, alice, next)).status, 'approved');
    assert.notEqual((await signIn(tenantId, alice, next)).status, 'approved', 'a code is accepted once');
  });

  itWith({ real: wholeStack }, 'imports a PSKC file (SHA-256, 8 digits, 60 s) unassigned; the admin assigns, the user activates and signs in', async () => {
    const tenantId = await newTenant('hwpskc');
    const carol = await register(tenantId);
    const s = secret(32);
    const status = await importFile(tenantId, { format: 'pskc', content: pskc([{ serial: 'P-256', secret: s.raw, digits: 8, period: 60, suite: 'HMAC-SHA256' }]) });
    assert.deepEqual([status.state, status.imported, status.failed], ['completed', 1, 0]);
    const [item] = await list(tenantId);
    assert.deepEqual([item?.serialNumber, item?.state, item?.algorithm, item?.digits, item?.period], ['P-256', 'unassigned', 'SHA256', 8, 60]);
    assert.equal((await ask(Subjects.oathTokensActivate, { tenantId, serialNumber: 'P-256', code: '12345678' })).error?.code, 'conflict', 'not assigned yet');
    const assigned = await ask(Subjects.oathTokensAssign, { tenantId, serialNumber: 'P-256', userId: carol });
    assert.equal(assigned.state, 'assigned', JSON.stringify(assigned));
    const activated = await ask(Subjects.oathTokensActivate, { tenantId, serialNumber: 'P-256', code: codeOf(s, { period: 60, digits: 8, algorithm: 'SHA256' }) });
    assert.equal(activated.active, true, JSON.stringify(activated));
    assert.equal((await signIn(tenantId, carol, codeOf(s, { period: 60, digits: 8, algorithm: 'SHA256', offsetSteps: 1 }))).status, 'approved');

    // Deleting it from the user puts it back into the inventory.
    const tokenId = String(assigned.tokenId);
    assert.equal((await ask(Subjects.usersTokensDelete, { tenantId, userId: carol, tokenId })).deleted, true);
    assert.equal((await list(tenantId))[0]?.state, 'unassigned');
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId, userId: carol })).tokens, []);
  });

  itWith({ real: wholeStack }, 'a hardware token the user activates with users.totp.activate is active in the inventory too', async () => {
    const tenantId = await newTenant('hwself');
    const dave = await register(tenantId);
    const s = secret();
    const status = await importFile(tenantId, { format: 'csv', content: [OATH_CSV_HEADER, `${dave},S-30,${s.base32},30,Contoso,HardwareKey`].join('\r\n') });
    assert.deepEqual([status.state, status.imported], ['completed', 1]);
    const [held] = (await ask(Subjects.usersGet, { tenantId, userId: dave })).tokens as Array<{ tokenId: string; kind: string; state: string }>;
    assert.deepEqual([held?.kind, held?.state], ['hardware', 'pending']);
    const activated = await ask(Subjects.totpActivate, { tenantId, userId: dave, tokenId: held!.tokenId, code: codeOf(s, {}) });
    assert.equal(activated.active, true, JSON.stringify(activated));
    assert.equal((await list(tenantId))[0]?.state, 'active');
    assert.equal((await ask(Subjects.oathTokensActivate, { tenantId, serialNumber: 'S-30', code: codeOf(s, {}) })).error?.code, 'conflict', 'already active');
  });

  itWith({ real: wholeStack }, 'holds every user to 5 OATH tokens, apps and hardware together, at import, assignment and enrolment', async () => {
    const tenantId = await newTenant('hwlimit');
    const dave = await register(tenantId);
    for (let i = 0; i < 3; i++) assert.equal(typeof (await ask(Subjects.totpEnroll, { tenantId, userId: dave })).tokenId, 'string');
    const rows = [1, 2, 3].map((n) => `${dave},L-${n},${secret().base32},30,Acme,K`);
    rows.push(`,L-FREE,${secret().base32},30,Acme,K`);
    const status = await importFile(tenantId, { format: 'csv', content: [OATH_CSV_HEADER, ...rows].join('\n') });
    assert.deepEqual([status.imported, status.failed], [3, 1]);
    assert.match(status.errorsCsv!, /3,[^,]*,L-3,.*5 OATH tokens/);
    assert.equal((await ask(Subjects.oathTokensAssign, { tenantId, serialNumber: 'L-FREE', userId: dave })).error?.code, 'conflict');
    assert.equal((await ask(Subjects.totpEnroll, { tenantId, userId: dave })).error?.code, 'conflict');
    assert.equal((await list(tenantId, 'unassigned')).length, 1, 'a refused assignment leaves the token unassigned');
  });

  itWith({ real: wholeStack }, 'refuses a serial number imported before unless the import asks to replace it; the holder loses the old token', async () => {
    const tenantId = await newTenant('hwreplace');
    const erin = await register(tenantId);
    const [old, fresh] = [secret(), secret()];
    await importFile(tenantId, { format: 'csv', content: `${OATH_CSV_HEADER}\n${erin},R-1,${old.base32},30,Acme,K\n` });
    const again = await importFile(tenantId, { format: 'csv', content: `${OATH_CSV_HEADER}\n,R-1,${fresh.base32},30,Acme,K\n` });
    assert.deepEqual([again.imported, again.failed], [0, 1]);
    assert.match(again.errorsCsv!, /already in the inventory/);
    const replaced = await importFile(tenantId, { format: 'csv', content: `${OATH_CSV_HEADER}\n,R-1,${fresh.base32},30,Acme,K2\n`, replace: true });
    assert.deepEqual([replaced.imported, replaced.failed], [1, 0]);
    const [item] = await list(tenantId);
    assert.deepEqual([item?.state, item?.model], ['unassigned', 'K2']);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId, userId: erin })).tokens, []);
  });

  itWith({ real: wholeStack }, 'answers bad import requests with invalid_request or not_found and starts no job', async () => {
    const tenantId = await newTenant('hwbad');
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ format: 'csv' }, 'invalid_request'],
      [{ format: 'csv', content: 'x', object: `${tenantId}/f.csv` }, 'invalid_request'],
      [{ format: 'csv', object: 'other-tenant/f.csv' }, 'invalid_request'],
      [{ format: 'csv', content: 'x', psk: '00'.repeat(16) }, 'invalid_request'],
      [{ format: 'pskc', content: 'x', psk: 'zz' }, 'invalid_request'],
      [{ format: 'xls', content: 'x' }, 'invalid_request'],
      [{ format: 'csv', object: `${tenantId}/missing.csv` }, 'not_found'],
    ];
    for (const [body, code] of cases) assert.equal((await ask(Subjects.oathImport, { tenantId, ...body })).error?.code, code, JSON.stringify(body));
    assert.equal((await ask(Subjects.oathImport, { tenantId: uniqueTenant('nope'), format: 'csv', content: 'x' })).error?.code, 'not_found');
    assert.equal((await ask(Subjects.oathImportStatus, { tenantId, jobId: 'nosuchjob' })).error?.code, 'not_found');
    const notCsv = await importFile(tenantId, { format: 'csv', content: 'serial,secret\n1,2\n' });
    assert.equal(notCsv.state, 'failed');
    assert.match(notCsv.reason!, /header/i);
    const notXml = await importFile(tenantId, { format: 'pskc', content: '<KeyContainer' });
    assert.equal(notXml.state, 'failed');
  });

  itWith({ real: wholeStack }, 'resumes a job after the instance running it is killed: every token imported exactly once', async () => {
    const tenantId = await newTenant('hwcrash');
    const rows = 6000;
    const lines = [OATH_CSV_HEADER];
    for (let i = 0; i < rows; i++) lines.push(`,K-${String(i).padStart(5, '0')},${secret().base32},30,Acme,Crash`);
    // Through the object store, as a file too large for one request would go.
    const store = await new Objm(nc).open(IMPORTS_BUCKET);
    const object = `${tenantId}/crash.csv`;
    await store.putBlob({ name: object }, Buffer.from(lines.join('\n'), 'utf8'));
    const reply = await ask(Subjects.oathImport, { tenantId, format: 'csv', object });
    const jobId = String(reply.jobId);
    await eventually(
      async () => {
        const s = (await ask(Subjects.oathImportStatus, { tenantId, jobId })) as unknown as OathImportStatusReply;
        return s.processed > 0 && s.processed < rows ? s : undefined;
      },
      60_000,
      'the job to be half-way',
    );
    await stack.kill('user-settings', 1);
    await stack.restart('user-settings', 1);
    const status = await finished(tenantId, jobId, 120_000);
    assert.deepEqual([status.state, status.processed, status.imported, status.failed], ['completed', rows, rows, 0]);
    assert.equal((await list(tenantId)).length, rows);
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(Streams.userSettings.name, { subjects_filter: `${EventSubjects.oathToken(tenantId, 'x').replace(/\.[^.]+$/, '')}.>` });
    const counts = Object.values(info.state.subjects ?? {});
    assert.equal(counts.length, rows, 'one aggregate per token');
    assert.ok(
      counts.every((n) => n === 1),
      'no token imported twice',
    );
    assert.equal(await store.info(object).then((i) => i === null || i.deleted), true, 'the uploaded file is deleted once the job ends');
  });
});
