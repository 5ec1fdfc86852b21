import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import {
  dataKeyGeneration,
  formatWrappedDataKey,
  generateDataKey,
  keyringFromMasterKey,
  openWithDataKey,
  parseWrappedDataKey,
  PersonalDataContext,
  rewrapDataKey,
  sealWithDataKey,
  unwrapDataKey,
} from './index.js';

const ring = keyringFromMasterKey(Buffer.alloc(32, 7));
const helga = PersonalDataContext('profile', 'contoso', 'helga@contoso.com');
const phone = Buffer.from('{"phoneNumber":"+46701234567"}');

describe('per-user data keys', () => {
  it('seals with the user key in the d1 form, naming the generation, and opens only with it', () => {
    const { dataKey } = generateDataKey(ring, 'contoso', 'helga@contoso.com', 3);
    const sealed = sealWithDataKey(dataKey, phone, helga);
    assert.match(sealed, /^d1\.3\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/);
    assert.equal(dataKeyGeneration(sealed), 3);
    assert.ok(!sealed.includes(phone.toString('base64url')) && !sealed.includes('4670'));
    assert.deepEqual(openWithDataKey(dataKey, sealed, helga), phone);
    assert.notEqual(sealWithDataKey(dataKey, phone, helga), sealed, 'fresh IV each time');
  });

  it('does not open for another user, tenant or purpose (the AAD binds them)', () => {
    const { dataKey } = generateDataKey(ring, 'contoso', 'helga@contoso.com', 1);
    const sealed = sealWithDataKey(dataKey, phone, helga);
    for (const aad of [
      PersonalDataContext('profile', 'contoso', 'sven@contoso.com'),
      PersonalDataContext('profile', 'fabrikam', 'helga@contoso.com'),
      PersonalDataContext('challenge', 'contoso', 'helga@contoso.com'),
    ]) {
      assert.throws(() => openWithDataKey(dataKey, sealed, aad), /does not open/);
    }
  });

  it('does not open under another key, even of the same user and generation', () => {
    const first = generateDataKey(ring, 'contoso', 'helga@contoso.com', 1).dataKey;
    const second = generateDataKey(ring, 'contoso', 'helga@contoso.com', 1).dataKey;
    assert.throws(() => openWithDataKey(second, sealWithDataKey(first, phone, helga), helga), /does not open/);
    const next = generateDataKey(ring, 'contoso', 'helga@contoso.com', 2).dataKey;
    assert.throws(() => openWithDataKey(next, sealWithDataKey(first, phone, helga), helga), /generation 1, not 2/);
  });

  it('detects tampering with the ciphertext, the tag, the IV or the generation, and refuses truncated tags', () => {
    const { dataKey } = generateDataKey(ring, 'contoso', 'helga@contoso.com', 1);
    const parts = sealWithDataKey(dataKey, phone, helga).split('.');
    const flip = (text: string) => {
      const bytes = Buffer.from(text, 'base64url');
      bytes[0]! ^= 1;
      return bytes.toString('base64url');
    };
    for (const i of [2, 3, 4]) {
      const tampered = [...parts];
      tampered[i] = flip(tampered[i]!);
      assert.throws(() => openWithDataKey(dataKey, tampered.join('.'), helga), /does not open/, `part ${i}`);
    }
    const truncated = [...parts];
    truncated[4] = Buffer.from(truncated[4]!, 'base64url').subarray(0, 4).toString('base64url');
    assert.throws(() => openWithDataKey(dataKey, truncated.join('.'), helga));
    // Relabelled as generation 2 and opened with a generation-2 view of the same key: the gen is in the AAD.
    const relabelled = { gen: 2, key: dataKey.key };
    assert.throws(() => openWithDataKey(relabelled, ['d1', '2', ...parts.slice(2)].join('.'), helga), /does not open/);
    assert.throws(() => openWithDataKey(dataKey, 'v1.kid.x.y.z', helga), /not a value sealed with a data key/);
    assert.equal(dataKeyGeneration('d1.0.a.b.c'), undefined);
  });

  it('keeps the key only wrapped by the master keyring, bound to tenant, user and generation', () => {
    const { dataKey, wrapped } = generateDataKey(ring, 'contoso', 'helga@contoso.com', 4);
    const sealed = sealWithDataKey(dataKey, phone, helga);
    const unwrapped = unwrapDataKey(ring, 'contoso', 'helga@contoso.com', 4, wrapped);
    assert.deepEqual(openWithDataKey(unwrapped, sealed, helga), phone);
    assert.throws(() => unwrapDataKey(ring, 'contoso', 'sven@contoso.com', 4, wrapped));
    assert.throws(() => unwrapDataKey(ring, 'contoso', 'helga@contoso.com', 5, wrapped));
    assert.throws(() => unwrapDataKey(keyringFromMasterKey(Buffer.alloc(32, 8)), 'contoso', 'helga@contoso.com', 4, wrapped));
    const raw = dataKey.key.export();
    assert.ok(!wrapped.includes(raw.toString('base64url')));
    const printed = `${inspect(dataKey)} ${JSON.stringify(dataKey)}`;
    assert.ok(!printed.includes(raw.toString('hex')) && !printed.includes(raw.toString('base64')), 'key material never printed');
  });

  it('wraps a key again with a new master key, the old one still opening it until then', () => {
    const { dataKey, wrapped } = generateDataKey(ring, 'contoso', 'helga@contoso.com', 2);
    const rotated = keyringFromMasterKey(Buffer.alloc(32, 8), [ring]);
    const rewrapped = rewrapDataKey(rotated, 'contoso', 'helga@contoso.com', 2, wrapped);
    assert.ok(rewrapped.startsWith(`v2.${rotated.kid}.`));
    const sealed = sealWithDataKey(dataKey, phone, helga);
    const reopened = unwrapDataKey(keyringFromMasterKey(Buffer.alloc(32, 8)), 'contoso', 'helga@contoso.com', 2, rewrapped);
    assert.deepEqual(openWithDataKey(reopened, sealed, helga), phone);
  });

  it('carries the wrapped key and its generation as one Redis field', () => {
    const { wrapped } = generateDataKey(ring, 't', 'u', 12);
    assert.deepEqual(parseWrappedDataKey(formatWrappedDataKey(12, wrapped)), { gen: 12, wrapped });
    for (const bad of ['', ':x', 'x:y', '0:y', '-1:y']) assert.equal(parseWrappedDataKey(bad), undefined, bad);
    assert.throws(() => generateDataKey(ring, 't', 'u', 0), RangeError);
  });
});
