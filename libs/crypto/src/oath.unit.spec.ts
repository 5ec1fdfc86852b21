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
  });

  it('treats a code of the wrong length as wrong instead of failing', () => {
    assert.equal(matchTotpStep(rfcSecret, '94287082', 59_000, { digits: 6, period: 30 }), undefined);
    assert.equal(matchTotpStep(rfcSecret, '1234', 59_000, { digits: 6, period: 30 }), undefined);
  });
});
