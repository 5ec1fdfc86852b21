import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import {
  apiKeyMatches,
  issueApiKey,
  parseApiKey,
  platformKeyMatcher,
  randomToken,
  base32Decode,
  base32Encode,
  CursorError,
  hashCode,
  hotp,
  keyringFromMasterKey,
  loadKeyring,
  maskSecret,
  OATH_TEST_VECTORS,
  open,
  openCursor,
  parseMasterKey,
  projectionUserKey,
  randomDigits,
  sameCode,
  seal,
  sealCursor,
  SealContext,
  SealError,
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

  describe('with NODE_ENV=production, refuses the public development key however it arrives', () => {
    // The published development key (keyring.ts), recomputed here; its kid proves it is the same.
    const developmentKey = createHash('sha256').update('open-mfa development key - never use in production').digest();
    const production = { NODE_ENV: 'production' };
    const forms = {
      hex: developmentKey.toString('hex'),
      'upper-case hex': developmentKey.toString('hex').toUpperCase(),
      base64: developmentKey.toString('base64'),
      base64url: developmentKey.toString('base64url'),
      'base64 with spaces around': `  ${developmentKey.toString('base64')}\n`,
    };

    it('is the key development falls back to', () => {
      assert.equal(keyringFromMasterKey(developmentKey).kid, loadKeyring({}).keyring.kid);
    });

    it('no key at all', () => {
      assert.throws(() => loadKeyring(production), /MFA_ENCRYPTION_KEY is required when NODE_ENV=production/);
      assert.throws(() => loadKeyring({ ...production, MFA_ENCRYPTION_KEY: '   ' }), /MFA_ENCRYPTION_KEY is required/);
    });

    for (const [form, text] of Object.entries(forms)) {
      it(`the development key as MFA_ENCRYPTION_KEY, ${form}`, () => {
        assert.equal(loadKeyring({ MFA_ENCRYPTION_KEY: text }).keyring.kid, loadKeyring({}).keyring.kid, 'development accepts it');
        assert.throws(
          () => loadKeyring({ ...production, MFA_ENCRYPTION_KEY: text }),
          (error: Error) => /MFA_ENCRYPTION_KEY is the public development key/.test(error.message) && !error.message.includes(text.trim()),
        );
      });

      it(`the development key among MFA_PREVIOUS_ENCRYPTION_KEYS, ${form}`, () => {
        const previous = `${Buffer.alloc(32, 1).toString('base64')}, ${text.trim()}`;
        assert.equal(loadKeyring({ MFA_ENCRYPTION_KEY: master.toString('base64'), MFA_PREVIOUS_ENCRYPTION_KEYS: previous }).keyring.previous.length, 2);
        assert.throws(
          () => loadKeyring({ ...production, MFA_ENCRYPTION_KEY: master.toString('base64'), MFA_PREVIOUS_ENCRYPTION_KEYS: previous }),
          /MFA_PREVIOUS_ENCRYPTION_KEYS contains the public development key/,
        );
      });
    }

    it('but accepts a real key, with real previous keys', () => {
      const loaded = loadKeyring({ ...production, MFA_ENCRYPTION_KEY: master.toString('hex'), MFA_PREVIOUS_ENCRYPTION_KEYS: Buffer.alloc(32, 1).toString('base64url') });
      assert.equal(loaded.keyring.kid, ring.kid);
      assert.equal(loaded.development, false);
      assert.equal(loaded.keyring.previous[0]!.kid, keyringFromMasterKey(Buffer.alloc(32, 1)).kid);
    });
  });

  it('never shows key material when printed', () => {
    const printed = `${inspect(ring)} ${JSON.stringify(ring)}`;
    for (const key of [ring.sealKey, ring.codeHashKey, ring.tagKey, ring.projectionKey, ring.cursorKey]) {
      const raw = key.export();
      assert.ok(!printed.includes(raw.toString('hex')) && !printed.includes(raw.toString('base64')));
    }
  });

  it('never shows key material of any derived key, nor of previous keys, however it is printed or copied', () => {
    const rotated = keyringFromMasterKey(master, [keyringFromMasterKey(Buffer.alloc(32, 1))]);
    const printed = [
      inspect(rotated),
      inspect(rotated, { showHidden: true, depth: 10 }),
      inspect(rotated, { customInspect: false, showHidden: true, depth: 10 }),
      JSON.stringify(rotated),
      JSON.stringify({ ...rotated }),
      `${rotated}`,
    ].join('\n');
    for (const r of [rotated, rotated.previous[0]!]) {
      for (const key of [r.sealKey, r.codeHashKey, r.tagKey, r.projectionKey, r.apiKeyHashKey, r.cursorKey, r.internalKey]) {
        const raw = key.export();
        for (const text of [raw.toString('hex'), raw.toString('base64'), raw.toString('base64url'), [...raw].join(', ')]) {
          assert.ok(!printed.includes(text), 'key material printed');
        }
      }
    }
    for (const text of [master.toString('hex'), master.toString('base64')]) assert.ok(!printed.includes(text), 'master key printed');
  });

  it('names the variable, and the entry, of a malformed key, never its text', () => {
    const good = master.toString('base64');
    const bad = 'not-a-key-but-a-secret-looking-value';
    assert.throws(() => loadKeyring({ MFA_ENCRYPTION_KEY: bad }), (e: Error) => /^MFA_ENCRYPTION_KEY must be 32 bytes/.test(e.message) && !e.message.includes(bad));
    assert.throws(
      () => loadKeyring({ MFA_ENCRYPTION_KEY: good, MFA_PREVIOUS_ENCRYPTION_KEYS: bad }),
      (e: Error) => /^MFA_PREVIOUS_ENCRYPTION_KEYS must be 32 bytes/.test(e.message) && !e.message.includes(bad),
    );
    assert.throws(
      () => loadKeyring({ MFA_ENCRYPTION_KEY: good, MFA_PREVIOUS_ENCRYPTION_KEYS: `${Buffer.alloc(32, 1).toString('hex')},${bad}` }),
      (e: Error) => /^MFA_PREVIOUS_ENCRYPTION_KEYS \(entry 2 of 2\) must be 32 bytes/.test(e.message) && !e.message.includes(bad),
    );
  });
});

