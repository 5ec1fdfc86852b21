import { verifySync } from 'otplib';

/** RFC 6238 §5.2: accept the previous and the next time step too, for clock drift. */
export const TOTP_DRIFT_STEPS = 1;

/**
 * The RFC 6238 time step (t-1, t or t+1 around `nowMs`) whose code is `code`, or undefined.
 * otplib compares in constant time; it throws on a code of the wrong length, which is simply a
 * wrong code here.
 */
export function matchTotpStep(
  secret: Uint8Array,
  code: string,
  nowMs: number,
  options: { digits: 6 | 8; period: number },
): number | undefined {
  if (code.length !== options.digits) return undefined;
  const result = verifySync({
    secret,
    token: code,
    epoch: Math.floor(nowMs / 1000),
    epochTolerance: TOTP_DRIFT_STEPS * options.period,
    digits: options.digits,
    period: options.period,
    algorithm: 'sha1',
  });
  // otplib's result type covers HOTP too; a TOTP match always carries its time step.
  return result.valid && 'timeStep' in result ? result.timeStep : undefined;
}

/**
 * The Key URI an authenticator app scans (github.com/google/google-authenticator/wiki/Key-Uri-Format).
 * Built here rather than with otplib's generateURI, which leaves out the parameters that equal
 * the defaults and does not encode ":" in the account name; some apps need all three spelled out.
 */
export function otpauthUri(input: {
  issuer: string;
  label: string;
  secretBase32: string;
  digits: number;
  period: number;
}): string {
  const issuer = encodeURIComponent(input.issuer);
  const account = encodeURIComponent(input.label);
  const query = [
    `secret=${input.secretBase32}`,
    `issuer=${issuer}`,
    'algorithm=SHA1',
    `digits=${input.digits}`,
    `period=${input.period}`,
  ].join('&');
  return `otpauth://totp/${issuer}:${account}?${query}`;
}
