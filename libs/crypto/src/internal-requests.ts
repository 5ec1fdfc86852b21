import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Keyring } from './keyring.js';

/**
 * The services' requests to one another (subjects under `mfa.int.`: a call's PIN checked, a call's
 * answer, a fraud report from a call or the app, a device activated) carry no API key: they are
 * signed. The signature, sent in the `Mfa-Internal` header, is `<kid>.<time>.<tag>`: the key id of
 * the master key it was made with, the sender's clock in Unix ms, and an HMAC-SHA256
 * (keyring.internalKey) over the subject, that time and the exact request body. Only a holder of
 * the master key can make one, one is good for that subject and body only, and for
 * INTERNAL_SIGNATURE_MAX_AGE_MS either side of the receiver's clock. NATS permissions
 * (deploy/nats) remain the first wall; this one holds where they are missing or too wide.
 *
 *     headers[Headers.internal] = signInternalRequest(keyring, subject, data, Date.now());
 *     if (!internalRequestSigned(keyring, subject, msg.data, header, Date.now())) refuse();
 */
export const INTERNAL_SIGNATURE_MAX_AGE_MS = 30_000;

const SIGNATURE = /^([A-Za-z0-9_-]{1,64})\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/;

function tag(ring: Keyring, subject: string, at: string, data: Uint8Array | string): Buffer {
  // The subject and time cannot run into the body: the subject holds no newline, the time only digits.
  return createHmac('sha256', ring.internalKey).update(`open-mfa/internal/v1\n${subject}\n${at}\n`).update(data).digest();
}

/** The `Mfa-Internal` header of a request of `data` (the exact bytes or text sent) on `subject`, made at `now` (ms). */
export function signInternalRequest(keyring: Keyring, subject: string, data: Uint8Array | string, now: number): string {
  const at = String(Math.trunc(now));
  return `${keyring.kid}.${at}.${tag(keyring, subject, at, data).toString('base64url')}`;
}

/**
 * Whether `header` signs `data` on `subject`, with this master key, made within
 * INTERNAL_SIGNATURE_MAX_AGE_MS of `now`. Anything malformed is false. Not with a previous key:
 * those stay configured for good (they open what was sealed under them), and a key rotated out
 * because it leaked must not let whoever holds it make the services' requests (approve a call,
 * test PINs, activate a device). A rotation stops every service, so no running service still
 * signs with the old key.
 */
export function internalRequestSigned(keyring: Keyring, subject: string, data: Uint8Array | string, header: string | undefined, now: number): boolean {
  const match = header === undefined ? null : SIGNATURE.exec(header);
  if (!match) return false;
  const [, kid, at, presented] = match as unknown as [string, string, string, string];
  if (Math.abs(now - Number(at)) > INTERNAL_SIGNATURE_MAX_AGE_MS) return false;
  if (kid !== keyring.kid) return false;
  // Compared as text, so the one canonical encoding of a tag is the only one accepted.
  return timingSafeEqual(Buffer.from(tag(keyring, subject, at, data).toString('base64url'), 'ascii'), Buffer.from(presented, 'ascii'));
}
