import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { base32Encode } from '@mfa/crypto';

/** scrypt's cost: 16 MiB and about 40 ms per hash here; the passwords themselves carry 120 bits. */
const PARAMS = { N: 16_384, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
const PASSWORD_BYTES = 15; // 120 bits, 24 Base32 characters

const derive = (password: string, salt: Buffer, params: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) =>
    scrypt(password.normalize('NFKC'), salt, KEY_BYTES, { ...params, maxmem: 64 * 1024 * 1024 }, (error, key) => (error ? reject(error) : resolve(key))),
  );

/**
 * App passwords: drawn from the CSPRNG (24 lower-case Base32 characters, 120 bits, easy to type
 * into an old mail client), kept only as scrypt hashes with a salt of their own, checked in
 * constant time against every one of the user's hashes.
 */
export class AppPasswordHasher {
  newPassword(): string {
    return base32Encode(randomBytes(PASSWORD_BYTES)).toLowerCase();
  }

  async hash(password: string): Promise<string> {
    const salt = randomBytes(16);
    const key = await derive(password, salt, PARAMS);
    return `scrypt$${PARAMS.N}$${PARAMS.r}$${PARAMS.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
  }

  /** Whether `password` is one of `hashes`; every hash is derived whatever matches, so the time says nothing. */
  async matchesAny(password: string, hashes: readonly string[]): Promise<boolean> {
    return (await this.matchIndex(password, hashes)) >= 0;
  }

  /** Which of `hashes` `password` is (its index), or -1; every hash is derived whatever matches. */
  async matchIndex(password: string, hashes: readonly string[]): Promise<number> {
    const candidate = password.replace(/[\s-]/g, '').toLowerCase();
    let found = -1;
    for (const [index, stored] of hashes.entries()) {
      const [scheme, n, r, p, salt, key] = stored.split('$');
      if (scheme !== 'scrypt' || !salt || !key) continue;
      const expected = Buffer.from(key, 'base64url');
      const derived = await derive(candidate, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) });
      if (derived.length === expected.length && timingSafeEqual(derived, expected)) found = index;
    }
    return found;
  }
}
