import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConsoleConfig } from './config.js';

describe('console configuration', () => {
  const base = { NATS_URL: 'nats://127.0.0.1:4222', REDIS_URL: 'redis://127.0.0.1:6379' };
  const production = { MFA_PLATFORM_API_KEY: 'p'.repeat(48) };
  const oidc = { OIDC_ISSUER_URL: 'https://idp.example', OIDC_CLIENT_ID: 'console', OIDC_CLIENT_SECRET: 's3cret' };

  it('offers the development sign-in only while no identity provider is configured', () => {
    assert.equal(loadConsoleConfig({ ...base, NODE_ENV: 'development', CONSOLE_DEV_LOGIN: 'true' }).CONSOLE_DEV_LOGIN, true);
    // docker-compose.yml turns it on by default: configuring OIDC must close it.
    const both = loadConsoleConfig({ ...base, NODE_ENV: 'development', CONSOLE_DEV_LOGIN: 'true', ...oidc });
    assert.equal(both.CONSOLE_DEV_LOGIN, false);
    assert.equal(both.devLoginIgnored, true);
    assert.equal(loadConsoleConfig({ ...base, NODE_ENV: 'development', ...oidc }).devLoginIgnored, false);
  });

  it('refuses the development sign-in in production, and production without an identity provider', () => {
    assert.throws(() => loadConsoleConfig({ ...base, NODE_ENV: 'production', CONSOLE_DEV_LOGIN: 'true', ...oidc, ...production }), /CONSOLE_DEV_LOGIN is refused/);
    assert.throws(() => loadConsoleConfig({ ...base, NODE_ENV: 'production', ...production }), /required when NODE_ENV=production/);
  });

  it("ends the identity provider's session at sign-out unless OIDC_END_SESSION says not to", () => {
    assert.equal(loadConsoleConfig({ ...base, ...oidc }).OIDC_END_SESSION, true);
    assert.equal(loadConsoleConfig({ ...base, ...oidc, OIDC_END_SESSION: '' }).OIDC_END_SESSION, true);
    assert.equal(loadConsoleConfig({ ...base, ...oidc, OIDC_END_SESSION: 'false' }).OIDC_END_SESSION, false);
    assert.equal(loadConsoleConfig({ ...base, ...oidc, OIDC_END_SESSION: '0' }).OIDC_END_SESSION, false);
    assert.throws(() => loadConsoleConfig({ ...base, ...oidc, OIDC_END_SESSION: 'maybe' }), /OIDC_END_SESSION/);
    // Posting the sign-out (the ID token out of the browser's history) is asked for: not every provider takes it.
    assert.equal(loadConsoleConfig({ ...base, ...oidc }).OIDC_END_SESSION_POST, false);
    assert.equal(loadConsoleConfig({ ...base, ...oidc, OIDC_END_SESSION_POST: 'true' }).OIDC_END_SESSION_POST, true);
    assert.throws(() => loadConsoleConfig({ ...base, ...oidc, OIDC_END_SESSION_POST: 'post' }), /OIDC_END_SESSION_POST/);
  });

  it('refuses a plain http public address in production, but on a loopback address', () => {
    const prod = { ...base, NODE_ENV: 'production', ...oidc, ...production };
    assert.throws(() => loadConsoleConfig({ ...prod, CONSOLE_PUBLIC_URL: 'http://console.contoso.example' }), /CONSOLE_PUBLIC_URL must be https/);
    assert.equal(loadConsoleConfig({ ...prod, CONSOLE_PUBLIC_URL: 'https://console.contoso.example' }).publicUrl.origin, 'https://console.contoso.example');
    assert.equal(loadConsoleConfig({ ...prod, CONSOLE_PUBLIC_URL: 'http://127.0.0.1:3000' }).publicUrl.protocol, 'http:');
    assert.equal(loadConsoleConfig(prod).publicUrl.hostname, '127.0.0.1');
    assert.equal(loadConsoleConfig({ ...base, NODE_ENV: 'development', CONSOLE_PUBLIC_URL: 'http://console.contoso.example' }).publicUrl.protocol, 'http:');
  });
});
