import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { matchTotpStep, otpauthUri } from './totp.js';

// RFC 6238 appendix B, SHA-1 seed.
const rfcSecret = Buffer.from('12345678901234567890', 'ascii');

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

describe('otpauth URI', () => {
  it('spells out every parameter and encodes issuer and account', () => {
    const uri = otpauthUri({ issuer: 'Open MFA', label: 'helga@contoso.com:x y', secretBase32: 'JBSWY3DPEHPK3PXP', digits: 6, period: 30 });
    assert.equal(
      uri,
      'otpauth://totp/Open%20MFA:helga%40contoso.com%3Ax%20y?secret=JBSWY3DPEHPK3PXP&issuer=Open%20MFA&algorithm=SHA1&digits=6&period=30',
    );
    const parsed = new URL(uri);
    assert.equal(parsed.searchParams.get('issuer'), 'Open MFA');
    assert.equal(decodeURIComponent(parsed.pathname.split(':').slice(1).join(':')), 'helga@contoso.com:x y');
  });
});
