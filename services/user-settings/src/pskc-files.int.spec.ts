import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parsePskc } from './domain/oath-import/pskc.js';
import { ImportFileError, type ParsedRow } from './domain/oath-import/types.js';

/**
 * PSKC files written by an independent implementation, Debian's python3-pskc, in each protection
 * mode: plaintext, a pre-shared AES key with a MAC, and a PBKDF2 password with a MAC. Debian's own
 * interpreter runs it (/usr/bin/python3: a python3 earlier on PATH may not see Debian's packages).
 */
const PYTHON = '/usr/bin/python3';
const available = (() => {
  try {
    execFileSync(PYTHON, ['-c', 'import pskc'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!available && process.env.CI === 'true') throw new Error('python3-pskc is missing (apt-get install python3-pskc)');

const dir = mkdtempSync(join(tmpdir(), 'pskc-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const keys = [
  { serial: 'PY-SHA1-30', secret: randomBytes(20), digits: 6, period: 30, suite: 'HMAC-SHA1' },
  { serial: 'PY-SHA256-60', secret: randomBytes(32), digits: 8, period: 60, suite: 'HMAC-SHA256' },
] as const;

/** Writes the keys with python3-pskc; `mode`: plain, psk (hex key) or pbkdf2 (password). */
function write(mode: 'plain' | 'psk' | 'pbkdf2', secretArg = ''): string {
  const file = join(dir, `${mode}.pskcxml`);
  const script = `
import sys, binascii, pskc
p = pskc.PSKC()
for serial, secret, digits, period, suite in ${JSON.stringify(keys.map((k) => [k.serial, k.secret.toString('hex'), k.digits, k.period, k.suite]))}:
    k = p.add_key(id=serial, serial=serial, secret=binascii.unhexlify(secret), algorithm='urn:ietf:params:xml:ns:keyprov:pskc:totp', response_length=digits, time_interval=period, manufacturer='PyVendor', model='PyModel')
    k.algorithm_suite = suite
mode, arg = sys.argv[1], sys.argv[2]
if mode == 'psk':
    p.encryption.setup_preshared_key(key=binascii.unhexlify(arg), algorithm='aes128-cbc')
    p.mac.setup()
elif mode == 'pbkdf2':
    p.encryption.setup_pbkdf2(arg, iterations=2000)
    p.mac.setup()
p.write(sys.argv[3])
`;
  execFileSync(PYTHON, ['-c', script, mode, secretArg, file]);
  return file;
}

async function parse(file: string, with_: { password?: string; psk?: Buffer } = {}): Promise<ParsedRow[]> {
  const rows: ParsedRow[] = [];
  for await (const row of parsePskc(readFileSync(file), with_)) rows.push(row);
  return rows;
}

function assertKeys(rows: ParsedRow[]): void {
  assert.deepEqual(
    rows.map((r) => (r.ok ? { serial: r.token.serialNumber, secret: r.token.secret.toString('hex'), digits: r.token.digits, period: r.token.period, algorithm: r.token.algorithm, model: r.token.model } : r.rejected)),
    keys.map((k) => ({ serial: k.serial, secret: k.secret.toString('hex'), digits: k.digits, period: k.period, algorithm: k.suite === 'HMAC-SHA256' ? 'SHA256' : 'SHA1', model: 'PyModel' })),
  );
}

describe('PSKC files written by python3-pskc', { skip: available ? false : 'python3-pskc is not installed (apt-get install python3-pskc)' }, () => {
  it('reads a plaintext file', async () => {
    assertKeys(await parse(write('plain')));
  });

  it('reads a file encrypted with a pre-shared key (AES-128-CBC, HMAC-SHA1), and refuses a wrong key', async () => {
    const psk = randomBytes(16);
    const file = write('psk', psk.toString('hex'));
    assertKeys(await parse(file, { psk }));
    await assert.rejects(parse(file, { psk: randomBytes(16) }), (e: Error) => e instanceof ImportFileError && /wrong password or pre-shared key/.test(e.message));
  });

  it('reads a file encrypted with a password (PBKDF2), and refuses a wrong password', async () => {
    const file = write('pbkdf2', 'correct horse battery staple');
    assertKeys(await parse(file, { password: 'correct horse battery staple' }));
    await assert.rejects(parse(file, { password: 'Tr0ub4dor&3' }), /wrong password or pre-shared key/);
  });
});
