import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { OidcProvider } from './oidc.js';

/** An identity provider's discovery document, and nothing else: enough for building a sign-out URL. */
function discoveryServer(withEndSession: () => boolean): Server {
  return createServer((req, res) => {
    const issuer = `http://127.0.0.1:${(req.socket.address() as AddressInfo).port}`;
    if (req.url !== '/.well-known/openid-configuration') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        issuer,
        authorization_endpoint: `${issuer}/auth`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        ...(withEndSession() ? { end_session_endpoint: `${issuer}/session/end` } : {}),
      }),
    );
  });
}

const idToken = (exp: number) => `e30.${Buffer.from(JSON.stringify({ sub: 'ops', exp })).toString('base64url')}.c2ln`;

describe('OidcProvider: the sign-out at the identity provider', () => {
  let endSession = true;
  const server = discoveryServer(() => endSession);
  let issuer: URL;
  const signedOut = new URL('https://console.example/auth/signed-out');
  const provider = (postLogout: URL | undefined) => new OidcProvider(issuer, 'mfa-console', 'secret', new URL('https://console.example/auth/callback'), 'roles', postLogout);

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('sends the browser to the end_session_endpoint with the ID token as hint, expired or not, and the client id', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const token of [idToken(now + 60), idToken(now - 3600)]) {
      const url = await provider(signedOut).endSessionUrl(token);
      assert.equal(`${url!.origin}${url!.pathname}`, `${issuer.origin}/session/end`);
      assert.equal(url!.searchParams.get('post_logout_redirect_uri'), signedOut.href);
      assert.equal(url!.searchParams.get('id_token_hint'), token);
      assert.equal(url!.searchParams.get('client_id'), 'mfa-console');
    }
    // A session without a token (it ended, or began before tokens were kept): the client id alone.
    const bare = await provider(signedOut).endSessionUrl(undefined);
    assert.equal(bare!.searchParams.get('id_token_hint'), null);
    assert.equal(bare!.searchParams.get('client_id'), 'mfa-console');
  });

  it('signs out locally only when OIDC_END_SESSION is off, or the provider names no end_session_endpoint', async () => {
    assert.equal(await provider(undefined).endSessionUrl(idToken(Math.floor(Date.now() / 1000) + 60)), undefined);
    endSession = false;
    assert.equal(await provider(signedOut).endSessionUrl(undefined), undefined);
    endSession = true;
  });

  it('says so when the provider cannot be discovered (the console then signs out locally, and logs it)', async () => {
    const gone = new OidcProvider(new URL('http://127.0.0.1:9'), 'mfa-console', 'secret', new URL('https://console.example/auth/callback'), 'roles', signedOut);
    await assert.rejects(gone.endSessionUrl(undefined));
  });
});
