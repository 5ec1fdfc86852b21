import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { OidcProvider } from './oidc.js';

let endSessionQuery = '';

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
        ...(withEndSession() ? { end_session_endpoint: `${issuer}/session/end${endSessionQuery}` } : {}),
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

  it('posts the ID token as hint, expired or not, and the client id to the end_session_endpoint: nothing in its URL', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const token of [idToken(now + 60), idToken(now - 3600)]) {
      const form = await provider(signedOut).endSession(token);
      assert.equal(form!.action.href, `${issuer.origin}/session/end`, 'the endpoint alone: no parameter in the URL the browser keeps');
      assert.deepEqual(form!.fields, { client_id: 'mfa-console', id_token_hint: token, post_logout_redirect_uri: signedOut.href });
    }
    // A session without a token (it ended, or began before tokens were kept): the client id alone.
    const bare = await provider(signedOut).endSession(undefined);
    assert.deepEqual(bare!.fields, { client_id: 'mfa-console', post_logout_redirect_uri: signedOut.href });
  });

  it("keeps the endpoint's own query in the action and posts only what the sign-out adds", async () => {
    endSessionQuery = '?p=B2C_1_signin';
    try {
      const form = await provider(signedOut).endSession('e30.e30.c2ln');
      assert.equal(form!.action.href, `${issuer.origin}/session/end?p=B2C_1_signin`);
      assert.deepEqual(Object.keys(form!.fields).sort(), ['client_id', 'id_token_hint', 'post_logout_redirect_uri']);
    } finally {
      endSessionQuery = '';
    }
  });

  it('signs out locally only when OIDC_END_SESSION is off, or the provider names no end_session_endpoint', async () => {
    assert.equal(await provider(undefined).endSession(idToken(Math.floor(Date.now() / 1000) + 60)), undefined);
    endSession = false;
    assert.equal(await provider(signedOut).endSession(undefined), undefined);
    endSession = true;
  });

  it('says so when the provider cannot be discovered (the console then signs out locally, and logs it)', async () => {
    const gone = new OidcProvider(new URL('http://127.0.0.1:9'), 'mfa-console', 'secret', new URL('https://console.example/auth/callback'), 'roles', signedOut);
    await assert.rejects(gone.endSession(undefined));
  });
});
