import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hotp, hotpCodes, hotpGenerator, matchTotpStep, OATH_TEST_VECTORS, totp, totpStep } from './oath.js';

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
