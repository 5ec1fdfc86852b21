import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import {
  base32Decode,
  base32Encode,
  hashCode,
  hotp,
  keyringFromMasterKey,
  loadKeyring,
  maskSecret,
  OATH_TEST_VECTORS,
  open,
  parseMasterKey,
  projectionUserKey,
  randomDigits,
  sameCode,
  seal,
  SealContext,
  totp,
  totpWindow,
  unmaskSecret,
  userTag,
} from './index.js';

const master = Buffer.alloc(32, 7);
const ring = keyringFromMasterKey(master);

describe('keyring', () => {
  it('refuses to run in production without a key, and rejects keys of the wrong size', () => {
    assert.throws(() => loadKeyring({ NODE_ENV: 'production' }), /MFA_ENCRYPTION_KEY is required/);
    assert.throws(() => parseMasterKey('c2hvcnQ='), /32 bytes/);
    assert.equal(loadKeyring({}).development, true);
    assert.equal(loadKeyring({ MFA_ENCRYPTION_KEY: master.toString('base64') }).keyring.kid, ring.kid);
    assert.equal(loadKeyring({ MFA_ENCRYPTION_KEY: master.toString('hex') }).keyring.kid, ring.kid);
  });

  it('never shows key material when printed', () => {
    const printed = `${inspect(ring)} ${JSON.stringify(ring)}`;
    for (const key of [ring.sealKey, ring.codeHashKey, ring.tagKey, ring.projectionKey]) {
      const raw = key.export();
      assert.ok(!printed.includes(raw.toString('hex')) && !printed.includes(raw.toString('base64')));
    }
  });
});

describe('sealing secrets (AES-256-GCM)', () => {
  it('opens what it sealed, only in the same context, and detects tampering', () => {
    const aad = SealContext.totpSecret('t1', 'helga@contoso.com', 'tok');
    const sealed = seal(ring, Buffer.from('top secret'), aad);
    assert.match(sealed, /^v1\./);
    assert.ok(!sealed.includes(Buffer.from('top secret').toString('base64url')));
    assert.equal(open(ring, sealed, aad).toString(), 'top secret');
    assert.throws(() => open(ring, sealed, SealContext.totpSecret('t2', 'helga@contoso.com', 'tok')));
    const parts = sealed.split('.');
    parts[3] = Buffer.from('tampered!!').toString('base64url');
    assert.throws(() => open(ring, parts.join('.'), aad));
    assert.notEqual(seal(ring, Buffer.from('x'), aad), seal(ring, Buffer.from('x'), aad), 'fresh IV each time');
  });

  it('opens secrets sealed with a previous key after rotation', () => {
    const old = keyringFromMasterKey(Buffer.alloc(32, 1));
    const rotated = keyringFromMasterKey(master, [old]);
    const sealed = seal(old, Buffer.from('kept'), 'ctx');
    assert.equal(open(rotated, sealed, 'ctx').toString(), 'kept');
  });
});

describe('codes', () => {
  it('draws codes of the requested length, all digits, from the whole range', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const c = randomDigits(6);
      assert.match(c, /^\d{6}$/);
      seen.add(c[0]!);
    }
    assert.equal(seen.size, 10, 'leading digit takes every value (leading zeros kept)');
  });

  it('keys code hashes by challenge, so the same code hashes differently per challenge', () => {
    assert.notDeepEqual(hashCode(ring, 'a', '123456'), hashCode(ring, 'b', '123456'));
    assert.deepEqual(hashCode(ring, 'a', '123456'), hashCode(ring, 'a', '123456'));
  });

  it('derives stable, opaque user tags', () => {
    const tag = userTag(ring, 'tenant', 'helga@contoso.com');
    assert.match(tag, /^[A-Za-z0-9_-]{22}$/);
    assert.equal(tag, userTag(ring, 'tenant', 'helga@contoso.com'));
    assert.notEqual(tag, userTag(ring, 'tenant2', 'helga@contoso.com'));
    assert.notEqual(tag, userTag(ring, 'tenan', 'thelga@contoso.com'), 'tenant and user are separated');
  });

  it('masks projection secrets reversibly with a per-nonce keystream', () => {
    const key = projectionUserKey(ring, 'tag');
    const secret = Buffer.from('12345678901234567890');
    const a = maskSecret(key, Buffer.alloc(12, 1), secret);
    const b = maskSecret(key, Buffer.alloc(12, 2), secret);
    assert.notDeepEqual(a, b);
    assert.deepEqual(maskSecret(key, Buffer.alloc(12, 1), a), secret);
  });

  it('unmasks what the projection stores: secret XOR SHA-1(key ‖ nonce ‖ block counter)', () => {
    const key = projectionUserKey(ring, 'tag');
    const nonce = Buffer.from('000102030405060708090a0b', 'hex');
    const secret = Buffer.from('a secret longer than twenty bytes, to span blocks!!');
    // The keystream spelled out independently, so a change of the stored layout cannot go unnoticed.
    const block = (n: number) => createHash('sha1').update(key).update(nonce).update(Buffer.of(n)).digest();
    const stream = Buffer.concat([block(0), block(1), block(2)]);
    const masked = Buffer.from(secret.map((b, i) => b ^ stream[i]!));
    assert.deepEqual(maskSecret(key, nonce, secret), masked);
    assert.deepEqual(unmaskSecret(key, nonce, masked), secret);
  });
});

describe('OATH (RFC 4226 / RFC 6238 test vectors)', () => {
  const secret = Buffer.from(OATH_TEST_VECTORS.secret);
  it('HOTP matches RFC 4226 appendix D', () => {
    OATH_TEST_VECTORS.hotp.forEach((code, counter) => assert.equal(hotp(secret, counter), code));
  });
  it('TOTP SHA-1 matches RFC 6238 appendix B', () => {
    for (const [t, code] of OATH_TEST_VECTORS.totpSha1) assert.equal(totp(secret, t * 1000, { period: 30, digits: 8 }), code);
  });
  it('accepts the current step first, then one step either side', () => {
    assert.deepEqual(totpWindow(59_000, 30), [1, 0, 2]);
    assert.deepEqual(totpWindow(1_111_111_109_000, 60), [18_518_518, 18_518_517, 18_518_519]);
  });
  it('compares codes by value, of equal length only', () => {
    assert.equal(sameCode('287082', '287082'), true);
    assert.equal(sameCode('287082', '287083'), false);
    assert.equal(sameCode('287082', '2870820'), false);
    assert.equal(sameCode('', ''), true);
  });
  it('Base32 round-trips (RFC 4648) and ignores case, spaces and padding', () => {
    assert.equal(base32Encode(secret), 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ');
    assert.deepEqual(base32Decode('gezd gnbv gy3t qojq gezd gnbv gy3t qojq'), secret);
    assert.deepEqual(base32Decode('MZXW6==='), Buffer.from('foo'));
  });
});
