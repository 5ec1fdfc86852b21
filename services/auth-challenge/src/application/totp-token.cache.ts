import type { TotpTokens } from '../domain/verdicts.js';

/**
 * How many TOTP challenges an instance keeps the tokens of (the oldest go first beyond it): a
 * user takes 10 to 30 s to type a code, so 100,000 covers 2,500 starts a second on one instance
 * for 40 s. An entry is the reply's strings, about 300 bytes for a user with one token.
 */
export const TOTP_TOKEN_CACHE_SIZE = 100_000;

/**
 * The user's TOTP tokens (masked, as Redis holds them) of each TOTP challenge this instance
 * started, until the challenge ends or expires: its verify checks the code before its one script
 * call, which decides only if the tokens are still the user's (else it answers the current ones,
 * and a second call records the outcome). A verify that reaches another instance, or comes after
 * the entry went, takes those two calls: nothing here is needed for a correct decision.
 * Entries are in insertion order, which is nearly expiry order: each `set` drops the expired ones
 * at the front, and the oldest beyond the capacity.
 */
export class TotpTokenCache {
  private readonly entries = new Map<string, { totp: TotpTokens; expiresAt: number }>();

  constructor(private readonly capacity = TOTP_TOKEN_CACHE_SIZE) {}

  get size(): number {
    return this.entries.size;
  }

  set(challengeId: string, totp: TotpTokens, expiresAt: number, now: number): void {
    this.entries.delete(challengeId);
    for (const [id, entry] of this.entries) {
      if (entry.expiresAt > now && this.entries.size < this.capacity) break;
      this.entries.delete(id);
    }
    this.entries.set(challengeId, { totp, expiresAt });
  }

  get(challengeId: string, now: number): TotpTokens | undefined {
    const entry = this.entries.get(challengeId);
    if (!entry) return undefined;
    if (entry.expiresAt > now) return entry.totp;
    this.entries.delete(challengeId);
    return undefined;
  }

  delete(challengeId: string): void {
    this.entries.delete(challengeId);
  }
}
