import { createPublicKey, verify, type KeyObject } from 'node:crypto';

/** The algorithms an authenticator app may sign with (docs/device-api.md, "Keys"). */
export type DeviceAlgorithm = 'ES256' | 'Ed25519';

export class DeviceKeyError extends Error {
  override name = 'DeviceKeyError';
}

/**
 * A device's public key from its DER SubjectPublicKeyInfo (base64url), checked to be what the
 * algorithm says: a P-256 key for ES256, an Ed25519 key for Ed25519. Anything else throws.
 */
export function devicePublicKey(algorithm: DeviceAlgorithm, spkiBase64Url: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spkiBase64Url, 'base64url'), format: 'der', type: 'spki' });
  } catch {
    throw new DeviceKeyError('publicKey is not a DER SubjectPublicKeyInfo in base64url');
  }
  const fits =
    algorithm === 'ES256' ? key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1' : key.asymmetricKeyType === 'ed25519';
  if (!fits) throw new DeviceKeyError(`publicKey is not ${algorithm === 'ES256' ? 'an ECDSA P-256' : 'an Ed25519'} key`);
  return key;
}

/**
 * Whether `signature` (base64url; ES256 in the 64-byte IEEE P1363 form r ‖ s) is the device key's
 * over the UTF-8 of `data`. A malformed signature is simply not valid.
 */
export function deviceSignatureValid(algorithm: DeviceAlgorithm, key: KeyObject, data: string, signature: string): boolean {
  const bytes = Buffer.from(signature, 'base64url');
  if (bytes.length !== 64) return false;
  try {
    return algorithm === 'ES256'
      ? verify('sha256', Buffer.from(data, 'utf8'), { key, dsaEncoding: 'ieee-p1363' }, bytes)
      : verify(null, Buffer.from(data, 'utf8'), key, bytes);
  } catch {
    return false;
  }
}
