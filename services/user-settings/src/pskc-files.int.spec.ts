import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parsePskc } from './domain/oath-import/pskc.js';
import { ImportFileError, type ParsedRow, type ParsedToken } from './domain/oath-import/types.js';

// PSKC files written by an independent implementation, Debian's python3-pskc, in each of its
// protection modes, must read back with the secrets, serials, digits and periods it was given.

const PSK = '000102030405060708090a0b0c0d0e0f';
const PSK_256 = '202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f';
const PASSWORD = 'correct horse battery staple';

/** Writes the files into the directory given as the first argument. */
const WRITER = String.raw`
import sys, datetime
import pskc

out = sys.argv[1]
TOTP = 'urn:ietf:params:xml:ns:keyprov:pskc:totp'
HOTP = 'urn:ietf:params:xml:ns:keyprov:pskc:hotp'

def keys(p):
    p.add_key(id='k1', serial='PY-0001', secret=bytes.fromhex('3132333435363738393031323334353637383930'),
              algorithm=TOTP, response_length=6, response_encoding='DECIMAL', manufacturer='Python', model='P-6')
    k = p.add_key(id='k2', serial='PY-0002', secret=bytes(range(32)), algorithm=TOTP,
                  response_length=8, response_encoding='DECIMAL', algorithm_suite='HMAC-SHA256')
    k.time_interval = 60
    k.time_offset = 0
    p.add_key(id='k3', serial='PY-0003', secret=bytes(range(20)), algorithm=HOTP, response_length=6, counter=0)
    k = p.add_key(id='k4', serial='PY-0004', secret=bytes(range(20)), algorithm=TOTP, response_length=6)
    k.expiry_date = datetime.datetime(2010, 1, 1, tzinfo=datetime.timezone.utc)
    p.add_key(id='k5', serial='PY-0001', secret=bytes(range(20)), algorithm=TOTP, response_length=6)

p = pskc.PSKC(); keys(p); p.write(out + '/plain.pskcxml')

p = pskc.PSKC(); keys(p)
p.encryption.setup_preshared_key(key=bytes.fromhex('${PSK}'), algorithm='aes128-cbc', key_name='Pre-shared-key')
p.write(out + '/psk.pskcxml')

p = pskc.PSKC(); keys(p)
p.encryption.setup_preshared_key(key=bytes.fromhex('${PSK_256}'), algorithm='aes256-cbc')
p.mac.setup(algorithm='hmac-sha256')
p.write(out + '/psk256.pskcxml')

p = pskc.PSKC(); keys(p)
p.encryption.setup_pbkdf2('${PASSWORD}', iterations=20000, key_name='Password')
p.write(out + '/password.pskcxml')

p = pskc.PSKC(); keys(p)
p.encryption.setup_pbkdf2('${PASSWORD}', iterations=5000, prf='hmac-sha256', algorithm='aes256-cbc')
p.write(out + '/password-sha256.pskcxml')

p = pskc.PSKC()
p.add_key(id='e1', serial='PY-ENC-TI', secret=bytes(range(20)), algorithm=TOTP, response_length=6).time_interval = 30
p.encryption.setup_preshared_key(key=bytes.fromhex('${PSK}'), fields=['secret', 'time_interval'])
p.write(out + '/encrypted-interval.pskcxml')
`;

/** A python3 that has the pskc module: Debian's, or the first on PATH. */
function pythonWithPskc(): string {
  for (const candidate of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(candidate, ['-c', 'import pskc'], { stdio: 'ignore' }).status === 0) return candidate;
  }
  throw new Error('python3-pskc is needed for this test (apt-get install python3-pskc)');
}

async function parseFile(file: string, keys: { password?: string; psk?: Buffer }): Promise<ParsedRow[]> {
  const rows: ParsedRow[] = [];
  for await (const row of parsePskc(readFileSync(file), keys)) rows.push(row);
  return rows;
}

