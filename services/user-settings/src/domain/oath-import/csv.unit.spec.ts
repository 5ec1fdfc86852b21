import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { OATH_CSV_HEADER } from '@mfa/contracts';
import { base32Encode } from '@mfa/crypto';
import { parseCsv } from './csv.js';
import { ImportFileError, type ParsedRow } from './types.js';

const collect = async (text: string | Buffer) => {
  const rows: ParsedRow[] = [];
  for await (const row of parseCsv(Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8'))) rows.push(row);
  return rows;
};
const b32 = () => base32Encode(randomBytes(20));

describe('CSV import (the seeds\' format)', () => {
  it('reads a file with a BOM, CRLF, quoted fields and blank lines; an empty upn leaves the token unassigned', async () => {
    const secret = randomBytes(20);
    const text = `\uFEFF${OATH_CSV_HEADER.toUpperCase()}\r\nhelga@contoso.com,"SN,1",${base32Encode(secret).toLowerCase()},60,Contoso,"Key ""60"""\r\n\r\n,SN2,${b32()},30,,\r\n`;
    const rows = await collect(text);
    assert.equal(rows.length, 2);
    assert.ok(rows[0]!.ok && rows[1]!.ok);
    const [a, b] = rows.map((r) => (r.ok ? r.token : undefined));
    assert.deepEqual({ ...a, secret: a!.secret.toString('hex') }, { row: 1, serialNumber: 'SN,1', secret: secret.toString('hex'), userId: 'helga@contoso.com', algorithm: 'SHA1', digits: 6, period: 60, manufacturer: 'Contoso', model: 'Key "60"' });
    assert.equal(b!.userId, undefined);
    assert.equal(b!.period, 30);
  });

  it('rejects bad rows with a reason naming the column, and keeps going', async () => {
    const rows = await collect(
      [
        OATH_CSV_HEADER,
        'Helga@contoso.com,1234567,1234567abcdef1234567abcdef,60,Contoso,HardwareKey',
        `u1,S1,${'A'.repeat(129)},30,,`,
        `u1,S2,${b32()},61,,`,
        `u1,S3,${b32()},30.0,,`,
        'u1,S4,AAAAAAAA,30,,',
        `u1,S5,${b32()}=A,30,,`,
        `u1,S6,${b32()},30`,
        `u1,,${b32()},30,,`,
        `u\u202e1,S7,${b32()},30,,`,
        `u1,S8\u0007,${b32()},30,,`,
        `u1,S9,${b32()},30,${'m'.repeat(65)},`,
        `u1,OK,${b32()},30,,`,
        `u2,OK,${b32()},30,,`,
      ].join('\n'),
    );
    const got = rows.map((r) => (r.ok ? `ok ${r.token.serialNumber}` : `${r.rejected.row} ${r.rejected.reason}`));
    const expected = [/^1 secret key: not Base32/, /^2 secret key: longer than 128/, /^3 time interval/, /^4 time interval/, /^5 secret key: shorter than 16 bytes/, /^6 secret key: not Base32/, /^7 has 4 fields, the header 6/, /^8 serial number/, /^9 upn: must not contain bidirectional/, /^10 serial number: must not contain control/, /^11 manufacturer/, /^ok OK$/, /^13 duplicate serial number \(first at row 12\)/];
    assert.equal(got.length, expected.length, got.join('\n'));
    expected.forEach((pattern, i) => assert.match(got[i]!, pattern));
    assert.ok(rows.every((r) => r.ok || !JSON.stringify(r.rejected).includes('1234567abcdef1234567abcdef')), 'no secret in a rejected row');
  });

  it('fails the file for a wrong header, an empty file, a huge field or a broken quote', async () => {
    await assert.rejects(collect('serial,secret\n1,2\n'), (e: Error) => e instanceof ImportFileError && /header/.test(e.message));
    await assert.rejects(collect(''), /empty/);
    await assert.rejects(collect(`${OATH_CSV_HEADER}\nu,S,${'A'.repeat(100_000)},30,,\n`), ImportFileError);
    await assert.rejects(collect(`${OATH_CSV_HEADER}\nu,"S,${b32()},30,,\n`), ImportFileError);
  });

  it('takes the header without manufacturer and model', async () => {
    const rows = await collect(`upn,serial number,secret key,time interval\nu,S,${b32()},30\n`);
    assert.equal(rows[0]?.ok, true);
  });
});