describe('sealing secrets (AES-256-GCM)', () => {
  const HOUR = 3_600_000;
  const now = Date.parse('2026-03-01T10:20:00Z');
  const totpScope = SealContext.totpSecret('t1', 'helga@contoso.com', 'tok');

  /** Replaces part `index` of a sealed form. */
  const withPart = (sealed: string, index: number, value: string) => {
    const parts = sealed.split('.');
    parts[index] = value;
    return parts.join('.');
  };

  it('seals as v2 under a key of the purpose and the hour, and opens it again', () => {
    const sealed = seal(ring, Buffer.from('top secret'), totpScope, now);
    assert.match(sealed, /^v2\.[A-Za-z0-9_-]{8}\.\d+\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/);
    const [, kid, hour] = sealed.split('.');
    assert.equal(kid, ring.kid);
    assert.equal(Number(hour), Math.floor(now / HOUR));
    assert.ok(!sealed.includes(Buffer.from('top secret').toString('base64url')));
    assert.equal(open(ring, sealed, totpScope).toString(), 'top secret');
    assert.equal(open(ring, seal(ring, Buffer.from('x'), totpScope), totpScope).toString(), 'x', 'the clock by default');
    assert.notEqual(seal(ring, Buffer.from('x'), totpScope, now), seal(ring, Buffer.from('x'), totpScope, now), 'fresh IV each time');
  });

  it('opens what was sealed in earlier hours, each under its own key', () => {
    const earlier = seal(ring, Buffer.from('old'), totpScope, now - 5000 * HOUR);
    const later = seal(ring, Buffer.from('new'), totpScope, now + HOUR);
    assert.equal(open(ring, earlier, totpScope).toString(), 'old');
    assert.equal(open(ring, later, totpScope).toString(), 'new');
  });

  it('binds to the hour: a sealed secret moved to another hour does not open', () => {
    const sealed = seal(ring, Buffer.from('top secret'), totpScope, now);
    const hour = Math.floor(now / HOUR);
    for (const other of [hour - 1, hour + 1, 0]) {
      assert.throws(() => open(ring, withPart(sealed, 2, String(other)), totpScope), /does not open/);
    }
    for (const malformed of ['', '-1', '01', '1.5', 'x', '12345678901']) {
      assert.throws(() => open(ring, withPart(sealed, 2, malformed), totpScope), SealError, malformed);
    }
  });

  it('binds to the purpose: an SMS code does not open as a TOTP secret, even with the same AAD', () => {
    const sms = SealContext.smsCode('t1', 'ch-1');
    const sealed = seal(ring, Buffer.from('483920'), sms, now);
    assert.throws(() => open(ring, sealed, { purpose: 'totp-secret', aad: sms.aad }), /does not open/);
    assert.equal(open(ring, sealed, sms).toString(), '483920');
  });

  it('binds to the key id: another known or an unknown kid does not open', () => {
    const other = keyringFromMasterKey(Buffer.alloc(32, 9));
    const both = keyringFromMasterKey(master, [other]);
    const sealed = seal(both, Buffer.from('top secret'), totpScope, now);
    assert.throws(() => open(both, withPart(sealed, 1, other.kid), totpScope), /does not open/);
    assert.throws(() => open(both, withPart(sealed, 1, 'AAAAAAAA'), totpScope), /no key with id/);
  });

  it('binds to the record (AAD), and detects tampered, truncated or re-tagged parts', () => {
    const sealed = seal(ring, Buffer.from('top secret'), totpScope, now);
    assert.throws(() => open(ring, sealed, SealContext.totpSecret('t2', 'helga@contoso.com', 'tok')), /does not open/);
    assert.throws(() => open(ring, sealed, SealContext.totpSecret('t1', 'helga@contoso.com', 'tok2')), /does not open/);
    assert.throws(() => open(ring, withPart(sealed, 4, Buffer.from('tampered!!').toString('base64url')), totpScope), /does not open/);
    const tag = Buffer.from(sealed.split('.')[5]!, 'base64url');
    assert.throws(() => open(ring, withPart(sealed, 5, tag.subarray(0, 4).toString('base64url')), totpScope), SealError, 'short tag');
    assert.throws(() => open(ring, withPart(sealed, 3, 'AAAA'), totpScope), SealError, 'short IV');
    assert.throws(() => open(ring, `v3${sealed.slice(2)}`, totpScope), /not a sealed secret/);
    assert.throws(() => open(ring, sealed.split('.').slice(0, 5).join('.'), totpScope), /not a sealed secret/);
  });

  it('still opens v1 secrets sealed before v2, with the current or a previous key, and binds them to their AAD', () => {
    // Sealed by the v1 implementation with the master keys Buffer.alloc(32, 7) and Buffer.alloc(32, 1).
    const totpV1 = 'v1.Y0PbS83U.iKasnUcxPBTl2jTm.yRM64xysd_i0ADuKdzyL_7LBDt8.yYFT-OnTKeu1E81TmAV7bw';
    const smsV1 = 'v1.Y0PbS83U.w6nB-8wTvv6a5lQH.-TeimaBa.Fz7fFNSsDk57yVaV_HnfSw';
    const oldKeyV1 = 'v1.BfnMLp0c.g-lIcFNJqy2FS7nh.ti0E4A.Q8DXE4u9ghaKWE5AaA98YA';
    const totpV1Scope = SealContext.totpSecret('contoso', 'helga@contoso.com', 'tok-1');
    assert.equal(open(ring, totpV1, totpV1Scope).toString(), '12345678901234567890');
    assert.equal(open(ring, smsV1, SealContext.smsCode('contoso', 'ch-1')).toString(), '483920');
    const rotated = keyringFromMasterKey(Buffer.alloc(32, 3), [ring, keyringFromMasterKey(Buffer.alloc(32, 1))]);
    assert.equal(open(rotated, oldKeyV1, SealContext.totpSecret('contoso', 'helga@contoso.com', 'tok-0')).toString(), 'kept');
    assert.throws(() => open(ring, totpV1, SealContext.totpSecret('contoso', 'helga@contoso.com', 'tok-2')), /does not open/);
    assert.throws(() => open(ring, withPart(smsV1, 3, 'AAAA'), SealContext.smsCode('contoso', 'ch-1')), /does not open/);
  });

  it('given any two different places (purpose, tenant, user, token, challenge, device, job, part, generation), then what is sealed for one opens in no other', () => {
    // Named by the arguments each context takes, so two names are two different places: a context
    // that dropped one of its arguments from the AAD would make two of them open alike.
    const scopes = new Map<string, ReturnType<typeof SealContext.totpSecret>>();
    for (const [t, u, x] of [['t1', 'u1', 'x1'], ['t2', 'u1', 'x1'], ['t1', 'u2', 'x1'], ['t1', 'u1', 'x2'], ['u1', 't1', 'x1'], ['t1', 'x1', 'u1']] as const) {
      scopes.set(`totpSecret ${t}/${u}/${x}`, SealContext.totpSecret(t, u, x));
      scopes.set(`hardwareSecret ${t}/${x}`, SealContext.hardwareSecret(t, x));
      scopes.set(`importFile file ${t}/${x}`, SealContext.importFile(t, x, 'file'));
      scopes.set(`importFile keys ${t}/${x}`, SealContext.importFile(t, x, 'keys'));
      scopes.set(`smsCode ${t}/${x}`, SealContext.smsCode(t, x));
      scopes.set(`pinHash ${t}/${u}`, SealContext.pinHash(t, u));
      scopes.set(`pushToken ${t}/${u}/${x}`, SealContext.pushToken(t, u, x));
      scopes.set(`userDataKey 1 ${t}/${u}`, SealContext.userDataKey(t, u, 1));
      scopes.set(`userDataKey 2 ${t}/${u}`, SealContext.userDataKey(t, u, 2));
    }
    const distinct = [...scopes];
    assert.ok(distinct.length > 40, String(distinct.length));
    for (const [name, scope] of distinct) {
      const sealed = seal(ring, Buffer.from(name), scope, now);
      for (const [other, otherScope] of distinct) {
        if (other === name) assert.equal(open(ring, sealed, otherScope).toString(), name);
        else assert.throws(() => open(ring, sealed, otherScope), SealError, `${name} opened as ${other}`);
      }
    }
  });

  it('opens secrets sealed with a previous key after rotation', () => {
    const old = keyringFromMasterKey(Buffer.alloc(32, 1));
    const rotated = keyringFromMasterKey(master, [old]);
    const sealed = seal(old, Buffer.from('kept'), totpScope, now);
    assert.equal(open(rotated, sealed, totpScope).toString(), 'kept');
  });
});

