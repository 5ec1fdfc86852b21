import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Logger } from '@nestjs/common';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { ContractError, type Scope } from '@mfa/contracts';
import { issueApiKey, keyringFromMasterKey, signInternalRequest } from '@mfa/crypto';
import { loadAuthConfig, UNSIGNED_WINDOW_MAX_MS } from './auth.config.js';
import type { ApiClientDirectory, ApiClientRecord } from './api-client.directory.js';
import { Authenticator } from './authenticator.js';

const keyring = keyringFromMasterKey(Buffer.alloc(32, 9));

/** A directory holding the given clients (the real one follows the event log; not what is tested here). */
function directoryOf(records: ApiClientRecord[], options: { heldInMemory?: boolean } = {}): ApiClientDirectory & { revoke(record: ApiClientRecord): void } {
  const byId = new Map(records.map((r) => [r.clientId, r]));
  const held = options.heldInMemory ?? true;
  const listeners: Array<(clientId: string) => void> = [];
  return {
    known: (id: string) => (held ? byId.get(id) : undefined),
    find: async (id: string) => byId.get(id),
    markUsed: () => undefined,
    onRevoked: (listener: (clientId: string) => void) => listeners.push(listener),
    /** As the real directory applies an ApiClientRevoked event. */
    revoke: (record: ApiClientRecord) => {
      record.revokedAt = new Date().toISOString();
      for (const listener of listeners) listener(record.clientId);
    },
  } as unknown as ApiClientDirectory & { revoke(record: ApiClientRecord): void };
}

function client(keyHash: string, overrides: Partial<ApiClientRecord> = {}): ApiClientRecord {
  const scopes: Scope[] = ['challenges'];
  return { clientId: '', tenantId: 'contoso', name: 'IdP', scopes, scopeSet: new Set(scopes), keyHash: Buffer.from(keyHash, 'base64url'), createdAt: '2026-11-30T00:00:00.000Z', seq: 1, ...overrides };
}

const bearer = (key: string) => {
  const h = natsHeaders();
  h.set('Authorization', `Bearer ${key}`);
  return h;
};

const refused = async (call: () => unknown, message: RegExp) =>
  assert.rejects(async () => call(), (e: unknown) => e instanceof ContractError && e.code === 'forbidden' && message.test(e.message));

