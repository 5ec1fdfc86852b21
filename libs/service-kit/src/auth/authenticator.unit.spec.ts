import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { ContractError, type Scope } from '@mfa/contracts';
import { issueApiKey, keyringFromMasterKey, signInternalRequest } from '@mfa/crypto';
import { loadAuthConfig } from './auth.config.js';
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
  });
});
