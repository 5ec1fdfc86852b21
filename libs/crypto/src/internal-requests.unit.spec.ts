import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { INTERNAL_SIGNATURE_MAX_AGE_MS, internalRequestSigned, signInternalRequest } from './internal-requests.js';
import { keyringFromMasterKey } from './keyring.js';

describe('signatures of the services’ requests to one another', () => {
  const old = keyringFromMasterKey(randomBytes(32));
  const keyring = keyringFromMasterKey(randomBytes(32), [old]);
  const subject = 'mfa.int.challenge.voice';
  const body = JSON.stringify({ tenantId: 'contoso', challengeId: 'c1', approved: true });
  const now = Date.UTC(2026, 11, 4, 12);

  it('given a request signed with the master key, then it is the services’, bytes or text alike', () => {
    const header = signInternalRequest(keyring, subject, body, now);
    assert.match(header, new RegExp(`^${keyring.kid}\\.${now}\\.[A-Za-z0-9_-]{43}$`));
    assert.equal(internalRequestSigned(keyring, subject, body, header, now), true);
    assert.equal(internalRequestSigned(keyring, subject, new TextEncoder().encode(body), header, now + 1_000), true);
  });

  it('given another body, subject or time than the one signed, then it is refused', () => {
    const header = signInternalRequest(keyring, subject, body, now);
    assert.equal(internalRequestSigned(keyring, subject, body.replace('true', 'false'), header, now), false);
    assert.equal(internalRequestSigned(keyring, 'mfa.int.fraud.call', body, header, now), false);
    const [kid, , tag] = header.split('.');
    assert.equal(internalRequestSigned(keyring, subject, body, `${kid}.${now + 1}.${tag}`, now), false);
  });

  it('given a signature older or newer than the window, then it is refused', () => {
    const header = signInternalRequest(keyring, subject, body, now);
    assert.equal(internalRequestSigned(keyring, subject, body, header, now + INTERNAL_SIGNATURE_MAX_AGE_MS), true);
    assert.equal(internalRequestSigned(keyring, subject, body, header, now + INTERNAL_SIGNATURE_MAX_AGE_MS + 1), false);
    assert.equal(internalRequestSigned(keyring, subject, body, header, now - INTERNAL_SIGNATURE_MAX_AGE_MS - 1), false);
  });

  it('given a previous master key (rotated out, maybe because it leaked) or another key, then its signatures do not count', () => {
    assert.equal(internalRequestSigned(keyring, subject, body, signInternalRequest(old, subject, body, now), now), false);
    assert.equal(internalRequestSigned(old, subject, body, signInternalRequest(old, subject, body, now), now), true, 'the old key itself still signs for a keyring that has it as current');
    const stranger = keyringFromMasterKey(randomBytes(32));
    assert.equal(internalRequestSigned(keyring, subject, body, signInternalRequest(stranger, subject, body, now), now), false);
    // Its key id on another key's tag: the tag decides.
    const forged = signInternalRequest(stranger, subject, body, now).replace(stranger.kid, keyring.kid);
    assert.equal(internalRequestSigned(keyring, subject, body, forged, now), false);
  });

  it('given no signature or a malformed one, then it is refused', () => {
    const header = signInternalRequest(keyring, subject, body, now);
    for (const bad of [undefined, '', 'x', header.slice(0, -1), `${header}=`, `${header} `, header.replace(/\.\d+\./, '.1e12.'), header.replace(/\.\d+\./, '.-5.')]) {
      assert.equal(internalRequestSigned(keyring, subject, body, bad, now), false, String(bad));
    }
  });
});
