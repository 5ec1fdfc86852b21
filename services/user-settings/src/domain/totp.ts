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
