import { createHash, createSecretKey, hkdfSync, type KeyObject } from 'node:crypto';

/**
 * Every key the services use is derived (HKDF-SHA256) from one 256-bit master key in
 * MFA_ENCRYPTION_KEY, one purpose per derived key, so no key is ever used for two things.
 * The master key never leaves this module and `Keyring` never prints its material.
 */
export interface Keyring {
  /** Short public id of the master key, stored in sealed secrets to allow rotation. */
  readonly kid: string;
  /** AES-256-GCM key for secrets at rest (TOTP secrets in events, SMS codes in events). */
  readonly sealKey: KeyObject;
  /** HMAC key for the keyed hashes of one-time codes kept in Redis. */
  readonly codeHashKey: KeyObject;
  /** HMAC key that turns (tenant, user) into the Redis Cluster hash tag. */
  readonly tagKey: KeyObject;
  /** HMAC key from which per-user keys for the Redis TOTP projection are derived. */
  readonly projectionKey: KeyObject;
  /** HMAC key of the stored hashes of API keys. */
  readonly apiKeyHashKey: KeyObject;
  /** HMAC key that authenticates the pagination cursors the services issue (cursor.ts). */
  readonly cursorKey: KeyObject;
  /** HMAC key that signs the services' requests to one another on `mfa.int.` (internal-requests.ts). */
  readonly internalKey: KeyObject;
  /** Older keyrings still accepted for opening sealed secrets (rotation). */
  readonly previous: readonly Keyring[];
}

class KeyConfigurationError extends Error {
  override name = 'KeyConfigurationError';
}

/** Development-only key: public, so anything sealed with it is not secret. Refused in production. */
const DEVELOPMENT_MASTER_KEY = createHash('sha256').update('open-mfa development key - never use in production').digest();

/** A master key from its text; `name` is where it came from, for the error (which never shows the text). */
export function parseMasterKey(text: string, name = 'MFA_ENCRYPTION_KEY'): Buffer {
  const trimmed = text.trim();
  const candidates: Buffer[] = [];
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) candidates.push(Buffer.from(trimmed, 'hex'));
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) candidates.push(Buffer.from(trimmed, 'base64url'));
  const key = candidates.find((c) => c.length === 32);
  if (!key) {
    throw new KeyConfigurationError(`${name} must be 32 bytes, as 64 hex digits or base64 (openssl rand -base64 32)`);
  }
  return key;
}

function derive(master: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `open-mfa/${purpose}/v1`, 32));
}

// KeyObjects, not Buffers: Node re-imports a Buffer key on every createHmac/createCipheriv call,
// which costs several times the HMAC itself (measured ~20 µs vs ~4 µs per call on Node 24).
const secretKey = (master: Buffer, purpose: string): KeyObject => createSecretKey(derive(master, purpose));

export function keyringFromMasterKey(master: Buffer, previous: readonly Keyring[] = []): Keyring {
  const kid = createHash('sha256').update(derive(master, 'kid')).digest('base64url').slice(0, 8);
  const ring: Keyring = {
    kid,
    sealKey: secretKey(master, 'seal'),
    codeHashKey: secretKey(master, 'code-hash'),
    tagKey: secretKey(master, 'redis-tag'),
    projectionKey: secretKey(master, 'redis-projection'),
    apiKeyHashKey: secretKey(master, 'api-key-hash'),
    cursorKey: secretKey(master, 'cursor'),
    internalKey: secretKey(master, 'internal-requests'),
    previous,
  };
  // Keep key material out of console.log/JSON.stringify/util.inspect of the keyring.
  for (const name of ['sealKey', 'codeHashKey', 'tagKey', 'projectionKey', 'apiKeyHashKey', 'cursorKey', 'internalKey'] as const) {
    Object.defineProperty(ring, name, { enumerable: false });
  }
  Object.defineProperty(ring, Symbol.for('nodejs.util.inspect.custom'), {
    value: () => `Keyring(kid=${kid})`,
    enumerable: false,
  });
  return Object.freeze(ring);
}

interface KeyringEnv {
  MFA_ENCRYPTION_KEY?: string | undefined;
  MFA_PREVIOUS_ENCRYPTION_KEYS?: string | undefined;
  NODE_ENV?: string | undefined;
}

const isDevelopmentKey = (key: Buffer): boolean => key.equals(DEVELOPMENT_MASTER_KEY);

/**
 * Reads MFA_ENCRYPTION_KEY (and comma-separated MFA_PREVIOUS_ENCRYPTION_KEYS for rotation).
 * Without a key, development falls back to a published development key. Production refuses that
 * key however it arrives: no key at all, or the development key itself, in any encoding, as the
 * key or among the previous keys (keys are compared as bytes, not as text).
 */
export function loadKeyring(env: KeyringEnv): { keyring: Keyring; development: boolean } {
  const production = env.NODE_ENV === 'production';
  const previousKeys = (env.MFA_PREVIOUS_ENCRYPTION_KEYS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    // Named by position: during a rotation the operator must know which variable, and which entry, to fix.
    .map((text, index, all) => parseMasterKey(text, all.length === 1 ? 'MFA_PREVIOUS_ENCRYPTION_KEYS' : `MFA_PREVIOUS_ENCRYPTION_KEYS (entry ${index + 1} of ${all.length})`));
  if (production && previousKeys.some(isDevelopmentKey)) {
    throw new KeyConfigurationError('MFA_PREVIOUS_ENCRYPTION_KEYS contains the public development key, which is refused when NODE_ENV=production');
  }
  const given = env.MFA_ENCRYPTION_KEY?.trim() ? parseMasterKey(env.MFA_ENCRYPTION_KEY) : undefined;
  if (production && !given) throw new KeyConfigurationError('MFA_ENCRYPTION_KEY is required when NODE_ENV=production');
  if (production && given && isDevelopmentKey(given)) {
    throw new KeyConfigurationError(
      'MFA_ENCRYPTION_KEY is the public development key, which is refused when NODE_ENV=production (generate one: openssl rand -base64 32)',
    );
  }
  const previous = previousKeys.map((key) => keyringFromMasterKey(key));
  return { keyring: keyringFromMasterKey(given ?? DEVELOPMENT_MASTER_KEY, previous), development: !given };
}
