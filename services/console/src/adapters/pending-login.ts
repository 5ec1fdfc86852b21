import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';
import { z } from 'zod';

/** A sign-in under way (between the redirect to the provider and its callback). */
export interface PendingLogin {
  state: string;
  nonce: string;
  verifier: string;
  returnTo: string;
}

const PendingLoginSealed = z.strictObject({
  state: z.string().max(128),
  nonce: z.string().max(128),
  verifier: z.string().max(128),
  returnTo: z.string().max(2048),
  expiresAt: z.number().int(),
});

/** How long a sign-in may take at the identity provider. */
export const PENDING_LOGIN_SECONDS = 600;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const AAD = Buffer.from('open-mfa console pending sign-in');
/** A sealed sign-in is well under 1 KiB; anything much longer is not one of ours. */
const MAX_COOKIE_CHARS = 4096;

/** The deployment's key for pending sign-ins: 32 random bytes, base64, made by the first console that needs it. */
export const PENDING_LOGIN_KEY = 'mfa:console:pending-login-key';
const KEY_BYTES = 32;

/**
 * A sign-in under way, kept by the browser in a cookie sealed with AES-256-GCM, not on the server:
 * anyone may begin a sign-in without an account, and what they begin must cost nothing to keep
 * (a Redis key per `/auth/login` let an outsider fill the Redis that also holds the MFA state).
 * The key is 256 random bits kept in Redis beside the sessions (one key for the deployment, made
 * by the first console that needs it), read at each seal and open, so any instance completes a
 * sign-in another began and a key made again after Redis lost it serves every instance at once.
 * It is not derived from a configured secret: anyone may fetch a sealed cookie, and a key from a
 * guessable secret could be tested offline against it. A callback is completed at most once by
 * the identity provider, which takes an authorization code once (and PKCE binds the code to this
 * browser's verifier); the cookie is cleared as the callback is answered.
 */
export class PendingLogins {
  constructor(private readonly redis: RedisClient) {}

  private async key(): Promise<KeyObject> {
    let value = await this.redis.get(PENDING_LOGIN_KEY);
    if (value === null) {
      await this.redis.set(PENDING_LOGIN_KEY, randomBytes(KEY_BYTES).toString('base64'), 'NX');
      value = await this.redis.get(PENDING_LOGIN_KEY);
    }
    const key = Buffer.from(value ?? '', 'base64');
    if (key.length !== KEY_BYTES) throw new Error(`${PENDING_LOGIN_KEY} in Redis is not ${KEY_BYTES} bytes in base64`);
    return createSecretKey(key);
  }

  async seal(login: PendingLogin, now: number): Promise<string> {
    const key = await this.key();
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(AAD);
    const plain = JSON.stringify({ state: login.state, nonce: login.nonce, verifier: login.verifier, returnTo: login.returnTo, expiresAt: now + PENDING_LOGIN_SECONDS * 1000 });
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `${iv.toString('base64url')}.${body.toString('base64url')}.${cipher.getAuthTag().toString('base64url')}`;
  }

  /** The sign-in the cookie holds; undefined when it is missing, forged, altered, sealed under another key or expired. Throws when Redis fails. */
  async open(value: string | undefined, now: number): Promise<PendingLogin | undefined> {
    if (!value || value.length > MAX_COOKIE_CHARS) return undefined;
    const parts = value.split('.');
    if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) return undefined;
    const [iv, body, tag] = parts.map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer];
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) return undefined;
    const key = await this.key();
    let plain: string;
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv);
      decipher.setAAD(AAD);
      decipher.setAuthTag(tag);
      plain = Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
    let parsed: z.infer<typeof PendingLoginSealed>;
    try {
      parsed = PendingLoginSealed.parse(JSON.parse(plain));
    } catch {
      return undefined;
    }
    if (parsed.expiresAt <= now) return undefined;
    return { state: parsed.state, nonce: parsed.nonce, verifier: parsed.verifier, returnTo: parsed.returnTo };
  }
}
