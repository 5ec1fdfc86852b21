import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nkeys, type Auth, type Authenticator } from '@nats-io/nats-core';
import { natsClientOptions } from './client.js';
import { isReplySubject } from './reply-subject.js';
import { natsSecurityFromEnv, natsSecurityOptions, NatsSecurityError, readNatsSecurity } from './security.js';

const dir = mkdtempSync(join(tmpdir(), 'mfa-nats-security-'));
const file = (name: string, content: string) => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};
const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const creds = (jwt: string, seed: Uint8Array) =>
  `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${new TextDecoder().decode(seed)}\n------END USER NKEY SEED------\n`;
const problemsOf = (env: Record<string, string>) => readNatsSecurity(env).problems;

describe('NATS credentials, TLS and inbox prefix from the environment', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('needs nothing: no variable, or empty ones (compose passes unset variables so), means an open connection', () => {
    assert.deepEqual(natsSecurityFromEnv({}), {});
    assert.deepEqual(natsSecurityFromEnv({ NATS_USER: '', NATS_PASSWORD: '', NATS_TOKEN: '', NATS_TLS_CA: '', NATS_INBOX_PREFIX: '' }), {});
    assert.deepEqual(natsSecurityOptions({}), {});
  });

  it('passes a user and password, or a token, to nats.js', () => {
    assert.deepEqual(natsSecurityOptions(natsSecurityFromEnv({ NATS_USER: 'idp-example', NATS_PASSWORD: 'pS3cret' })), { user: 'idp-example', pass: 'pS3cret' });
    assert.deepEqual(natsSecurityOptions(natsSecurityFromEnv({ NATS_TOKEN: 'tok' })), { token: 'tok' });
  });

  it('names the variable at fault, never its value', () => {
    assert.match(problemsOf({ NATS_USER: 'idp' }).join(), /NATS_PASSWORD: required with NATS_USER/);
    const noUser = problemsOf({ NATS_PASSWORD: 'pHiddenValue' });
    assert.match(noUser.join(), /NATS_USER: required with NATS_PASSWORD/);
    assert.doesNotMatch(noUser.join(), /pHiddenValue/);
    assert.match(problemsOf({ NATS_USER: 'a', NATS_PASSWORD: 'b', NATS_TOKEN: 'c' }).join(), /NATS_USER\/NATS_PASSWORD, NATS_TOKEN: set only one/);
    assert.throws(() => natsSecurityFromEnv({ NATS_TOKEN: 'x', NATS_CREDS: join(dir, 'missing.creds') }), (e: Error) => {
      assert.ok(e instanceof NatsSecurityError);
      assert.match(e.message, /NATS_TOKEN, NATS_CREDS: set only one/);
      assert.match(e.message, /NATS_CREDS: file not readable/);
      return true;
    });
  });

  it('signs the server nonce with the .creds file, read again at every connect so it can be rotated', () => {
    const user = nkeys.createUser();
    const path = file('user.creds', creds('first.jwt.value', user.getSeed()));
    const authenticator = natsSecurityOptions(natsSecurityFromEnv({ NATS_CREDS: path })).authenticator as Authenticator;
    const auth = authenticator('server-nonce') as Auth & { jwt: string; nkey: string; sig: string };
    assert.equal(auth.jwt, 'first.jwt.value');
    assert.equal(auth.nkey, user.getPublicKey());
    assert.ok(nkeys.fromPublic(user.getPublicKey()).verify(new TextEncoder().encode('server-nonce'), Buffer.from(auth.sig, 'base64url')));
    writeFileSync(path, creds('second.jwt.value', user.getSeed()));
    assert.equal((authenticator('another-nonce') as { jwt: string }).jwt, 'second.jwt.value');
    assert.match(problemsOf({ NATS_CREDS: file('not.creds', 'user: x') }).join(), /NATS_CREDS: not a \.creds file/);
  });

  it('requires TLS with the given files; a client certificate needs its key, and every file must be readable', () => {
    const ca = file('ca.pem', pem);
    const cert = file('client.pem', pem);
    const key = file('client-key.pem', pem);
    assert.deepEqual(natsSecurityOptions(natsSecurityFromEnv({ NATS_TLS_CA: ca })), { tls: { caFile: ca } });
    assert.deepEqual(natsSecurityOptions(natsSecurityFromEnv({ NATS_TLS_CA: ca, NATS_TLS_CERT: cert, NATS_TLS_KEY: key })), {
      tls: { caFile: ca, certFile: cert, keyFile: key },
    });
    assert.match(problemsOf({ NATS_TLS_CERT: cert }).join(), /NATS_TLS_KEY: required with NATS_TLS_CERT/);
    assert.match(problemsOf({ NATS_TLS_KEY: key }).join(), /NATS_TLS_CERT: required with NATS_TLS_KEY/);
    assert.match(problemsOf({ NATS_TLS_CA: join(dir, 'nope.pem') }).join(), /NATS_TLS_CA: file not readable/);
  });

  it('takes an inbox prefix the services answer: _INBOX or _INBOX_<name>, then any subject tokens', () => {
    assert.deepEqual(natsSecurityOptions(natsSecurityFromEnv({ NATS_INBOX_PREFIX: '_INBOX_idp-example' })), { inboxPrefix: '_INBOX_idp-example' });
    for (const good of ['_INBOX', '_INBOX_idp1.replies', '_INBOX.idp1']) {
      assert.deepEqual(natsSecurityFromEnv({ NATS_INBOX_PREFIX: good }), { inboxPrefix: good }, good);
      assert.ok(isReplySubject(`${good}.Abc123`), `the services answer ${good}`);
    }
    for (const bad of ['_INBOX_idp.', '_INBOX.*', 'a..b', 'has space', '>', 'replies.idp1', '_INBOXES', 'INBOX', '_R_']) {
      assert.match(problemsOf({ NATS_INBOX_PREFIX: bad }).join(), /NATS_INBOX_PREFIX: must be _INBOX or _INBOX_<name>/, bad);
    }
  });

  it('gives clients outside the services the same settings, with NATS_URL listing the servers', () => {
    assert.deepEqual(natsClientOptions({}), { servers: ['nats://127.0.0.1:4222'] });
    assert.deepEqual(natsClientOptions({ NATS_URL: 'nats://a:4222, nats://b:4222', NATS_USER: 'idp-example', NATS_PASSWORD: 'p1', NATS_INBOX_PREFIX: '_INBOX_idp-example' }), {
      servers: ['nats://a:4222', 'nats://b:4222'],
      user: 'idp-example',
      pass: 'p1',
      inboxPrefix: '_INBOX_idp-example',
    });
    assert.throws(() => natsClientOptions({ NATS_USER: 'idp-example' }), NatsSecurityError);
  });
});
