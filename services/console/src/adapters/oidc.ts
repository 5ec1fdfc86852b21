import { setTimeout as delay } from 'node:timers/promises';
import * as client from 'openid-client';

/** How long a sign-out waits for the provider's discovery before it stays local. */
const END_SESSION_DISCOVERY_MS = 3_000;

/** A sign-in begun: where to send the browser, and what the callback must find again. */
export interface LoginStart {
  url: URL;
  state: string;
  nonce: string;
  verifier: string;
}

/** The sign-out at the identity provider: a form posted to `action` with these fields. */
export interface EndSessionForm {
  action: URL;
  fields: Record<string, string>;
}

/** The operator as the ID token names them, and the roles claim as it came. */
export interface OidcIdentity {
  sub: string;
  email?: string;
  name?: string;
  roles: unknown;
  /** The ID token as it came: the hint of a later sign-out at the provider. */
  idToken: string;
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
    /** Where the provider sends the browser after signing the operator out there; undefined: sign-out stays local. */
    private readonly postLogoutRedirectUri?: URL,
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
    if (!claims || tokens.id_token === undefined) throw new Error('the identity provider returned no ID token');
    return {
      idToken: tokens.id_token,
      sub: claims.sub,
      ...(typeof claims.email === 'string' ? { email: claims.email } : {}),
      ...(typeof claims.name === 'string' ? { name: claims.name } : {}),
      roles: claims[this.rolesClaim],
    };
  }

  /**
   * The form that ends the operator's session at the provider too (RP-initiated logout, with the
   * ID token as hint), or undefined: the provider names no end_session_endpoint or
   * OIDC_END_SESSION is off. Throws when the provider cannot be discovered.
   *
   * As a form, to be posted (OIDC_END_SESSION_POST) or put into the endpoint's query: the
   * parameters of a GET stay in the URL, which the browser keeps in its history (and the provider
   * in its access log), and the ID token names the operator. A provider must take the POST as well
   * as the GET (RP-Initiated Logout 1.0, section 2). `action` is the endpoint as the provider names it
   * (its own query, if any, kept); `fields` everything the sign-out adds.
   */
  async endSession(idToken: string | undefined): Promise<EndSessionForm | undefined> {
    const url = await this.endSessionUrl(idToken);
    if (!url) return undefined;
    const action = new URL((await this.configuration()).serverMetadata().end_session_endpoint!);
    const fields = [...url.searchParams].filter(([name]) => !action.searchParams.has(name));
    return { action, fields: Object.fromEntries(fields) };
  }

  /** The sign-out at the provider as a GET URL (endSession splits it into the endpoint and the fields). */
  private async endSessionUrl(idToken: string | undefined): Promise<URL | undefined> {
    if (!this.postLogoutRedirectUri) return undefined;
    // Discovered at the sign-in as a rule; if not, the operator waits a few seconds at most.
    const config = await Promise.race([this.configuration(), delay(END_SESSION_DISCOVERY_MS, undefined, { ref: false })]);
    if (config === undefined) throw new Error(`the identity provider's discovery did not answer within ${END_SESSION_DISCOVERY_MS} ms`);
    if (!config.serverMetadata().end_session_endpoint) return undefined;
    // The hint even once the token has expired: the provider should take it then too (RP-Initiated
    // Logout 1.0, section 2). Without one (a session of before), the client id alone, and the
    // provider asks the operator; openid-client adds the client id in any case.
    return client.buildEndSessionUrl(config, { post_logout_redirect_uri: this.postLogoutRedirectUri.href, ...(idToken ? { id_token_hint: idToken } : {}) });
  }
}
