import * as client from 'openid-client';

/** A sign-in begun: where to send the browser, and what the callback must find again. */
export interface LoginStart {
  url: URL;
  state: string;
  nonce: string;
  verifier: string;
}

/** The operator as the ID token names them, and the roles claim as it came. */
export interface OidcIdentity {
  sub: string;
  email?: string;
  name?: string;
  roles: unknown;
}

/**
 * The operator's identity provider, through openid-client (certified relying party): discovery,
 * authorization code with PKCE (S256), state and nonce checked, the ID token validated.
 */
export class OidcProvider {
  private config: Promise<client.Configuration> | undefined;

  constructor(
    private readonly issuer: URL,
    private readonly clientId: string,
    private readonly clientSecret: string,
    private readonly redirectUri: URL,
    private readonly rolesClaim: string,
  ) {}

  /** Discovered once (and again after a failure): the provider may start after the console. */
  private configuration(): Promise<client.Configuration> {
    this.config ??= client
      .discovery(this.issuer, this.clientId, this.clientSecret, undefined, this.issuer.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : undefined)
      .catch((error: unknown) => {
        this.config = undefined;
        throw error;
      });
    return this.config;
  }

  async begin(): Promise<LoginStart> {
    const config = await this.configuration();
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri.href,
      scope: 'openid email profile',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    return { url, state, nonce, verifier };
  }

  /** Completes the sign-in from the callback's URL; throws when anything does not check out. */
  async complete(callbackUrl: URL, login: Pick<LoginStart, 'state' | 'nonce' | 'verifier'>): Promise<OidcIdentity> {
    const config = await this.configuration();
    const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: login.verifier,
      expectedState: login.state,
      expectedNonce: login.nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    if (!claims) throw new Error('the identity provider returned no ID token');
    return {
      sub: claims.sub,
      ...(typeof claims.email === 'string' ? { email: claims.email } : {}),
      ...(typeof claims.name === 'string' ? { name: claims.name } : {}),
      roles: claims[this.rolesClaim],
    };
  }
}
