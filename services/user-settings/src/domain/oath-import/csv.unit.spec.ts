import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hotpGenerator, totpStep } from '@mfa/crypto';
import { decodeSecretKey, MAX_CSV_LINE_BYTES, parseCsv, quotingProblem } from './csv.js';
import { handOut, ImportFileError, MAX_IMPORT_TOKENS, type ParsedRow, type ParsedToken, type RejectedRow } from './types.js';

const HEADER = 'upn,serial number,secret key,time interval,manufacturer,model';
/** "12345678901234567890" (RFC 4226's test secret) in Base32. */
const SECRET = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';
const SECRET_BYTES = Buffer.from('12345678901234567890');

async function parse(text: string | Buffer, chunkBytes?: number): Promise<ParsedRow[]> {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const input =
    chunkBytes === undefined
      ? bytes
      : (async function* () {
          for (let at = 0; at < bytes.length; at += chunkBytes) yield bytes.subarray(at, at + chunkBytes);
        })();
  const rows: ParsedRow[] = [];
  for await (const row of parseCsv(input)) rows.push(row);
  return rows;
}

const file = (...rows: string[]) => [HEADER, ...rows].join('\r\n') + '\r\n';
const tokens = (rows: ParsedRow[]): ParsedToken[] => rows.flatMap((r) => (r.ok ? [r.token] : []));
const rejected = (rows: ParsedRow[]): RejectedRow[] => rows.flatMap((r) => (r.ok ? [] : [r.rejected]));

async function onlyRejection(row: string): Promise<RejectedRow> {
  const rows = await parse(file(row));
  assert.equal(rows.length, 1);
  const [first] = rejected(rows);
  assert.ok(first, `expected a rejection for ${JSON.stringify(row)}`);
  return first;
}