describe('Authenticator', () => {
  it('accepts a client’s key again and again, and never another secret for the same client after it', async () => {
    const issued = issueApiKey(keyring);
    const record = client(issued.keyHash, { clientId: issued.clientId });
    const auth = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directoryOf([record]));
    for (let i = 0; i < 3; i++) {
      const principal = await auth.authenticate(bearer(issued.apiKey), Date.now());
      assert.deepEqual([principal.kind, principal.clientId, principal.tenantId], ['client', issued.clientId, 'contoso']);
    }
    // Same client id, other secrets: one character changed, and a whole other key's secret.
    const [, , secret] = issued.apiKey.split('.');
    const flipped = `${secret!.slice(0, -1)}${secret!.endsWith('A') ? 'B' : 'A'}`;
    await refused(() => auth.authenticate(bearer(`mfak.${issued.clientId}.${flipped}`), Date.now()), /invalid API key/);
    const other = issueApiKey(keyring).apiKey.split('.')[2]!;
    await refused(() => auth.authenticate(bearer(`mfak.${issued.clientId}.${other}`), Date.now()), /invalid API key/);
    // And the right one still works.
    assert.equal((await auth.authenticate(bearer(issued.apiKey), Date.now())).clientId, issued.clientId);
  });

  it('refuses a key once its client is revoked, though it matched a moment before', async () => {
    const issued = issueApiKey(keyring);
    const record = client(issued.keyHash, { clientId: issued.clientId });
    const auth = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directoryOf([record]));
    await auth.authenticate(bearer(issued.apiKey), Date.now());
    record.revokedAt = new Date().toISOString();
    await refused(() => auth.authenticate(bearer(issued.apiKey), Date.now()), /invalid API key/);
  });

  it('drops and zeroes the secret it kept for a client once the client is revoked', async () => {
    const issued = issueApiKey(keyring);
    const record = client(issued.keyHash, { clientId: issued.clientId });
    const directory = directoryOf([record]);
    const auth = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directory);
    await auth.authenticate(bearer(issued.apiKey), Date.now());
    const kept = (auth as unknown as { verified: Map<string, { secret: Buffer }> }).verified;
    const secret = kept.get(issued.clientId)!.secret;
    assert.ok(secret.some((byte) => byte !== 0), 'kept after a match');
    directory.revoke(record);
    assert.equal(kept.has(issued.clientId), false, 'dropped at the revocation');
    assert.ok(secret.every((byte) => byte === 0), 'and zeroed');
    await refused(() => auth.authenticate(bearer(issued.apiKey), Date.now()), /invalid API key/);
    assert.equal(kept.has(issued.clientId), false, 'not kept again when the revoked key is presented');
  });

  it('checks a key against the client’s current hash: a secret that matched an earlier hash no longer passes', async () => {
    const issued = issueApiKey(keyring);
    const record = client(issued.keyHash, { clientId: issued.clientId });
    const auth = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directoryOf([record]));
    await auth.authenticate(bearer(issued.apiKey), Date.now());
    record.keyHash = Buffer.from(issueApiKey(keyring).keyHash, 'base64url');
    await refused(() => auth.authenticate(bearer(issued.apiKey), Date.now()), /invalid API key/);
  });

  it('answers at once for a client held in memory, and after a lookup for one created elsewhere a moment ago', async () => {
    const issued = issueApiKey(keyring);
    const record = client(issued.keyHash, { clientId: issued.clientId });
    const held = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directoryOf([record]));
    assert.ok(!(held.authenticate(bearer(issued.apiKey), Date.now()) instanceof Promise), 'no promise on the hot path');
    const looked = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directoryOf([record], { heldInMemory: false }));
    const pending = looked.authenticate(bearer(issued.apiKey), Date.now());
    assert.ok(pending instanceof Promise);
    assert.equal((await pending).clientId, issued.clientId);
    await refused(() => looked.authenticate(bearer(`mfak.${issued.clientId}.${'A'.repeat(43)}`), Date.now()), /invalid API key/);
  });

  describe('requests between the services (mfa.int.)', () => {
    const subject = 'mfa.int.challenge.voice';
    const body = new TextEncoder().encode('{"tenantId":"contoso","challengeId":"c1","approved":true}');
    const signed = (header: string) => {
      const h = natsHeaders();
      h.set('Mfa-Internal', header);
      return h;
    };
    const now = Date.now();

    it('answers a request signed with the master key over its subject and body; refuses an unsigned or misfit one', () => {
      const auth = new Authenticator({ auth: { mode: 'required', platformKey: undefined }, keyring }, directoryOf([]));
      assert.equal(auth.isServiceRequest(subject, signed(signInternalRequest(keyring, subject, body, now)), body, now), true);
      assert.equal(auth.isServiceRequest(subject, undefined, body, now), false);
      assert.equal(auth.isServiceRequest('mfa.int.fraud.call', signed(signInternalRequest(keyring, subject, body, now)), body, now), false);
      const twice = signed(signInternalRequest(keyring, subject, body, now));
      twice.append('Mfa-Internal', signInternalRequest(keyring, subject, body, now));
      assert.equal(auth.isServiceRequest(subject, twice, body, now), false, 'one signature, not two');
      // MFA_AUTH=off (development) changes nothing: the services always hold the key.
      const off = new Authenticator({ auth: { mode: 'off', platformKey: undefined }, keyring }, directoryOf([]));
      assert.equal(off.isServiceRequest(subject, undefined, body, now), false);
    });

    it('with MFA_INTERNAL_UNSIGNED=accept (a rolling upgrade), answers an unsigned request, never a wrongly signed one', () => {
      assert.equal(loadAuthConfig({}).acceptUnsignedInternal, false);
      const config = loadAuthConfig({ MFA_INTERNAL_UNSIGNED: 'accept' });
      assert.equal(config.acceptUnsignedInternal, true);
      assert.throws(() => loadAuthConfig({ MFA_INTERNAL_UNSIGNED: 'yes' }), /MFA_INTERNAL_UNSIGNED/);
      const auth = new Authenticator({ auth: config, keyring }, directoryOf([]));
      assert.equal(auth.isServiceRequest(subject, undefined, body, now), true);
      const stranger = keyringFromMasterKey(Buffer.alloc(32, 3));
      assert.equal(auth.isServiceRequest(subject, signed(signInternalRequest(stranger, subject, body, now)), body, now), false);
    });

    describe('MFA_INTERNAL_UNSIGNED_UNTIL, the end of `accept`', () => {
      const production = { NODE_ENV: 'production', MFA_PLATFORM_API_KEY: 'p'.repeat(32), MFA_INTERNAL_UNSIGNED: 'accept' };
      const boot = Date.parse('2026-12-05T12:00:00Z');
      const hour = 3_600_000;

      it('is required with accept in production: without it the service does not start, naming it', () => {
        assert.throws(() => loadAuthConfig(production, boot), /MFA_INTERNAL_UNSIGNED_UNTIL .*is required with MFA_INTERNAL_UNSIGNED=accept/);
        // `refuse`, the default, needs none.
        assert.equal(loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED: undefined }, boot).acceptUnsignedInternal, false);
      });

      it('refuses at boot a bound that is no UTC time, or more than 7 days ahead', () => {
        for (const bad of ['next friday', '2026-12-07', '2026-12-07T18:00:00+01:00', '2026-02-30T18:00:00Z', '1796666400000']) {
          assert.throws(() => loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED_UNTIL: bad }, boot), /MFA_INTERNAL_UNSIGNED_UNTIL: must be a UTC time/, bad);
        }
        const tooFar = new Date(boot + UNSIGNED_WINDOW_MAX_MS + 1000).toISOString();
        assert.throws(() => loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED_UNTIL: tooFar }, boot), /MFA_INTERNAL_UNSIGNED_UNTIL must be at most 7 days ahead/);
        // In development too, when given.
        assert.throws(() => loadAuthConfig({ MFA_INTERNAL_UNSIGNED: 'accept', MFA_INTERNAL_UNSIGNED_UNTIL: tooFar }, boot), /at most 7 days ahead/);
        const lastDay = new Date(boot + UNSIGNED_WINDOW_MAX_MS).toISOString();
        assert.equal(loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED_UNTIL: lastDay }, boot).acceptUnsignedInternalUntil, boot + UNSIGNED_WINDOW_MAX_MS);
      });

      it('answers unsigned requests within the window and refuses them from its end on, by each request’s time', () => {
        const until = boot + 6 * hour;
        const config = loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED_UNTIL: new Date(until).toISOString() }, boot);
        const auth = new Authenticator({ auth: config, keyring }, directoryOf([]));
        assert.equal(auth.isServiceRequest(subject, undefined, body, boot), true);
        assert.equal(auth.isServiceRequest(subject, undefined, body, until - 1), true);
        assert.equal(auth.isServiceRequest(subject, undefined, body, until), false, 'closed at the bound');
        assert.equal(auth.isServiceRequest(subject, undefined, body, until + 30 * 24 * hour), false);
        // Signed requests are answered as ever.
        assert.equal(auth.isServiceRequest(subject, signed(signInternalRequest(keyring, subject, body, until + hour)), body, until + hour), true);
      });

      it('starts with a bound already past (a setting forgotten after the upgrade): unsigned requests are refused', () => {
        const config = loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED_UNTIL: '2026-11-28T12:00:00Z' }, boot);
        const auth = new Authenticator({ auth: config, keyring }, directoryOf([]));
        assert.equal(auth.isServiceRequest(subject, undefined, body, boot), false);
      });

      it('is optional in development: without it accept has no end; with it, the same end', () => {
        const open = new Authenticator({ auth: loadAuthConfig({ MFA_INTERNAL_UNSIGNED: 'accept' }, boot), keyring }, directoryOf([]));
        assert.equal(open.isServiceRequest(subject, undefined, body, boot + 365 * 24 * hour), true);
        const until = boot + hour;
        const bounded = new Authenticator({ auth: loadAuthConfig({ MFA_INTERNAL_UNSIGNED: 'accept', MFA_INTERNAL_UNSIGNED_UNTIL: new Date(until).toISOString() }, boot), keyring }, directoryOf([]));
        assert.equal(bounded.isServiceRequest(subject, undefined, body, until - 1), true);
        assert.equal(bounded.isServiceRequest(subject, undefined, body, until), false);
      });

      it('says once, when the window closes, that unsigned requests are refused', (t) => {
        t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: boot });
        const warn = t.mock.method(Logger.prototype, 'warn', () => undefined);
        const until = boot + 2 * hour;
        const config = loadAuthConfig({ ...production, MFA_INTERNAL_UNSIGNED_UNTIL: new Date(until).toISOString() }, boot);
        const auth = new Authenticator({ auth: config, keyring }, directoryOf([]));
        auth.onModuleInit();
        const messages = () => warn.mock.calls.map((c) => String(c.arguments[0]));
        assert.match(messages().join('\n'), /answered until 2026-12-05T14:00:00.000Z/);
        assert.equal(messages().filter((m) => /has passed/.test(m)).length, 0);
        t.mock.timers.tick(2 * hour - 1);
        assert.equal(messages().filter((m) => /has passed/.test(m)).length, 0);
        t.mock.timers.tick(1);
        t.mock.timers.tick(24 * hour);
        assert.deepEqual(messages().filter((m) => /has passed/.test(m)), [
          'MFA_INTERNAL_UNSIGNED_UNTIL 2026-12-05T14:00:00.000Z has passed: unsigned internal requests are refused, as with MFA_INTERNAL_UNSIGNED=refuse; remove MFA_INTERNAL_UNSIGNED and MFA_INTERNAL_UNSIGNED_UNTIL',
        ]);
        auth.onModuleDestroy();
      });
    });
  });
});
