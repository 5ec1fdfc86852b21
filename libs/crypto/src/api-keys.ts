import { createHmac, timingSafeEqual } from 'node:crypto';
import { randomToken } from './codes.js';
import type { Keyring } from './keyring.js';

/**
 * API keys: `mfak.<clientId>.<secret>`, the secret 256 bits from the CSPRNG. The client id in the
 * key lets a service find the client without trying every stored hash; only a keyed hash of the
 * secret is stored (HMAC-SHA256 under a key derived from the master key), so the event log and its
 * backups cannot be used to sign in, and the comparison is constant-time.
 */
const PREFIX = 'mfak';
const CLIENT_ID_BYTES = 12;
const SECRET_BYTES = 32;
const KEY_SHAPE = /^mfak\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/;
const CLIENT_ID_SHAPE = /^[A-Za-z0-9_-]{16}$/;

/** Whether `clientId` has the shape of the ids issueApiKey makes (16 base64url characters). */
export function isIssuedClientId(clientId: string): boolean {
  return CLIENT_ID_SHAPE.test(clientId);
}

export interface IssuedApiKey {
  clientId: string;
  /** The key to hand to the caller, once. */
  apiKey: string;
  /** What is stored: base64url HMAC of the secret, bound to the client id. */
  keyHash: string;
}

function hashSecret(keyring: Keyring, clientId: string, secret: string): Buffer {
  return createHmac('sha256', keyring.apiKeyHashKey).update(clientId).update('\u0000').update(secret).digest();
}

export function issueApiKey(keyring: Keyring): IssuedApiKey {
  const clientId = randomToken(CLIENT_ID_BYTES);
  const secret = randomToken(SECRET_BYTES);
  return { clientId, apiKey: `${PREFIX}.${clientId}.${secret}`, keyHash: hashSecret(keyring, clientId, secret).toString('base64url') };
}

/** The client id and secret of a well-formed key; undefined for anything else. */
export function parseApiKey(apiKey: string): { clientId: string; secret: string } | undefined {
  const match = KEY_SHAPE.exec(apiKey);
  return match ? { clientId: match[1]!, secret: match[2]! } : undefined;
}

/** Whether `secret` is the one whose hash was stored for `clientId`, compared in constant time. */
export function apiKeyMatches(keyring: Keyring, clientId: string, secret: string, storedHash: Buffer): boolean {
  const presented = hashSecret(keyring, clientId, secret);
  return storedHash.length === presented.length && timingSafeEqual(presented, storedHash);
}

/**
 * Compares a presented key with the operator's platform key in constant time: both are hashed
 * first, so neither the length nor a prefix of the platform key leaks through timing.
 */
export function platformKeyMatcher(keyring: Keyring, platformKey: string): (presented: string) => boolean {
  const digest = (text: string) => createHmac('sha256', keyring.apiKeyHashKey).update('platform\u0000').update(text).digest();
  const expected = digest(platformKey);
  return (presented) => timingSafeEqual(digest(presented), expected);
}
