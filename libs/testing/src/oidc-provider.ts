import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TestAccount {
  email?: string;
  name?: string;
  roles: string[];
}

/**
 * A real OpenID provider (the certified `oidc-provider` package) on a loopback port, for the
 * console's sign-in tests: authorization code with PKCE, signed ID tokens, its own login and
 * consent pages (development interactions: any login name, any password), and RP-initiated logout
 * back to the console's /auth/signed-out. The accounts' roles go into the ID token under `roles`.
 */
export class TestOidcProvider {
  private server: Server | undefined;
  private port = 0;
  readonly clientId = 'mfa-console';
  readonly clientSecret = 'console-secret-for-tests-only-0123456789';

  constructor(
    private readonly redirectUri: string,
    private readonly accounts: Record<string, TestAccount>,
  ) {}

  get issuer(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  env(): Record<string, string> {
    return { OIDC_ISSUER_URL: this.issuer, OIDC_CLIENT_ID: this.clientId, OIDC_CLIENT_SECRET: this.clientSecret };
  }

  async start(): Promise<void> {
    const { createServer } = await import('node:http');
    const { default: Provider } = await import('oidc-provider');
    // The port is taken first: the issuer (and so the provider) must know it.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    this.port = (probe.address() as AddressInfo).port;
    const accounts = this.accounts;
    const provider = new Provider(this.issuer, {
      clients: [{ client_id: this.clientId, client_secret: this.clientSecret, redirect_uris: [this.redirectUri], post_logout_redirect_uris: [new URL('/auth/signed-out', this.redirectUri).href], grant_types: ['authorization_code'], response_types: ['code'] }],
      // The roles are released with the openid scope, which the console always asks for.
      claims: { openid: ['sub', 'roles'], email: ['email'], profile: ['name'] },
      // The roles go into the ID token itself (not only the userinfo endpoint).
      conformIdTokenClaims: false,
      scopes: ['openid', 'email', 'profile'],
      findAccount: (_ctx: unknown, id: string) => ({
        accountId: id,
        claims: () => ({ sub: id, ...(accounts[id]?.email ? { email: accounts[id]!.email } : {}), ...(accounts[id]?.name ? { name: accounts[id]!.name } : {}), roles: accounts[id]?.roles ?? [] }),
      }),
      cookies: { keys: ['test-cookie-key-0123456789abcdef'] },
      pkce: { required: () => true },
      features: { devInteractions: { enabled: true } },
    } as never);
    probe.on('request', provider.callback());
    this.server = probe;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
