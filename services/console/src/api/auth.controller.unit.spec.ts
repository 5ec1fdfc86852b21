import 'reflect-metadata';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Logger } from '@mfa/telemetry';
import { OidcProvider } from '../adapters/oidc.js';
import type { Sessions } from '../adapters/sessions.js';
import { AuthController } from './auth.controller.js';
import { Views } from './views.js';
import { securityHeaders, type WebRequest } from './web.js';

const idToken = `e30.${Buffer.from(JSON.stringify({ sub: 'ops', email: 'olga@ops.example' })).toString('base64url')}.c2ln`;

/**
 * Sign-out over real HTTP (Express, the real templates, a real OidcProvider reading an identity
 * provider's discovery document): what the browser is given to end the provider's session too.
 */
describe('console sign-out at the identity provider', () => {
  const servers: Server[] = [];
  let issuer: URL;

  /** A console whose requests come with a session holding the ID token. */
  async function consoleWith(endSessionPost: boolean): Promise<string> {
    const log = { error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined } as unknown as Logger;
    const sessions = { destroy: async () => undefined } as unknown as Sessions;
    const publicUrl = new URL('http://127.0.0.1:3000');
    const oidc = new OidcProvider(issuer, 'mfa-console', 'secret', new URL('/auth/callback', publicUrl), 'roles', new URL('/auth/signed-out', publicUrl));
    const controller = new AuthController({ publicUrl, secure: false, devLogin: false, endSessionPost }, sessions, new Views(), log, oidc, undefined);
    const app = express();
    app.use(securityHeaders(false));
    app.use((req, _res, next) => {
      Object.assign(req, { cookiesParsed: {}, session: { id: 's', operator: { sub: 'ops' }, roles: ['platform-operator'], csrf: 'x', createdAt: 0, via: 'oidc', idToken } });
      next();
    });
    app.post('/auth/logout', (req, res) => void controller.logout(req as WebRequest, res));
    const server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    servers.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  before(async () => {
    const discovery = createServer((req, res) => {
      if (req.url !== '/.well-known/openid-configuration') return void res.writeHead(404).end();
      const at = `http://127.0.0.1:${(req.socket.address() as AddressInfo).port}`;
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ issuer: at, authorization_endpoint: `${at}/auth`, token_endpoint: `${at}/token`, jwks_uri: `${at}/jwks`, end_session_endpoint: `${at}/session/end` }),
      );
    });
    await new Promise<void>((resolve) => discovery.listen(0, '127.0.0.1', resolve));
    servers.push(discovery);
    issuer = new URL(`http://127.0.0.1:${(discovery.address() as AddressInfo).port}`);
  });
  after(async () => {
    for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('with OIDC_END_SESSION_POST, posts the ID token to the end_session_endpoint: no URL of the page holds it, and only this page may post to the provider', async () => {
    const answer = await fetch(`${await consoleWith(true)}/auth/logout`, { method: 'POST' });
    assert.equal(answer.status, 200);
    const page = await answer.text();
    assert.match(page, new RegExp(`<form method="post" action="${issuer.origin}/session/end" id="end-session">`));
    const fields = Object.fromEntries([...page.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map((m) => [m[1], m[2]]));
    assert.deepEqual(fields, { client_id: 'mfa-console', id_token_hint: idToken, post_logout_redirect_uri: 'http://127.0.0.1:3000/auth/signed-out' });
    // Neither a refresh, a link nor anything else of the page puts the token into a URL.
    const urls = [...page.matchAll(/(?:href|src|action|url)=["']?([^"'>\s]+)/g)].map((m) => m[1]!);
    assert.ok(urls.every((u) => !u.includes(idToken) && !u.includes('id_token_hint')), urls.join(' '));
    assert.doesNotMatch(page, /http-equiv="refresh"/);
    assert.match(page, /<script src="\/static\/signout.js"><\/script>/);
    assert.match(answer.headers.get('content-security-policy') ?? '', new RegExp(`form-action 'self' ${issuer.origin};`));
    assert.match(answer.headers.get('cache-control') ?? '', /no-store/);
  });

  it('without it, moves on to the end_session_endpoint with the parameters in its URL, and the forms stay this origin’s', async () => {
    const answer = await fetch(`${await consoleWith(false)}/auth/logout`, { method: 'POST' });
    const page = await answer.text();
    const refresh = /<meta http-equiv="refresh" content="0;url=([^"]+)">/.exec(page);
    const url = new URL(refresh![1]!.replaceAll('&amp;', '&'));
    assert.equal(`${url.origin}${url.pathname}`, `${issuer.origin}/session/end`);
    assert.equal(url.searchParams.get('id_token_hint'), idToken);
    assert.equal(url.searchParams.get('client_id'), 'mfa-console');
    assert.doesNotMatch(page, /signout\.js/);
    assert.match(answer.headers.get('content-security-policy') ?? '', /form-action 'self';/);
  });
});
