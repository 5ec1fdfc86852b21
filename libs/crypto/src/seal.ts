import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Keyring } from './keyring.js';

/**
 * AES-256-GCM sealing for secrets at rest, compact form `v1.<kid>.<iv>.<ciphertext>.<tag>`.
 * The additional authenticated data binds a sealed secret to where it belongs (tenant, user,
 * token or challenge), so a ciphertext copied into another record does not open.
 */
export class SealError extends Error {
  override name = 'SealError';
}

export function seal(keyring: Keyring, plaintext: Uint8Array, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keyring.sealKey, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();
  return ['v1', keyring.kid, iv.toString('base64url'), ct.toString('base64url'), tag.toString('base64url')].join('.');
}

export function open(keyring: Keyring, sealed: string, aad: string): Buffer {
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== 'v1') throw new SealError('not a sealed secret');
  const [, kid, iv, ct, tag] = parts as [string, string, string, string, string];
  const ring = [keyring, ...keyring.previous].find((k) => k.kid === kid);
  if (!ring) throw new SealError(`no key with id ${kid}`);
  try {
    const decipher = createDecipheriv('aes-256-gcm', ring.sealKey, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]);
  } catch (cause) {
    throw new SealError('sealed secret does not open (wrong key or tampered)', { cause });
  }
}

/** AAD conventions, one place so writer and reader never disagree. */
export const SealContext = {
  totpSecret: (tenantId: string, userId: string, tokenId: string) => `totp\u0000${tenantId}\u0000${userId}\u0000${tokenId}`,
  smsCode: (tenantId: string, challengeId: string) => `sms-code\u0000${tenantId}\u0000${challengeId}`,
  userDataKey: (tenantId: string, userId: string, gen: number) => `user-data-key\u0000${tenantId}\u0000${userId}\u0000${gen}`,
} as const;
