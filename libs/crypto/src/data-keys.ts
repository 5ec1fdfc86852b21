import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { randomBytesPooled } from './codes.js';
import type { Keyring } from './keyring.js';
import { open, seal, SealContext, SealError } from './seal.js';

/**
 * Per-user data keys (crypto-shredding). A user's personal data is sealed with AES-256-GCM under
 * a 256-bit random key of their own; the key itself is kept only wrapped (sealed with the master
 * keyring). Destroying the wrapped key makes every copy of the data unreadable — events, backups
 * of the log, caches — without rewriting any of them.
 *
 * A key has a generation: erasing a user destroys generation n, and registering the same user id
 * again starts generation n + 1. Sealed values name their generation, so a reader can tell "the
 * key of this value was destroyed" from "I have not seen this key yet".
 *
 * Compact form of a sealed value: `d1.<gen>.<iv>.<ciphertext>.<tag>` (base64url parts).
 */
export interface DataKey {
  readonly gen: number;
  readonly key: KeyObject;
}

const FORMAT = 'd1';
const DATA_KEY_BYTES = 32;

function checkGen(gen: number): void {
  if (!Number.isSafeInteger(gen) || gen < 1 || gen > 999_999_999) throw new RangeError('a data key generation is an integer 1..999999999');
}

function dataKeyOf(gen: number, material: Buffer): DataKey {
  const dataKey = { gen, key: createSecretKey(material) };
  // A KeyObject keeps its material out of JSON.stringify and util.inspect already.
  return Object.freeze(dataKey);
}

/** A new random data key of generation `gen`, and the same key wrapped for storage. */
export function generateDataKey(keyring: Keyring, tenantId: string, userId: string, gen: number): { dataKey: DataKey; wrapped: string } {
  checkGen(gen);
  const material = randomBytes(DATA_KEY_BYTES);
  try {
    const wrapped = seal(keyring, material, SealContext.userDataKey(tenantId, userId, gen));
    return { dataKey: dataKeyOf(gen, material), wrapped };
  } finally {
    material.fill(0);
  }
}

/** Opens a wrapped data key; throws SealError when it is not this user's key of this generation. */
export function unwrapDataKey(keyring: Keyring, tenantId: string, userId: string, gen: number, wrapped: string): DataKey {
  checkGen(gen);
  const material = open(keyring, wrapped, SealContext.userDataKey(tenantId, userId, gen));
  try {
    if (material.length !== DATA_KEY_BYTES) throw new SealError('a data key is 32 bytes');
    return dataKeyOf(gen, material);
  } finally {
    material.fill(0);
  }
}

/** The same key wrapped with the current master key (after a rotation; the old one may open it). */
export function rewrapDataKey(keyring: Keyring, tenantId: string, userId: string, gen: number, wrapped: string): string {
  checkGen(gen);
  const context = SealContext.userDataKey(tenantId, userId, gen);
  const material = open(keyring, wrapped, context);
  try {
    return seal(keyring, material, context);
  } finally {
    material.fill(0);
  }
}

/**
 * How the Redis user projection carries the wrapped key to auth-challenge: `<gen>:<wrapped>`.
 * Still sealed with the master keyring, so Redis never holds a usable key.
 */
export function formatWrappedDataKey(gen: number, wrapped: string): string {
  checkGen(gen);
  return `${gen}:${wrapped}`;
}

export function parseWrappedDataKey(text: string): { gen: number; wrapped: string } | undefined {
  const colon = text.indexOf(':');
  if (colon < 1) return undefined;
  const gen = Number(text.slice(0, colon));
  if (!Number.isSafeInteger(gen) || gen < 1) return undefined;
  return { gen, wrapped: text.slice(colon + 1) };
}

/** The AAD of sealed personal data: what it is for, and whose, so a copy elsewhere never opens. */
export type PersonalDataPurpose = 'profile' | 'challenge';
export const PersonalDataContext = (purpose: PersonalDataPurpose, tenantId: string, userId: string): string =>
  `pii\u0000${purpose}\u0000${tenantId}\u0000${userId}`;

export function sealWithDataKey(dataKey: DataKey, plaintext: Uint8Array, aad: string): string {
  const iv = randomBytesPooled(12);
  const cipher = createCipheriv('aes-256-gcm', dataKey.key, iv);
  // The generation is authenticated too: a value relabelled with another generation does not open.
  cipher.setAAD(Buffer.from(`${dataKey.gen}\u0000${aad}`, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();
  return [FORMAT, String(dataKey.gen), iv.toString('base64url'), ct.toString('base64url'), tag.toString('base64url')].join('.');
}

/** The generation of the key a value was sealed with, or undefined when it is not a sealed value. */
export function dataKeyGeneration(sealed: string): number | undefined {
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== FORMAT) return undefined;
  const gen = Number(parts[1]);
  return Number.isSafeInteger(gen) && gen >= 1 ? gen : undefined;
}

export function openWithDataKey(dataKey: DataKey, sealed: string, aad: string): Buffer {
  const gen = dataKeyGeneration(sealed);
  if (gen === undefined) throw new SealError('not a value sealed with a data key');
  if (gen !== dataKey.gen) throw new SealError(`sealed with data key generation ${gen}, not ${dataKey.gen}`);
  const [, , iv, ct, tag] = sealed.split('.') as [string, string, string, string, string];
  try {
    // A fixed tag length: GCM would otherwise accept a truncated (forgeable) tag.
    const decipher = createDecipheriv('aes-256-gcm', dataKey.key, Buffer.from(iv, 'base64url'), { authTagLength: 16 });
    decipher.setAAD(Buffer.from(`${gen}\u0000${aad}`, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]);
  } catch (cause) {
    throw new SealError('sealed value does not open (wrong key or tampered)', { cause });
  }
}
