import { SignJWT } from 'jose';
import { postBody } from '../../http-client.js';
import { PushProviderError, pushAuthTokens, pushNetworkError } from '../push-provider.js';
import type { ServiceAccount } from './service-account.js';

/** The one scope FCM HTTP v1 needs. */
export const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
/** Google's assertions may live at most an hour. */
const ASSERTION_SECONDS = 3600;
/** A token is replaced this long before it expires, so no send carries one that dies in flight. */
const REFRESH_MARGIN_MS = 5 * 60_000;

type Post = typeof postBody;

interface AccessTokenOptions {
  /** Total time of one token request. */
  timeoutMs: number;
  clock?: () => number;
  post?: Post;
}

/**
 * OAuth2 access tokens of a service account (RFC 7523 JWT bearer grant): a JWT signed RS256 with the
 * account's key (iss = its e-mail, aud = its token endpoint, the FCM scope) is exchanged at the
 * token endpoint for an access token, which is kept until shortly before it expires. One exchange
 * at a time: sends that need a token meanwhile wait for the same answer.
 */
export class GoogleAccessTokens {
  private current: { token: string; expiresAt: number } | undefined;
  private pending: Promise<string> | undefined;
  private readonly clock: () => number;
  private readonly post: Post;

  constructor(
    private readonly account: ServiceAccount,
    private readonly options: AccessTokenOptions,
  ) {
    this.clock = options.clock ?? Date.now;
    this.post = options.post ?? postBody;
    // The key and the tokens must never show up in logs of this object.
    for (const field of ['account', 'current', 'pending']) Object.defineProperty(this, field, { enumerable: false, writable: true });
  }

  async get(): Promise<string> {
    if (this.current && this.clock() < this.current.expiresAt - REFRESH_MARGIN_MS) return this.current.token;
    this.pending ??= this.exchange().finally(() => (this.pending = undefined));
    return this.pending;
  }

  /** FCM refused `token` (401): the next `get` fetches a new one, unless another send did already. */
  invalidate(token: string): void {
    if (this.current?.token === token) this.current = undefined;
  }

  private async exchange(): Promise<string> {
    const now = this.clock();
    const iat = Math.floor(now / 1000);
    const assertion = await new SignJWT({ scope: FCM_SCOPE })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...(this.account.privateKeyId ? { kid: this.account.privateKeyId } : {}) })
      .setIssuer(this.account.clientEmail)
      .setAudience(this.account.tokenUri)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ASSERTION_SECONDS)
      .sign(this.account.privateKey);
    const body = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString();
    let answer: { status: number; text: string };
    try {
      answer = await this.post(new URL(this.account.tokenUri), { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body, this.options.timeoutMs);
    } catch (cause) {
      pushAuthTokens.inc({ provider: 'fcm', outcome: 'failed' });
      throw pushNetworkError('fcm', 'the OAuth2 token endpoint', cause, this.options.timeoutMs);
    }
    let json: Record<string, unknown> = {};
    try {
      const parsed: unknown = JSON.parse(answer.text);
      if (typeof parsed === 'object' && parsed !== null) json = parsed as Record<string, unknown>;
    } catch {
      // Described below by its status.
    }
    const token = json.access_token;
    const expiresIn = json.expires_in;
    if (answer.status === 200 && typeof token === 'string' && token.length > 0) {
      pushAuthTokens.inc({ provider: 'fcm', outcome: 'issued' });
      const lifetimeSeconds = typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn : ASSERTION_SECONDS;
      this.current = { token, expiresAt: now + lifetimeSeconds * 1000 };
      return token;
    }
    pushAuthTokens.inc({ provider: 'fcm', outcome: 'failed' });
    const detail = [json.error, json.error_description].filter((v) => typeof v === 'string').join(': ') || 'no error message';
    // invalid_grant, invalid_client (a deleted key, a wrong e-mail) will not mend by themselves.
    throw new PushProviderError(`the OAuth2 token endpoint answered ${answer.status}: ${detail}`.slice(0, 300), {
      provider: 'fcm',
      transient: answer.status === 429 || answer.status >= 500,
      status: answer.status,
      code: typeof json.error === 'string' ? json.error : undefined,
    });
  }
}
