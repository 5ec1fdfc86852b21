import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { otpauthUri } from './totp.js';

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
