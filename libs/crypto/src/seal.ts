import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import type { Keyring } from './keyring.js';

/**
 * AES-256-GCM sealing for secrets at rest. The additional authenticated data binds a sealed
 * secret to where it belongs (tenant, user, token or challenge), so a ciphertext copied into
 * another record does not open.
 *
 * **Message budget.** GCM with random 96-bit IVs may seal at most 2^32 messages under one key
 * (NIST SP 800-38D, 8.3: beyond that an IV collision, which reveals the XOR of two plaintexts and
 * the authentication key, becomes likelier than 2^-32). One key for every SMS code would reach it
 * in about 20 days at 2,500 challenges per second. So each seal uses a key derived (HKDF-SHA256
 * from the seal key) for its purpose and its UTC hour: the budget is 2^32 seals per purpose per
 * hour, 1.19 million seals per second sustained, which this service cannot reach.
 *
 * Compact forms (base64url parts; `hour` is decimal hours since the Unix epoch):
 * - `v2.<kid>.<hour>.<iv>.<ciphertext>.<tag>`, written now: key per purpose and hour;
 * - `v1.<kid>.<iv>.<ciphertext>.<tag>`, written before: the seal key itself. Still opened, so
 *   events already stored stay readable; never written any more.
 */
export class SealError extends Error {
  override name = 'SealError';
}

/** What a secret is sealed for; each purpose has its own keys. */
export type SealPurpose = 'totp-secret' | 'sms-code' | 'user-data-key' | 'pin-hash' | 'push-token' | 'import-file';

/** Where a sealed secret belongs: its purpose (which keys) and its AAD (which record). */
export interface SealScope {
  readonly purpose: SealPurpose;
  readonly aad: string;
}

/** AAD conventions, one place so writer and reader never disagree. */
export const SealContext = {
  totpSecret: (tenantId: string, userId: string, tokenId: string): SealScope => ({
    purpose: 'totp-secret',
    aad: `totp\u0000${tenantId}\u0000${userId}\u0000${tokenId}`,
  }),
  /** A hardware token's secret: bound to the tenant and the token (not to a user: it moves from the inventory to one). */
  hardwareSecret: (tenantId: string, tokenId: string): SealScope => ({
    purpose: 'totp-secret',
    aad: `hardware-totp\u0000${tenantId}\u0000${tokenId}`,
  }),
  /** An import job's file and its PSKC password or pre-shared key, while the job runs. */
  importFile: (tenantId: string, jobId: string, part: 'file' | 'keys'): SealScope => ({
    purpose: 'import-file',
    aad: `import-file\u0000${tenantId}\u0000${jobId}\u0000${part}`,
  }),
  smsCode: (tenantId: string, challengeId: string): SealScope => ({
    purpose: 'sms-code',
    aad: `sms-code\u0000${tenantId}\u0000${challengeId}`,
  }),
  /** The scrypt hash of a user's voice PIN, sealed in UserPinSet: even the slow hash of a short PIN stays unreadable at rest. */
  pinHash: (tenantId: string, userId: string): SealScope => ({
    purpose: 'pin-hash',
    aad: `pin-hash\u0000${tenantId}\u0000${userId}`,
  }),
  /** A device's push token (FCM or APNs), sealed in PushDeviceActivated and the Redis projection; dispatch opens it. */
  pushToken: (tenantId: string, userId: string, deviceId: string): SealScope => ({
    purpose: 'push-token',
    aad: `push-token\u0000${tenantId}\u0000${userId}\u0000${deviceId}`,
  }),
  userDataKey: (tenantId: string, userId: string, gen: number): SealScope => ({
    purpose: 'user-data-key',
    aad: `user-data-key\u0000${tenantId}\u0000${userId}\u0000${gen}`,
  }),
} as const;

const HOUR_MS = 3_600_000;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const CANONICAL_HOUR = /^(0|[1-9]\d{0,9})$/;

// Derived keys of recent (purpose, hour) pairs per keyring, most recently used last. Sealing
// needs one or two; opening old TOTP secrets (a projection replay) visits many hours once each.
const HOUR_KEYS_KEPT = 1024;
const hourKeys = new WeakMap<Keyring, Map<string, KeyObject>>();

function hourKey(ring: Keyring, purpose: SealPurpose, hour: number): KeyObject {
  let keys = hourKeys.get(ring);
  if (!keys) hourKeys.set(ring, (keys = new Map()));
  const id = `${purpose}/${hour}`;
  let key = keys.get(id);
  if (key) {
    keys.delete(id);
  } else {
    key = createSecretKey(Buffer.from(hkdfSync('sha256', ring.sealKey, Buffer.alloc(0), `open-mfa/seal/${id}/v2`, 32)));
    if (keys.size >= HOUR_KEYS_KEPT) keys.delete(keys.keys().next().value!);
  }
  keys.set(id, key);
  return key;
}

/** Seals `plaintext` for `scope` under the current hour's key of its purpose. */
export function seal(keyring: Keyring, plaintext: Uint8Array, scope: SealScope, now: number = Date.now()): string {
  const hour = Math.floor(now / HOUR_MS);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', hourKey(keyring, scope.purpose, hour), iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(scope.aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();
  return ['v2', keyring.kid, String(hour), iv.toString('base64url'), ct.toString('base64url'), tag.toString('base64url')].join('.');
}

/**
 * The `kid` (the master key's public id) a v2 or v1 sealed secret names, without opening it; undefined
 * when `sealed` is not one. What a rotation tool counts to tell which master keys are still needed.
 */
export function sealedKeyId(sealed: string): string | undefined {
  const parts = sealed.split('.');
  if ((parts.length === 6 && parts[0] === 'v2') || (parts.length === 5 && parts[0] === 'v1')) return parts[1] || undefined;
  return undefined;
}

/** Opens a v2 or v1 sealed secret of `scope`; throws SealError if it is not one, or does not open. */
export function open(keyring: Keyring, sealed: string, scope: SealScope): Buffer {
  const parts = sealed.split('.');
  let kid: string, iv: string, ct: string, tag: string;
  let keyOf: (ring: Keyring) => KeyObject;
  if (parts.length === 6 && parts[0] === 'v2') {
    let hour: string;
    [, kid, hour, iv, ct, tag] = parts as [string, string, string, string, string, string];
    if (!CANONICAL_HOUR.test(hour)) throw new SealError('not a sealed secret');
    keyOf = (ring) => hourKey(ring, scope.purpose, Number(hour));
  } else if (parts.length === 5 && parts[0] === 'v1') {
    [, kid, iv, ct, tag] = parts as [string, string, string, string, string];
    keyOf = (ring) => ring.sealKey;
  } else {
    throw new SealError('not a sealed secret');
  }
  const ring = [keyring, ...keyring.previous].find((k) => k.kid === kid);
  if (!ring) throw new SealError(`no key with id ${kid}`);
  const ivBytes = Buffer.from(iv, 'base64url');
  const tagBytes = Buffer.from(tag, 'base64url');
  if (ivBytes.length !== IV_BYTES || tagBytes.length !== TAG_BYTES) throw new SealError('not a sealed secret');
  try {
    const decipher = createDecipheriv('aes-256-gcm', keyOf(ring), ivBytes, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(scope.aad, 'utf8'));
    decipher.setAuthTag(tagBytes);
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]);
  } catch (cause) {
    throw new SealError('sealed secret does not open (wrong key or tampered)', { cause });
  }
}
