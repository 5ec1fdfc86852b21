import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { generateSync } from 'otplib';

/**
 * OATH one-time passwords (RFC 4226 HOTP, RFC 6238 TOTP; HMAC-SHA-1 or SHA-256). Codes are checked
 * with hotpGenerator, on node:crypto: sign-in in auth-challenge and activation in user-settings
 * alike. otplib (`hotp`, `totp`) is the independent implementation the tests compare it with; its
 * verification is not used, as it refuses secrets over 64 bytes and imported tokens have up to 80.
 */
/** The HMAC's hash: SHA-1 (RFC 4226, every app) or SHA-256 (RFC 6238, some hardware tokens). */
export type OathHash = 'SHA1' | 'SHA256';
const HMAC_OF: Record<OathHash, 'sha1' | 'sha256'> = { SHA1: 'sha1', SHA256: 'sha256' };

interface OathOptions {
  digits?: 6 | 8;
  algorithm?: OathHash;
  /** Seconds per TOTP time step. */
  period?: number;
}

/** RFC 6238 §5.2: the previous and the next time step are accepted too, for clock drift. */
const TOTP_DRIFT_STEPS = 1;

export function hotp(secret: Uint8Array, counter: number, digits: 6 | 8 = 6): string {
  return generateSync({ strategy: 'hotp', secret, counter, digits, algorithm: 'sha1' });
}

/**
 * An HOTP code generator for one secret, on node:crypto's native HMAC-SHA-1 with the key imported
 * once: sign-in verification asks it for t first and for t-1 and t+1 only when t does not match.
 * Same output as `hotp` (otplib; checked against it and the RFC 4226 vectors), at about 40 % of
 * its CPU and without its garbage, which matters on the hot path. RFC 4226 §5.3 dynamic truncation.
 */
export function hotpGenerator(secret: Uint8Array, digits: 6 | 8 = 6, algorithm: OathHash = 'SHA1'): (counter: number) => string {
  const key = createSecretKey(secret);
  const hash = HMAC_OF[algorithm];
  const message = Buffer.alloc(8);
  const modulus = 10 ** digits;
  return (counter) => {
    message.writeUInt32BE(Math.floor(counter / 0x1_0000_0000), 0);
    message.writeUInt32BE(counter >>> 0, 4);
    const h = createHmac(hash, key).update(message).digest();
    // The low nibble of the last byte: byte 19 for SHA-1, 31 for SHA-256 (RFC 6238's reference code).
    const offset = h[h.length - 1]! & 0x0f;
    const binary = (h[offset]! & 0x7f) * 0x100_0000 + (h[offset + 1]! << 16) + (h[offset + 2]! << 8) + h[offset + 3]!;
    return String(binary % modulus).padStart(digits, '0');
  };
}

/** HOTP codes of one secret for several counters (hotpGenerator). */
export function hotpCodes(secret: Uint8Array, counters: readonly number[], digits: 6 | 8 = 6): string[] {
  return counters.map(hotpGenerator(secret, digits));
}

/** RFC 6238 time step of `unixMillis` for a `period`-second token. */
export function totpStep(unixMillis: number, period = 30): number {
  return Math.floor(unixMillis / 1000 / period);
}

/**
 * The time steps whose codes are accepted at `unixMillis`: the current one first (the usual
 * match), then one step either side for clock drift.
 */
export function totpWindow(unixMillis: number, period = 30): number[] {
  const t = totpStep(unixMillis, period);
  const steps = [t];
  for (let d = 1; d <= TOTP_DRIFT_STEPS; d++) steps.push(t - d, t + d);
  return steps;
}

/**
 * Compares two codes in time that depends only on their lengths (which are not secret). As UTF-16
 * code units, which keep every string apart: latin1 would keep only the low byte of each
 * character, so 'ı23456' (U+0131) would equal '123456'.
 */
export function sameCode(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf16le');
  const y = Buffer.from(b, 'utf16le');
  return x.length === y.length && timingSafeEqual(x, y);
}

export function totp(secret: Uint8Array, unixMillis: number, options: OathOptions = {}): string {
  const period = options.period ?? 30;
  return generateSync({ secret, epoch: Math.floor(unixMillis / 1000), period, digits: options.digits ?? 6, algorithm: HMAC_OF[options.algorithm ?? 'SHA1'] });
}

/**
 * The time step (t-1, t or t+1 around `unixMillis`) whose TOTP code is `code`, or undefined; the
 * latest when two match (adjacent steps share a code about once in a million), none before step 0.
 * The caller records the step as used and refuses every step not after it, so the latest is the
 * one that keeps the code from being accepted a second time at the later step. Every step's code
 * is computed and compared in constant time, whichever matches. A code of the wrong length is
 * simply a wrong code.
 */
export function matchTotpStep(secret: Uint8Array, code: string, unixMillis: number, options: Required<Omit<OathOptions, 'algorithm'>> & Pick<OathOptions, 'algorithm'>): number | undefined {
  if (code.length !== options.digits || !/^\d+$/.test(code)) return undefined;
  const t = totpStep(unixMillis, options.period);
  const codeAt = hotpGenerator(secret, options.digits, options.algorithm);
  let found: number | undefined;
  for (let step = Math.max(0, t - TOTP_DRIFT_STEPS); step <= t + TOTP_DRIFT_STEPS; step++) {
    if (sameCode(codeAt(step), code)) found = step;
  }
  return found;
}

/**
 * The published test vectors every HOTP/TOTP implementation here is checked against: RFC 4226
 * appendix D (6 digits, counters 0..9) and RFC 6238 appendix B (SHA-1, 8 digits, 30 s steps),
 * both for the ASCII secret "12345678901234567890".
 */
export const OATH_TEST_VECTORS = {
  secret: '12345678901234567890',
  hotp: ['755224', '287082', '359152', '969429', '338314', '254676', '287922', '162583', '399871', '520489'],
  totpSha1: [
    [59, '94287082'],
    [1111111109, '07081804'],
    [1111111111, '14050471'],
    [1234567890, '89005924'],
    [2000000000, '69279037'],
    [20000000000, '65353130'],
  ] as ReadonlyArray<readonly [unixSeconds: number, code: string]>,
  /** RFC 6238 appendix B, SHA-256: its secret is the 32-byte ASCII "12345678901234567890123456789012". */
  sha256Secret: '12345678901234567890123456789012',
  totpSha256: [
    [59, '46119246'],
    [1111111109, '68084774'],
    [1111111111, '67062674'],
    [1234567890, '91819424'],
    [2000000000, '90698825'],
    [20000000000, '77737706'],
  ] as ReadonlyArray<readonly [unixSeconds: number, code: string]>,
} as const;
