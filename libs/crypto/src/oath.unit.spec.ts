import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { hotp, hotpCodes, hotpGenerator, matchTotpStep, OATH_TEST_VECTORS, sameCode, totp, totpStep, type OathHash } from './oath.js';

// RFC 6238 appendix B, SHA-1 seed.
const rfcSecret = Buffer.from('12345678901234567890', 'ascii');

describe('hotpCodes (native HMAC for sign-in)', () => {
  it('gives the RFC 4226 vectors and the same codes as otplib, 6 and 8 digits, large counters', () => {
    const secret = Buffer.from(OATH_TEST_VECTORS.secret, 'ascii');
    assert.deepEqual(hotpCodes(secret, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), OATH_TEST_VECTORS.hotp);
    const random = Buffer.from('3132333435363738393031323334353637383930aabbccdd', 'hex');
    const counters = [0, 1, 59_000_000, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 12345];
    for (const digits of [6, 8] as const) {
      assert.deepEqual(hotpCodes(random, counters, digits), counters.map((c) => hotp(random, c, digits)));
    }
  });
});

describe('SHA-256 tokens (some hardware tokens, PSKC imports)', () => {
  it('give the RFC 6238 SHA-256 vectors, natively and through otplib, and match them', () => {
    const secret = Buffer.from(OATH_TEST_VECTORS.sha256Secret, 'ascii');
    for (const [seconds, code] of OATH_TEST_VECTORS.totpSha256) {
      assert.equal(hotpGenerator(secret, 8, 'SHA256')(totpStep(seconds * 1000)), code);
      assert.equal(totp(secret, seconds * 1000, { digits: 8, algorithm: 'SHA256' }), code);
      assert.equal(matchTotpStep(secret, code, seconds * 1000, { digits: 8, period: 30, algorithm: 'SHA256' }), totpStep(seconds * 1000));
      // The same code is not what SHA-1 gives.
      assert.equal(matchTotpStep(secret, code, seconds * 1000, { digits: 8, period: 30 }), undefined);
    }
  });
});

describe('TOTP code matching', () => {
  it('matches the RFC 6238 test vectors and returns their time step', () => {
    assert.equal(matchTotpStep(rfcSecret, '94287082', 59_000, { digits: 8, period: 30 }), 1);
    assert.equal(matchTotpStep(rfcSecret, '07081804', 1_111_111_109_000, { digits: 8, period: 30 }), 37_037_036);
    assert.equal(matchTotpStep(rfcSecret, '081804', 1_111_111_109_000, { digits: 6, period: 30 }), 37_037_036);
  });

  it('accepts one step of drift either way, no more', () => {
    const t = 1_111_111_109_000;
    assert.equal(matchTotpStep(rfcSecret, '081804', t + 30_000, { digits: 6, period: 30 }), 37_037_036);
    assert.equal(matchTotpStep(rfcSecret, '081804', t - 30_000, { digits: 6, period: 30 }), 37_037_036);
    assert.equal(matchTotpStep(rfcSecret, '081804', t + 60_000, { digits: 6, period: 30 }), undefined);
    // At step 0 there is no step before (RFC 4226's code for counter 0).
    assert.equal(matchTotpStep(rfcSecret, '755224', 5_000, { digits: 6, period: 30 }), 0);
  });

  it('matches secrets longer than 64 bytes (imported hardware tokens: up to 80), as oathtool computes them', () => {
    // Codes from oathtool 2.6.7: `oathtool --totp -N @1111111109 -w 2 <hex>` (t, t+1, t+2) and
    // `oathtool --totp -N @1111111079 <hex>` (t-1); SHA-256: `--totp=sha256 -d 8 -s 60s`.
    const secret = Buffer.alloc(80).map((_, i) => (i * 37 + 11) & 0xff);
    const now = 1_111_111_109_000;
    const t = totpStep(now);
    for (const [code, step] of [['922013', t - 1], ['284565', t], ['364084', t + 1], ['994182', undefined]] as const) {
      assert.equal(matchTotpStep(secret, code, now, { digits: 6, period: 30 }), step, code);
    }
    assert.equal(matchTotpStep(secret, '36682300', now, { digits: 8, period: 60, algorithm: 'SHA256' }), totpStep(now, 60) - 1);
    assert.equal(matchTotpStep(secret, '97766756', now, { digits: 8, period: 60, algorithm: 'SHA256' }), totpStep(now, 60));
  });

  it('treats a code of the wrong length as wrong instead of failing', () => {
    assert.equal(matchTotpStep(rfcSecret, '94287082', 59_000, { digits: 6, period: 30 }), undefined);
    assert.equal(matchTotpStep(rfcSecret, '1234', 59_000, { digits: 6, period: 30 }), undefined);
  });
});

describe('TOTP replay guard contract (the step matchTotpStep names is the one recorded as used)', () => {
  // With the RFC secret, steps 910737 and 910738 share the 6-digit code 911617 (found by search;
  // `oathtool --totp -N @27322110 -w 1 3132333435363738393031323334353637383930` prints it twice).
  const shared = '911617';
  const first = 910_737;
  const options = { digits: 6, period: 30 } as const;

  it('given two steps of the window with the same code, then it names the later one', () => {
    assert.equal(hotp(rfcSecret, first), shared);
    assert.equal(hotp(rfcSecret, first + 1), shared);
    assert.equal(matchTotpStep(rfcSecret, shared, (first + 1) * 30_000 + 15_000, options), first + 1);
    assert.equal(matchTotpStep(rfcSecret, shared, first * 30_000 + 15_000, options), first + 1);
  });

  it('given the code accepted and its step recorded, then no step of its window after it has the same code (the guard refuses it next time)', () => {
    const codeAt = hotpGenerator(rfcSecret, 6);
    for (const t of [first - 1, first, first + 1, first + 2]) {
      const now = t * 30_000 + 15_000;
      const accepted = matchTotpStep(rfcSecret, shared, now, options);
      if (accepted === undefined) continue;
      // A later verify accepts only steps after the recorded one: none of them may have this code.
      const later = [t - 1, t, t + 1].filter((step) => step > accepted && codeAt(step) === shared);
      assert.deepEqual(later, [], `at step ${t}: recorded ${accepted}, the same code is also step ${later.join(', ')}`);
    }
  });
});

