import { createHash, createHmac, randomBytes, randomFillSync, randomInt } from 'node:crypto';
import { base32 } from '@scure/base';
import type { Keyring } from './keyring.js';

/** A one-time code of `digits` decimal digits, uniform, from the CSPRNG. */
export function randomDigits(digits: number): string {
  if (!Number.isInteger(digits) || digits < 4 || digits > 10) throw new RangeError('digits must be 4..10');
  // randomInt is unbiased and limited to < 2^48, so split above 12 digits; we stay below.
  return randomInt(0, 10 ** digits).toString().padStart(digits, '0');
}

// Random bytes are drawn from the CSPRNG in 4 KiB refills rather than one call per identifier
// (a call costs ~20x the bytes it returns); each byte is handed out once.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

/** The offset of `bytes` fresh bytes in the pool, refilled when it runs short. */
function takeFromPool(bytes: number): number {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const offset = poolOffset;
  poolOffset += bytes;
  return offset;
}

/**
 * An opaque random identifier: `bytes` from the CSPRNG, base64url, never starting with `-` (drawn
 * again, 1 time in 64): ids are typed into command lines (`mfa users delete-token … <tokenId>`),
 * which would take a leading `-` for an option.
 */
export function randomToken(bytes = 16): string {
  for (;;) {
    const token = drawToken(bytes);
    if (!token.startsWith('-')) return token;
  }
}

function drawToken(bytes: number): string {
  if (bytes > 256) return randomBytes(bytes).toString('base64url');
  const offset = takeFromPool(bytes);
  const token = pool.toString('base64url', offset, offset + bytes);
  pool.fill(0, offset, offset + bytes);
  return token;
}

/** `bytes` from the CSPRNG, drawn from the same pool: for IVs on hot paths (a randomBytes call costs ~8 µs). */
export function randomBytesPooled(bytes: number): Buffer {
  if (bytes > 256) return randomBytes(bytes);
  const offset = takeFromPool(bytes);
  const out = Buffer.from(pool.subarray(offset, offset + bytes));
  pool.fill(0, offset, offset + bytes);
  return out;
}

/** Keyed hash of a one-time code, bound to its challenge: what Redis stores instead of the code. */
export function hashCode(keyring: Keyring, challengeId: string, code: string): Buffer {
  return createHmac('sha256', keyring.codeHashKey).update(challengeId).update('\u0000').update(code).digest();
}

/**
 * The id under which a remember-MFA token is kept (rememberMfa): a keyed hash of the token bound to
 * the user's tag (tenant and user), so a token presented for another user, or forged, finds
 * nothing, and what Redis and users.get show cannot be turned back into the token.
 * 22 base64url characters = 132 bits.
 */
export function rememberTokenId(keyring: Keyring, tag: string, token: string): string {
  return createHmac('sha256', keyring.codeHashKey).update('remember\u0000').update(tag).update('\u0000').update(token).digest('base64url').slice(0, 22);
}

/**
 * The Redis Cluster hash tag of a user: every key of the user (profile, tokens, challenges)
 * carries it, so one Lua script can touch them all. Keyed, so it reveals nothing about the user.
 * 22 base64url characters = 132 bits.
 */
export function userTag(keyring: Keyring, tenantId: string, userId: string): string {
  return createHmac('sha256', keyring.tagKey)
    .update(tenantId)
    .update('\u0000')
    .update(userId)
    .digest('base64url')
    .slice(0, 22);
}

/**
 * The keyed hash that names one phone number of a tenant in Redis (per-phone throttling), so no
 * key name shows a number. Same key as userTag, kept apart by its prefix: a phone tag is never a
 * user's tag.
 */
export function phoneTag(keyring: Keyring, tenantId: string, phoneNumber: string): string {
  return createHmac('sha256', keyring.tagKey)
    .update('phone\u0000')
    .update(tenantId)
    .update('\u0000')
    .update(phoneNumber)
    .digest('base64url')
    .slice(0, 22);
}

/**
 * Per-user key for the TOTP projection in Redis. Only the services hold it (derived from the
 * keyring, never sent to Redis); Redis keeps only secrets masked with a keystream derived from it.
 */
export function projectionUserKey(keyring: Keyring, tag: string): Buffer {
  return createHmac('sha256', keyring.projectionKey).update(tag).digest();
}

/**
 * Keystream for masking a TOTP secret in the Redis projection: SHA-1(key ‖ nonce ‖ counter)
 * blocks. SHA-1 because an earlier verify script unmasked inside Redis (redis.sha1hex was its
 * only hash); it stays so that the projections already stored remain readable. Each stored
 * secret has its own random nonce, so no keystream is ever reused.
 */
function projectionKeystream(userKey: Uint8Array, nonce: Uint8Array, length: number): Buffer {
  const blocks: Buffer[] = [];
  for (let counter = 0; blocks.length * 20 < length; counter++) {
    blocks.push(createHash('sha1').update(userKey).update(nonce).update(Buffer.of(counter)).digest());
  }
  return Buffer.concat(blocks).subarray(0, length);
}

export function maskSecret(userKey: Uint8Array, nonce: Uint8Array, secret: Uint8Array): Buffer {
  const stream = projectionKeystream(userKey, nonce, secret.length);
  const out = Buffer.alloc(secret.length);
  for (let i = 0; i < secret.length; i++) out[i] = secret[i]! ^ stream[i]!;
  return out;
}

/** The secret a projection entry masks (XOR with the same keystream). The caller zeroes it after use. */
export function unmaskSecret(userKey: Uint8Array, nonce: Uint8Array, masked: Uint8Array): Buffer {
  return maskSecret(userKey, nonce, masked);
}

export function base32Encode(bytes: Uint8Array): string {
  return base32.encode(bytes).replace(/=+$/, '');
}

export function base32Decode(text: string): Buffer {
  const clean = text.replace(/[\s-]/g, '').toUpperCase();
  const padded = clean + '='.repeat((8 - (clean.length % 8)) % 8);
  return Buffer.from(base32.decode(padded));
}
