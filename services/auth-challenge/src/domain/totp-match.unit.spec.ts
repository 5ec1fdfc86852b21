import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hotp, OATH_TEST_VECTORS } from '@mfa/crypto';
import { matchTotpCode, type TotpToken } from './totp-match.js';

// The RFC 6238 appendix B seed (SHA-1) and its published codes: the check that used to run on the
// Lua HOTP inside Redis now runs where codes are compared.
const secret = Buffer.from(OATH_TEST_VECTORS.secret);
const token = (over: Partial<TotpToken> = {}): TotpToken => ({ tokenId: 'app', secret, digits: 6, period: 30, algorithm: 'SHA1', lastStep: -1, ...over });
const at = (unixSeconds: number) => unixSeconds * 1000;

describe('TOTP code matching', () => {
  it('given a code two steps of the window share, then the later step is the one recorded, and the code is spent for both', () => {
    // The RFC seed's 6-digit code is 911617 at steps 910737 and 910738 (oathtool agrees).
    const now = at(910_737 * 30 + 1);
    assert.deepEqual(matchTotpCode([token()], '911617', now), { matched: true, tokenId: 'app', step: 910_738 });
    assert.deepEqual(matchTotpCode([token({ lastStep: 910_738 })], '911617', at(910_738 * 30 + 1)), { matched: false, cause: 'reused' });
  });

  it('given an 8-digit token, when each RFC 6238 vector is presented at its time, then it matches with its time step', () => {
    for (const [t, code] of OATH_TEST_VECTORS.totpSha1) {
      assert.deepEqual(matchTotpCode([token({ digits: 8 })], code, at(t)), { matched: true, tokenId: 'app', step: Math.floor(t / 30) }, `T=${t}`);
    }
  });

  it('given a 6-digit token, when the last six digits of a vector are presented, then they match', () => {
    assert.deepEqual(matchTotpCode([token()], '081804', at(1_111_111_109)), { matched: true, tokenId: 'app', step: 37_037_036 });
  });

  it('given a 60-second hardware token, when its code is presented, then the 60-second step matches', () => {
    const step = Math.floor(1_111_111_109 / 60);
    const code = hotp(secret, step, 8);
    assert.deepEqual(matchTotpCode([token({ digits: 8, period: 60 })], code, at(1_111_111_109)), { matched: true, tokenId: 'app', step });
    assert.deepEqual(matchTotpCode([token({ digits: 8, period: 30 })], code, at(1_111_111_109)), { matched: false, cause: 'mismatch' });
  });

  it('given a SHA-256 hardware token, when each RFC 6238 SHA-256 vector is presented, then only the SHA-256 token matches', () => {
    const sha256 = Buffer.from(OATH_TEST_VECTORS.sha256Secret);
    for (const [t, code] of OATH_TEST_VECTORS.totpSha256) {
      assert.deepEqual(matchTotpCode([token({ secret: sha256, digits: 8, algorithm: 'SHA256' })], code, at(t)), { matched: true, tokenId: 'app', step: Math.floor(t / 30) });
      assert.equal(matchTotpCode([token({ secret: sha256, digits: 8 })], code, at(t)).matched, false);
    }
  });

  it('given clock drift, then one step either side matches and two steps do not', () => {
    const t = 1_111_111_109;
    assert.equal(matchTotpCode([token()], '081804', at(t + 30)).matched, true);
    assert.equal(matchTotpCode([token()], '081804', at(t - 30)).matched, true);
    assert.deepEqual(matchTotpCode([token()], '081804', at(t + 60)), { matched: false, cause: 'mismatch' });
  });

  it('given the step was already accepted for the token, then the code is reused, never a match', () => {
    const step = 37_037_036;
    assert.deepEqual(matchTotpCode([token({ lastStep: step })], '081804', at(1_111_111_109)), { matched: false, cause: 'reused' });
    assert.deepEqual(matchTotpCode([token({ lastStep: step + 1 })], '081804', at(1_111_111_109)), { matched: false, cause: 'reused' });
    assert.equal(matchTotpCode([token({ lastStep: step - 1 })], '081804', at(1_111_111_109)).matched, true);
  });

  it('given the current step is spent, when the next step\'s code is presented, then that step matches', () => {
    const t = 1_111_111_109;
    const next = hotp(secret, 37_037_037, 6);
    assert.deepEqual(matchTotpCode([token({ lastStep: 37_037_036 })], next, at(t)), { matched: true, tokenId: 'app', step: 37_037_037 });
  });

  it('given several tokens, then the one whose code it is matches', () => {
    const other = Buffer.from('another secret of twenty', 'ascii');
    const code = hotp(other, 37_037_036, 6);
    const tokens = [token(), token({ tokenId: 'hw', secret: other })];
    assert.deepEqual(matchTotpCode(tokens, code, at(1_111_111_109)), { matched: true, tokenId: 'hw', step: 37_037_036 });
    assert.deepEqual(matchTotpCode([], code, at(1_111_111_109)), { matched: false, cause: 'mismatch' });
  });

  it('given a code of another length than the token\'s, then it is simply wrong', () => {
    assert.deepEqual(matchTotpCode([token()], '07081804', at(1_111_111_109)), { matched: false, cause: 'mismatch' });
    assert.deepEqual(matchTotpCode([token({ digits: 8 })], '081804', at(1_111_111_109)), { matched: false, cause: 'mismatch' });
  });
});