/** The tokens every mode must give, and the reasons of the keys every mode must refuse. */
function assertKeys(rows: ParsedRow[]): void {
  const tokens: ParsedToken[] = rows.flatMap((r) => (r.ok ? [r.token] : []));
  assert.deepEqual(tokens, [
    {
      row: 1,
      serialNumber: 'PY-0001',
      secret: Buffer.from('12345678901234567890'),
      algorithm: 'SHA1',
      digits: 6,
      period: 30,
      manufacturer: 'Python',
      model: 'P-6',
    },
    { row: 2, serialNumber: 'PY-0002', secret: Buffer.from(Array.from({ length: 32 }, (_, i) => i)), algorithm: 'SHA256', digits: 8, period: 60 },
  ]);
  assert.deepEqual(
    rows.flatMap((r) => (r.ok ? [] : [`${r.rejected.row} ${r.rejected.serialNumber}: ${r.rejected.reason}`])),
    [
      '3 PY-0003: algorithm: HOTP (event/counter-based) tokens are not supported; only time-based (TOTP) tokens are',
      '4 PY-0004: expiry date: the key expired on 2010-01-01',
      '5 PY-0001: duplicate serial number (first at row 1)',
    ],
  );
}

const fileError = (message: RegExp) => (error: unknown) => error instanceof ImportFileError && message.test(error.message);

describe('PSKC files written by python3-pskc', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pskc-files-'));
    execFileSync(pythonWithPskc(), ['-c', WRITER, dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('plaintext', async () => {
    assertKeys(await parseFile(join(dir, 'plain.pskcxml'), {}));
  });

  it('pre-shared key, AES-128-CBC with HMAC-SHA1', async () => {
    const file = join(dir, 'psk.pskcxml');
    assert.match(readFileSync(file, 'utf8'), /xmldsig#hmac-sha1/);
    assertKeys(await parseFile(file, { psk: Buffer.from(PSK, 'hex') }));
    await assert.rejects(parseFile(file, {}), fileError(/give psk/));
    await assert.rejects(parseFile(file, { psk: Buffer.from(PSK.replace(/^00/, '01'), 'hex') }), fileError(/^wrong password or pre-shared key/));
  });

  it('pre-shared key, AES-256-CBC with HMAC-SHA256', async () => {
    const file = join(dir, 'psk256.pskcxml');
    assert.match(readFileSync(file, 'utf8'), /aes256-cbc[\s\S]*hmac-sha256|hmac-sha256[\s\S]*aes256-cbc/);
    assertKeys(await parseFile(file, { psk: Buffer.from(PSK_256, 'hex') }));
    await assert.rejects(parseFile(file, { psk: Buffer.from(PSK, 'hex') }), fileError(/needs 32/));
  });

  it('password, PBKDF2 (HMAC-SHA1) and AES-128-CBC', async () => {
    const file = join(dir, 'password.pskcxml');
    assertKeys(await parseFile(file, { password: PASSWORD }));
    await assert.rejects(parseFile(file, {}), fileError(/give password/));
    await assert.rejects(parseFile(file, { password: `${PASSWORD}!` }), fileError(/^wrong password or pre-shared key/));
  });

  it('password, PBKDF2 with HMAC-SHA256 and AES-256-CBC', async () => {
    const file = join(dir, 'password-sha256.pskcxml');
    assert.match(readFileSync(file, 'utf8'), /hmac-sha256/);
    assertKeys(await parseFile(file, { password: PASSWORD }));
  });

  it('an encrypted TimeInterval is refused for that key, with a reason', async () => {
    assert.deepEqual(await parseFile(join(dir, 'encrypted-interval.pskcxml'), { psk: Buffer.from(PSK, 'hex') }), [
      { ok: false, rejected: { row: 1, serialNumber: 'PY-ENC-TI', reason: 'time interval: encrypted values are not supported' } },
    ]);
  });
});