describe('cursors (HMAC-SHA256, per tenant and query)', () => {
  const scope = { tenantId: 'contoso', kind: 'reports.signins' };
  const position = ['2025-06-01T12:00:00.123456Z', '4AMyj8Y3MFyBHY2VQWBJVQ.JHS0AdTszDuizkWaMLjVhQ'];
  const refused = (cursor: string, where = scope, keyring = ring) =>
    assert.throws(() => openCursor(keyring, where, cursor), (e: Error) => e instanceof CursorError && e.message === 'not a cursor this service issued');

  it('opens what it issued, in the same scope, with any JSON payload', () => {
    const cursor = sealCursor(ring, scope, position);
    assert.match(cursor, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(openCursor(ring, scope, cursor), position);
    for (const payload of [{ at: 1, id: 'x' }, 'text', 42, null, ['Åsa', '\u0000']]) {
      assert.deepEqual(openCursor(ring, scope, sealCursor(ring, scope, payload)), payload);
    }
  });

  it("refuses another tenant's cursor, another query's, and one issued under another key", () => {
    const cursor = sealCursor(ring, scope, position);
    refused(cursor, { ...scope, tenantId: 'fabrikam' });
    refused(cursor, { ...scope, kind: 'reports.audit' });
    refused(sealCursor(ring, { tenantId: 'contos', kind: 'oreports.signins' }, position), { tenantId: 'contoso', kind: 'reports.signins' });
    refused(cursor, scope, keyringFromMasterKey(Buffer.alloc(32, 9)));
  });

  it('still opens a cursor issued just before a key rotation', () => {
    const old = keyringFromMasterKey(Buffer.alloc(32, 1));
    const cursor = sealCursor(old, scope, position);
    assert.deepEqual(openCursor(keyringFromMasterKey(master, [old]), scope, cursor), position);
  });

  it('refuses forged, truncated and tampered cursors', () => {
    const cursor = sealCursor(ring, scope, position);
    const [body, tag] = cursor.split('.') as [string, string];
    const forgedBody = Buffer.from(JSON.stringify(['2030-01-01T00:00:00.000000Z', 'x'])).toString('base64url');
    refused(Buffer.from(JSON.stringify(position)).toString('base64url'), scope); // the unsigned form issued before
    refused(`${forgedBody}.${tag}`);
    refused(`${forgedBody}.${'A'.repeat(22)}`);
    refused(body);
    refused(`${body}.`);
    refused(cursor.slice(0, -1));
    refused(`${body.slice(0, -2)}.${tag}`);
    refused(`${body.slice(0, 5)}${body[5] === 'A' ? 'B' : 'A'}${body.slice(6)}.${tag}`);
    refused(`${body}.${tag[0] === 'A' ? 'B' : 'A'}${tag.slice(1)}`);
    // The last of 22 characters carries 2 bits of the tag and 4 padding bits: the same tag with a
    // padding bit set decodes to the same bytes, and is refused all the same.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const nonCanonical = `${tag.slice(0, -1)}${alphabet[alphabet.indexOf(tag.at(-1)!) + 1]}`;
    assert.deepEqual(Buffer.from(nonCanonical, 'base64url'), Buffer.from(tag, 'base64url'));
    refused(`${body}.${nonCanonical}`);
    refused(`${cursor}.${tag}`);
    refused('');
    refused('not a cursor!');
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

describe('randomToken', () => {
  it('never starts with "-", which a command line would take for an option, and keeps its length', () => {
    const tokens = Array.from({ length: 5000 }, () => randomToken(12));
    assert.ok(tokens.every((t) => !t.startsWith('-') && t.length === 16 && /^[A-Za-z0-9_-]+$/.test(t)));
    assert.equal(new Set(tokens).size, tokens.length);
  });
});

describe('API keys (keyed hashes only)', () => {
  it('given an issued key, then its secret matches the stored hash, and nothing else does', () => {
    const issued = issueApiKey(ring);
    assert.match(issued.apiKey, /^mfak\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}$/);
    const parsed = parseApiKey(issued.apiKey)!;
    assert.equal(parsed.clientId, issued.clientId);
    assert.ok(!issued.keyHash.includes(parsed.secret));
    const stored = Buffer.from(issued.keyHash, 'base64url');
    assert.equal(apiKeyMatches(ring, parsed.clientId, parsed.secret, stored), true);
    const other = parseApiKey(issueApiKey(ring).apiKey)!;
    assert.equal(apiKeyMatches(ring, parsed.clientId, other.secret, stored), false, 'another secret');
    assert.equal(apiKeyMatches(ring, other.clientId, parsed.secret, stored), false, 'bound to its client id');
    assert.equal(apiKeyMatches(ring, parsed.clientId, parsed.secret, stored.subarray(0, 16)), false, 'a truncated hash');
    assert.equal(apiKeyMatches(keyringFromMasterKey(Buffer.alloc(32, 9)), parsed.clientId, parsed.secret, stored), false, 'another master key');
    for (const bad of ['', `${issued.apiKey} `, issued.apiKey.replace('mfak', 'MFAK'), `${issued.apiKey}x`]) assert.equal(parseApiKey(bad), undefined, bad);
  });

  it('given a master key rotation, then keys issued before it no longer match (operations.md: their hash key follows the master key), keys issued after it do', () => {
    const before = issueApiKey(ring);
    const rotated = keyringFromMasterKey(Buffer.alloc(32, 3), [ring]);
    const after = issueApiKey(rotated);
    const matches = (issued: typeof before) => {
      const { clientId, secret } = parseApiKey(issued.apiKey)!;
      return apiKeyMatches(rotated, clientId, secret, Buffer.from(issued.keyHash, 'base64url'));
    };
    assert.equal(matches(before), false);
    assert.equal(matches(after), true);
  });

  it('given the platform key, then only that exact text matches', () => {
    const matches = platformKeyMatcher(ring, 'the-platform-key-0123456789');
    assert.equal(matches('the-platform-key-0123456789'), true);
    for (const bad of ['', 'the-platform-key-012345678', 'the-platform-key-01234567890', 'The-platform-key-0123456789']) assert.equal(matches(bad), false, bad);
  });
});
