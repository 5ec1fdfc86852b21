import type { KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { pushAuthTokens } from '../push-provider.js';

/** A token is replaced after this long: APNs refuses one older than an hour (ExpiredProviderToken). */
export const PROVIDER_TOKEN_REFRESH_MS = 50 * 60_000;
/** APNs refuses new tokens more often than this (TooManyProviderTokenUpdates). */
export const PROVIDER_TOKEN_MIN_AGE_MS = 20 * 60_000;

interface ProviderTokenOptions {
  /** The .p8 signing key (ECDSA P-256) of the Apple developer account. */
  key: KeyObject;
  /** Its 10-character key id (kid). */
  keyId: string;
  /** The 10-character team id (iss). */
  teamId: string;
  clock?: () => number;
}

/**
 * APNs provider authentication tokens: a JWT signed ES256 with the team's key, {alg, kid} and
 * {iss: team, iat}, reused by every request and replaced every 50 minutes, and never twice within
 * 20 minutes (Apple's two limits).
 */
export class ApnsProviderTokens {
  private current: { token: string; issuedAt: number } | undefined;
  private pending: Promise<string> | undefined;
  private readonly clock: () => number;

  constructor(private readonly options: ProviderTokenOptions) {
    this.clock = options.clock ?? Date.now;
    for (const field of ['options', 'current', 'pending']) Object.defineProperty(this, field, { enumerable: false, writable: true });
  }

  async get(): Promise<string> {
    if (this.current && this.clock() - this.current.issuedAt < PROVIDER_TOKEN_REFRESH_MS) return this.current.token;
    return this.mint();
  }

  /**
   * APNs said `token` expired. A new one if `token` is at least 20 minutes old (or already
   * replaced); undefined when it is younger: a new one would be refused as too frequent, and a
   * young token called expired means this host's clock is wrong.
   */
  async renew(token: string): Promise<string | undefined> {
    if (this.current && this.current.token !== token) return this.current.token;
    if (this.current && this.clock() - this.current.issuedAt < PROVIDER_TOKEN_MIN_AGE_MS) return undefined;
    return this.mint();
  }

  /** How old the current token is, ms (for the message of an error). */
  ageMs(): number | undefined {
    return this.current ? this.clock() - this.current.issuedAt : undefined;
  }

  private mint(): Promise<string> {
    this.pending ??= (async () => {
      const issuedAt = this.clock();
      try {
        const token = await new SignJWT({})
          .setProtectedHeader({ alg: 'ES256', kid: this.options.keyId })
          .setIssuer(this.options.teamId)
          .setIssuedAt(Math.floor(issuedAt / 1000))
          .sign(this.options.key);
        this.current = { token, issuedAt };
        pushAuthTokens.inc({ provider: 'apns', outcome: 'issued' });
        return token;
      } catch (error) {
        pushAuthTokens.inc({ provider: 'apns', outcome: 'failed' });
        throw error;
      }
    })().finally(() => (this.pending = undefined));
    return this.pending;
  }
}