describe('CSV seed file', () => {
  it('reads a good file with a BOM, CRLF line ends, quoted fields and blank lines', async () => {
    const text =
      '\uFEFF' +
      ['UPN, Serial Number ,Secret Key,Time Interval,Manufacturer,Model', '', `helga@contoso.com,SN-0001,${SECRET},30,"Acme, Inc.","Model ""X"""`, '   ', `,"SN-0002",${SECRET.toLowerCase()},60,,`].join('\r\n') +
      '\r\n\r\n';
    for (const chunkBytes of [undefined, 1, 7]) {
      const rows = await parse(text, chunkBytes);
      assert.equal(rows.length, 2);
      const [first, second] = tokens(rows);
      assert.deepEqual(first, {
        row: 1,
        serialNumber: 'SN-0001',
        secret: SECRET_BYTES,
        userId: 'helga@contoso.com',
        algorithm: 'SHA1',
        digits: 6,
        period: 30,
        manufacturer: 'Acme, Inc.',
        model: 'Model "X"',
      });
      // An empty upn leaves the token unassigned; empty optional columns are absent, not "".
      assert.deepEqual(second, { row: 2, serialNumber: 'SN-0002', secret: SECRET_BYTES, algorithm: 'SHA1', digits: 6, period: 60 });
      assert.equal('userId' in second!, false);
    }
  });

  it('takes a header without the optional columns, in any letter case', async () => {
    const rows = await parse(`UPN,Serial Number,Secret Key,Time Interval\n,SN1,${SECRET},30\n`);
    assert.equal(tokens(rows)[0]?.serialNumber, 'SN1');
    const five = await parse(`upn,serial number,secret key,time interval,manufacturer\n,SN1,${SECRET},30,Acme\n`);
    assert.equal(tokens(five)[0]?.manufacturer, 'Acme');
  });

  it('takes the three-column form "serial number,secret key,time interval": tokens left unassigned', async () => {
    const rows = await parse(`Serial Number, secret key ,TIME INTERVAL\r\n1234567,${SECRET},30\r\n"SN2",${SECRET.toLowerCase()},60\r\nSN3,${SECRET},30,\r\n,SN4,${SECRET},30\r\n`);
    assert.deepEqual(tokens(rows), [
      { row: 1, serialNumber: '1234567', secret: SECRET_BYTES, algorithm: 'SHA1', digits: 6, period: 30 },
      { row: 2, serialNumber: 'SN2', secret: SECRET_BYTES, algorithm: 'SHA1', digits: 6, period: 60 },
    ]);
    assert.deepEqual(rejected(rows), [
      { row: 3, reason: 'wrong number of columns: 4 instead of 3' },
      { row: 4, reason: 'wrong number of columns: 4 instead of 3' },
    ]);
  });

  it('fails the file on a wrong or missing header, naming the expected one', async () => {
    for (const text of [
      `serial number,upn,secret key,time interval\n,SN1,${SECRET},30\n`,
      // Without its header the three-column form is refused like the seeds' own.
      `1234567,${SECRET},30\n`,
      `serial number,secret key,time interval,manufacturer\nSN1,${SECRET},30,Acme\n`,
      `secret key,serial number,time interval\n${SECRET},SN1,30\n`,
      `upn,serial number,secret key\n`,
      `upn,serial number,secret key,time interval,model\n`,
      `upn,serial number,secret key,time interval,manufacturer,model,extra\n`,
      `,SN1,${SECRET},30\n`,
      '',
      '\r\n\r\n',
    ]) {
      await assert.rejects(parse(text), (error: unknown) => {
        assert.ok(error instanceof ImportFileError);
        assert.match(error.message, /upn,serial number,secret key,time interval/);
        return true;
      });
    }
  });

  it('refuses the seed example "1234567abcdef1234567abcdef": 1 is not a Base32 digit', async () => {
    const refusal = await onlyRejection('user@contoso.com,12345,1234567abcdef1234567abcdef,30,,');
    assert.deepEqual(refusal, { row: 1, serialNumber: '12345', userId: 'user@contoso.com', reason: refusal.reason });
    assert.match(refusal.reason, /^secret key: not Base32/);
  });

  it('refuses secrets that are not Base32, too short, too long or oddly padded', async () => {
    const cases: Array<[string, RegExp]> = [
      [`GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ`, /^secret key: not Base32/],
      [`GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ0`, /^secret key: not Base32/],
      [`GEZDGNBVGY3TQOJQ=GEZDGNBVGY3TQOJQ`, /^secret key: not Base32/],
      [`MZXW6===`, /^secret key: shorter than 16 bytes/],
      [`GEZDGNBVGY3TQOJQGEZDGNBVG`, /^secret key: not Base32 \(RFC 4648\): its length/],
      [`GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGE=`, /^secret key: not Base32 \(RFC 4648\): its length or padding/],
      ['', /^secret key: missing$/],
      ['A'.repeat(129), /^secret key: longer than 128 characters$/],
    ];
    for (const [secret, reason] of cases) assert.match((await onlyRejection(`,SN1,${secret},30,,`)).reason, reason, secret);
    // 128 characters is the limit, and padding at the end is fine.
    assert.equal(tokens(await parse(file(`,SN1,${'A'.repeat(128)},30,,`)))[0]?.secret.length, 80);
    assert.deepEqual(tokens(await parse(file(`,SN1,${SECRET}GEZDG===,30,,`)))[0]?.secret, Buffer.concat([SECRET_BYTES, Buffer.from('123')]));
  });

  it('drops the bits of the last character beyond the last byte, as oathtool and Python do', async () => {
    // Python's base64.b32decode of each and `oathtool --totp -b -N @1111111109 <secret>` (2.6.7), for
    // texts whose last character carries 2, 4, 1 and 3 such bits, set.
    const cases: Array<[string, string, string]> = [
      ['GEZDGNBVGY3TQOJQGEZDGNBVGZ', '31323334353637383930313233343536', '383666'],
      ['JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJB', '48656c6c6f21deadbeef48656c6c6f21deadbeef48', '241379'],
      ['GEZDGNBVGY3TQOJQGEZDGNBVGY3T', '3132333435363738393031323334353637', '787285'],
      ['GEZDGNBVGY3TQOJQGEZDGNBVGY3TR', '313233343536373839303132333435363738', '887763'],
      ['gezdgnbvgy3tqojqgezdgnbvgy3tqoz=', '3132333435363738393031323334353637383b', '788109'],
    ];
    for (const [text, hex, code] of cases) {
      const [token] = tokens(await parse(file(`,SN1,${text},30,,`)));
      assert.equal(token?.secret.toString('hex'), hex, text);
      assert.equal(hotpGenerator(token.secret)(totpStep(1_111_111_109_000)), code, text);
    }
    // Any text of a length that can end Base32 is a secret, the same as a plain bit-by-bit decoder gives.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
    let seed = 7;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31);
    for (const length of [26, 28, 29, 31, 32, 34, 103]) {
      for (let n = 0; n < 50; n++) {
        const text = Array.from({ length }, () => alphabet[next() % 32]).join('');
        const bits = [...text].map((c) => alphabet.indexOf(c).toString(2).padStart(5, '0')).join('');
        const bytes = Buffer.from(Array.from({ length: Math.floor(bits.length / 8) }, (_, i) => parseInt(bits.slice(i * 8, i * 8 + 8), 2)));
        const decoded = decodeSecretKey(text);
        assert.ok(decoded.ok, text);
        assert.deepEqual(decoded.secret, bytes, text);
      }
    }
  });

  it('takes 30 or 60 as the time interval, nothing else', async () => {
    for (const interval of ['61', '30.0', '0', '', 'thirty', '+30', '1e2']) {
      assert.equal((await onlyRejection(`,SN1,${SECRET},${interval},,`)).reason, 'time interval: must be 30 or 60 (seconds)', interval);
    }
    assert.equal(tokens(await parse(file(`,SN1,${SECRET}, 60 ,,`)))[0]?.period, 60);
  });

  it('refuses a later row with a serial number already imported, naming the first row', async () => {
    const rows = await parse(file(`a@x,SN1,${SECRET},30,,`, `,SN2,not-base32,30,,`, `,SN2,${SECRET},30,,`, `b@x,SN1,${SECRET},60,,`, `,SN2,${SECRET},30,,`));
    assert.deepEqual(
      rows.map((r) => (r.ok ? `${r.token.row} ok` : `${r.rejected.row} ${r.rejected.reason}`)),
      ['1 ok', '2 secret key: not Base32 (RFC 4648: letters A-Z and digits 2-7 only, "=" only at the end)', '3 ok', '4 duplicate serial number (first at row 1)', '5 duplicate serial number (first at row 3)'],
    );
    assert.deepEqual(rejected(rows)[1], { row: 4, serialNumber: 'SN1', userId: 'b@x', reason: 'duplicate serial number (first at row 1)' });
  });

  it('refuses rows with the wrong number of columns', async () => {
    const rows = await parse(file(`,SN1,${SECRET},30`, `,SN2,${SECRET},30,,,`, 'lonely', `,SN3,${SECRET},30,,`));
    assert.deepEqual(
      rows.map((r) => (r.ok ? 'ok' : r.rejected.reason)),
      ['wrong number of columns: 4 instead of 6', 'wrong number of columns: 7 instead of 6', 'wrong number of columns: 1 instead of 6', 'ok'],
    );
  });

  it('refuses an oversize row without keeping it, and reads on', async () => {
    const huge = `,SN1,${SECRET},30,"${'x'.repeat(100_000)}",`;
    for (const chunkBytes of [undefined, 1000]) {
      const rows = await parse(file(huge, `,SN2,${SECRET},30,,`, `,SN3,${SECRET},30,${'m'.repeat(65)},`), chunkBytes);
      assert.deepEqual(
        rows.map((r) => (r.ok ? r.token.serialNumber : `${r.rejected.row}: ${r.rejected.reason}`)),
        [`1: row longer than ${MAX_CSV_LINE_BYTES} bytes`, 'SN2', '3: manufacturer: must be at most 64 characters'],
      );
    }
    // The limit itself is fine (a long model is refused by its own rule, not the line's).
    const atLimit = `,SN1,${SECRET},30,,`;
    const padded = atLimit + 'y'.repeat(MAX_CSV_LINE_BYTES - atLimit.length);
    assert.equal((await onlyRejection(padded)).reason, 'model: must be at most 64 characters');
    assert.equal((await onlyRejection(padded + 'y')).reason, `row longer than ${MAX_CSV_LINE_BYTES} bytes`);
  });

  it('refuses long and hostile text fields by column', async () => {
    const cases: Array<[string, string]> = [
      [`${'u'.repeat(257)},SN1,${SECRET},30,,`, 'upn: must be at most 256 characters'],
      [`ali\u0000ce,SN1,${SECRET},30,,`, 'upn: must not contain control characters'],
      [`ali\u202Ece,SN1,${SECRET},30,,`, 'upn: must not contain bidirectional override or isolate characters (U+202A to U+202E, U+2066 to U+2069)'],
      [`,SN\u20661\u2069,${SECRET},30,,`, 'serial number: must not contain bidirectional override or isolate characters (U+202A to U+202E, U+2066 to U+2069)'],
      [`,SN\u200F1,${SECRET},30,,`, 'serial number: must not contain bidirectional marks (U+200E, U+200F, U+061C)'],
      [`,SN\u200B1,${SECRET},30,,`, 'serial number: must not contain zero-width characters (U+200B to U+200D, U+2060, U+FEFF)'],
      [`,"SN\r1",${SECRET},30,,`, 'serial number: must not contain control characters'],
      [`,SN\u001b[31m,${SECRET},30,,`, 'serial number: must not contain control characters'],
      [`,SN\u20281,${SECRET},30,,`, 'serial number: must not contain line or paragraph separators (U+2028, U+2029)'],
      [`,${'S'.repeat(65)},${SECRET},30,,`, 'serial number: must be at most 64 characters'],
      [`,  ,${SECRET},30,,`, 'serial number: missing'],
      [`,SN1,${SECRET},30,Acme\u0085,`, 'manufacturer: must not contain control characters'],
      [`,SN1,${SECRET},30,,M\uFEFFX`, 'model: must not contain zero-width characters (U+200B to U+200D, U+2060, U+FEFF)'],
      [`,SN1,${SECRET},30,,${'m'.repeat(65)}`, 'model: must be at most 64 characters'],
    ];
    for (const [row, reason] of cases) {
      const refusal = await onlyRejection(row);
      assert.equal(refusal.reason, reason, JSON.stringify(row));
      // The error file never carries the hostile text back.
      if (reason.startsWith('serial number')) assert.equal(refusal.serialNumber, undefined);
      if (reason.startsWith('upn')) assert.equal(refusal.userId, undefined);
    }
    // Letters beyond ASCII are not hostile; 64 of them fit (64 UTF-16 code units, as the API counts).
    assert.equal(tokens(await parse(file(`jürgen@exämple.de,${'é'.repeat(64)},${SECRET},30,Ærø,`)))[0]?.userId, 'jürgen@exämple.de');
  });

  it('refuses rows that are not valid CSV or not UTF-8, one row at a time', async () => {
    const bad = Buffer.from(`,SN9,${SECRET},30,\xff,\r\n`, 'latin1');
    const rows = await parse(
      Buffer.concat([
        Buffer.from(file(`,"SN1,${SECRET},30,,`, `,SN"2,${SECRET},30,,`, `,"SN3"x,${SECRET},30,,`, `,SN4,${SECRET},30,,`)),
        bad,
        Buffer.from(`,SN5,${SECRET},30,,\r\n`),
      ]),
    );
    assert.deepEqual(
      rows.map((r) => (r.ok ? r.token.serialNumber : r.rejected.reason)),
      [
        'row is not valid CSV: a quoted field is not closed on its line',
        'row is not valid CSV: a quote inside a field that does not start with one',
        'row is not valid CSV: text after the closing quote of a field',
        'SN4',
        'row is not UTF-8 text',
        'SN5',
      ],
    );
  });

  it('keeps going after every kind of bad row', async () => {
    const rows = await parse(
      file(`,SN1,1234567abcdef1234567abcdef,30,,`, `,SN2,${SECRET},61,,`, `,SN3`, `,"SN4,${SECRET},30,,`, `x\u202E,SN5,${SECRET},30,,`, `,SN6,${'x'.repeat(5000)},30,,`, `,SN7,${SECRET},30,,`),
    );
    assert.deepEqual(
      rows.map((r) => (r.ok ? r.token.row : -r.rejected.row)),
      [-1, -2, -3, -4, -5, -6, 7],
    );
  });

  it(`fails a file of more than ${MAX_IMPORT_TOKENS} rows`, async () => {
    async function* many(count: number): AsyncGenerator<Buffer> {
      yield Buffer.from(`${HEADER}\n`);
      const block = Buffer.from(',,,,,\n'.repeat(1000));
      for (let i = 0; i < count / 1000; i++) yield block;
    }
    let rows = 0;
    await assert.rejects(
      async () => {
        for await (const _ of parseCsv(many(MAX_IMPORT_TOKENS + 1000))) rows++;
      },
      (error: unknown) => error instanceof ImportFileError && /more than 200000 rows/.test(error.message),
    );
    assert.equal(rows, MAX_IMPORT_TOKENS);
  });

  it('checks quoting exactly as RFC 4180 has it', () => {
    assert.equal(quotingProblem('a,b,c'), undefined);
    assert.equal(quotingProblem('"a,b","c""d",""'), undefined);
    assert.equal(quotingProblem('"a'), 'a quoted field is not closed on its line');
    assert.equal(quotingProblem('"a"""'), undefined);
    assert.equal(quotingProblem(' "a"'), 'a quote inside a field that does not start with one');
    assert.equal(quotingProblem('"a" ,b'), 'text after the closing quote of a field');
  });

  it('zeroes the secrets of rows decoded together that a reader stopping early never got (handOut, as both parsers hand rows out)', () => {
    const row = (n: number): ParsedRow => ({ ok: true, token: { row: n, serialNumber: `SN-${n}`, secret: Buffer.alloc(20, n), algorithm: 'SHA1', digits: 6, period: 30 } });
    const rows = [row(1), { ok: false, rejected: { row: 2, reason: 'secret key: missing' } } satisfies ParsedRow, row(3), row(4)];
    const got: ParsedRow[] = [];
    for (const handed of handOut(rows)) {
      got.push(handed);
      if (got.length === 2) break;
    }
    const secrets = tokens(rows).map((token) => token.secret.every((byte) => byte === 0));
    // The first is the reader's to zero; the two it never got are zeroed.
    assert.deepEqual(secrets, [false, true, true]);
    // A reader that takes them all gets them as they are.
    const whole = [row(5), row(6)];
    assert.deepEqual([...handOut(whole)].map((handed) => handed.ok && handed.token.secret[0]), [5, 6]);
  });
});