describe('sameCode', () => {
  it('given codes that differ in any character, then they differ, also outside Latin-1', () => {
    assert.equal(sameCode('123456', '123456'), true);
    assert.equal(sameCode('123456', '123457'), false);
    assert.equal(sameCode('123456', '12345'), false);
    // Characters whose low byte is an ASCII digit: U+0131 (ı), U+0232, U+FF36, and a lone surrogate (U+D831).
    for (const lookalike of ['\u0131' + '23456', '1\u0232' + '3456', '12345\uff36', '\ud831' + '23456']) {
      assert.equal(sameCode('123456', lookalike), false, JSON.stringify(lookalike));
      assert.equal(sameCode(lookalike, '123456'), false, JSON.stringify(lookalike));
    }
    assert.equal(sameCode('\ud800', '\udc00'), false, 'two lone surrogates');
  });
});

const oathtoolFound = spawnSync('oathtool', ['--version']).status === 0;

/** Codes from oathtool (OATH Toolkit), the independent implementation: one per line. */
function oathtool(args: string[]): string[] {
  const run = spawnSync('oathtool', args, { encoding: 'utf8' });
  assert.equal(run.status, 0, `oathtool ${args.join(' ')}: ${run.stderr}`);
  return run.stdout.trim().split('\n');
}

/** Deterministic bytes for case `n` (reproducible failures): SHA-256 in counter mode. */
function bytesOf(n: number, label: string, length: number): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; blocks.length * 32 < length; i++) blocks.push(createHash('sha256').update(`${label}/${n}/${i}`).digest());
  return Buffer.concat(blocks).subarray(0, length);
}

describe('HOTP and TOTP against oathtool (SHA-1, SHA-256; 6 and 8 digits; 30 and 60 s; secrets of 1 to 80 bytes)', { skip: oathtoolFound ? false : 'oathtool is not installed' }, () => {
  const CASES = 48;
  const algorithms: OathHash[] = ['SHA1', 'SHA256'];
  const digitsOf = [6, 8] as const;

  it('given any secret and counter, then hotpGenerator gives oathtool\'s HOTP codes', () => {
    for (let n = 0; n < CASES; n++) {
      const secret = bytesOf(n, 'hotp-secret', 1 + (bytesOf(n, 'hotp-length', 1)[0]! % 80));
      // Counters across 32 and 48 bits: the high word of the 8-byte counter matters.
      const counter = [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 12_345][n % 5]! + bytesOf(n, 'hotp-counter', 4).readUInt32BE(0) * (n % 2);
      const digits = digitsOf[n % 2]!;
      const expected = oathtool(['--hotp', '-d', String(digits), '-c', String(counter), '-w', '2', secret.toString('hex')]);
      const codeAt = hotpGenerator(secret, digits);
      assert.deepEqual([0, 1, 2].map((d) => codeAt(counter + d)), expected, `case ${n}: counter ${counter}, ${digits} digits, secret ${secret.toString('hex')}`);
    }
  });

  it('given any secret, time, hash, length and period, then the codes are oathtool\'s and matchTotpStep finds each step of the window, no other', () => {
    for (let n = 0; n < CASES; n++) {
      const secret = bytesOf(n, 'totp-secret', 1 + (bytesOf(n, 'totp-length', 1)[0]! % 80));
      const algorithm = algorithms[n % 2]!;
      const digits = digitsOf[(n >> 1) % 2]!;
      const period = (n >> 2) % 2 === 0 ? 30 : 60;
      // Up to 2^34 s (year 2514), the 2038 and 2106 edges included.
      const seconds = [119, 2 ** 31 - 1, 2 ** 32 + 7][n % 3]! + (bytesOf(n, 'totp-time', 8).readUInt32BE(0) % 4) * 2 ** 32 * (n % 2);
      const t = totpStep(seconds * 1000, period);
      const label = `case ${n}: ${algorithm}, ${digits} digits, ${period} s, @${seconds}, secret ${secret.toString('hex')}`;
      // Steps t-1 .. t+2: the window and the step just after it.
      const codes = oathtool([`--totp=${algorithm.toLowerCase()}`, '-d', String(digits), '-s', `${period}s`, '-N', `@${(t - 1) * period}`, '-w', '3', secret.toString('hex')]);
      const codeAt = hotpGenerator(secret, digits, algorithm);
      assert.deepEqual([t - 1, t, t + 1, t + 2].map(codeAt), codes, label);
      // otplib (totp) refuses secrets under 16 or over 64 bytes; hotpGenerator, the one that verifies, takes them.
      if (secret.length >= 16 && secret.length <= 64) assert.equal(totp(secret, seconds * 1000, { digits, period, algorithm }), codes[1], label);
      const options = { digits, period, algorithm };
      for (const [i, code] of codes.entries()) {
        // The latest step of the window with this code (adjacent steps share one about once in a million).
        const last = codes.slice(0, 3).lastIndexOf(code);
        assert.equal(matchTotpStep(secret, code, seconds * 1000, options), last === -1 ? undefined : t - 1 + last, `${label}, step t${i - 1 >= 0 ? '+' : ''}${i - 1}`);
      }
    }
  });
});
