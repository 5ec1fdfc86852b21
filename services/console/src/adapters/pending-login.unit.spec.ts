import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PENDING_LOGIN_SECONDS, PendingLogins } from './pending-login.js';

describe('a sign-in under way, sealed in the browser', () => {
  const logins = new PendingLogins('the client secret of the deployment');
  const login = { state: 'st4te', nonce: 'n0nce', verifier: 'v'.repeat(43), returnTo: '/t/contoso/users?q=a' };
  const now = Date.now();

  it('opens what it sealed, on any instance holding the same secret, until it expires', () => {
    const sealed = logins.seal(login, now);
    assert.deepEqual(logins.open(sealed, now), login);
    assert.deepEqual(new PendingLogins('the client secret of the deployment').open(sealed, now + 1_000), login);
    assert.deepEqual(logins.open(sealed, now + PENDING_LOGIN_SECONDS * 1000 - 1), login);
    assert.equal(logins.open(sealed, now + PENDING_LOGIN_SECONDS * 1000), undefined);
    assert.ok(sealed.length < 1024, `${sealed.length} characters`);
    for (const value of Object.values(login)) assert.ok(!sealed.includes(value), 'nothing readable in the cookie');
  });

  it('opens nothing forged, altered, sealed under another secret, or not of its shape', () => {
    const sealed = logins.seal(login, now);
    const [iv, body, tag] = sealed.split('.') as [string, string, string];
    const flip = (part: string) => `${part.slice(0, -2)}${part.at(-2) === 'A' ? 'B' : 'A'}${part.at(-1)}`;
    for (const forged of [
      undefined,
      '',
      'garbage',
      `${flip(iv)}.${body}.${tag}`,
      `${iv}.${flip(body)}.${tag}`,
      `${iv}.${body}.${flip(tag)}`,
      `${iv}.${body}`,
      `${iv}.${body}.${tag}.x`,
      `${iv}.${body}.${tag}=`,
      `${iv}.${'A'.repeat(5000)}.${tag}`,
      new PendingLogins('another secret').seal(login, now),
    ]) {
      assert.equal(logins.open(forged, now), undefined, String(forged).slice(0, 40));
    }
  });
});
