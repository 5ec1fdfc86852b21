import { hotpGenerator, sameCode, totpWindow } from '@mfa/crypto';

/** An active TOTP token of the user, its secret unmasked, with the last time step accepted for it. */
export interface TotpToken {
  tokenId: string;
  secret: Uint8Array;
  digits: 6 | 8;
  /** Seconds per time step: 30 (apps) or 60 (some hardware tokens). */
  period: number;
  algorithm: 'SHA1' | 'SHA256';
  /** -1 when no code of this token was ever accepted. */
  lastStep: number;
}

export type TotpMatch =
  | { matched: true; tokenId: string; step: number }
  /** `reused`: the code is that of a step already accepted for the token (RFC 6238 §5.2). */
  | { matched: false; cause: 'mismatch' | 'reused' };

/**
 * Which token and time step a presented code belongs to, among the user's tokens, for steps
 * t, t-1 and t+1 around `unixMillis` (the first token with a fresh match, at its latest fresh
 * step: when two steps of the window share the code, about once in a million, recording the
 * earlier would let the same code be accepted again at the later one, RFC 6238 §5.2). A step not newer than
 * the token's last accepted one never matches again. Comparisons take constant time, and every
 * step of every token of the code's length is computed whatever matches: the code is checked
 * before the script that may refuse it (a user locked out, an expired challenge), so the time it
 * takes must not tell whether it was right.
 * The store checks the step again when it records the outcome (another request may have spent it).
 */
export function matchTotpCode(tokens: readonly TotpToken[], code: string, unixMillis: number): TotpMatch {
  let found: TotpMatch | undefined;
  let cause: 'mismatch' | 'reused' = 'mismatch';
  for (const token of tokens) {
    if (code.length !== token.digits) continue;
    const steps = totpWindow(unixMillis, token.period);
    const codeAt = hotpGenerator(token.secret, token.digits, token.algorithm);
    for (const step of steps) {
      if (!sameCode(codeAt(step), code)) continue;
      if (step <= token.lastStep) cause = 'reused';
      else if (!found || (found.matched && found.tokenId === token.tokenId && step > found.step)) found = { matched: true, tokenId: token.tokenId, step };
    }
  }
  return found ?? { matched: false, cause };
}
