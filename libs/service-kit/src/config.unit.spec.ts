import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BaseConfig, ConfigError, loadConfig } from './config.js';

// As every service builds its own: BaseConfig extended, with its own defaults.
const ServiceEnv = BaseConfig.extend({ HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3999) });
const dir = mkdtempSync(join(tmpdir(), 'mfa-config-'));
const ca = join(dir, 'ca.pem');
writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n');

describe('base configuration: NATS credentials, TLS and inbox prefix', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the NATS_* variables, and a service schema still extends BaseConfig', () => {
    const config = loadConfig(ServiceEnv, { NATS_USER: 'mfa-services', NATS_PASSWORD: 'pS3cret', NATS_TLS_CA: ca, NATS_INBOX_PREFIX: '_INBOX_svc' });
    assert.equal(config.HTTP_PORT, 3999);
    assert.equal(config.NATS_URL, 'nats://127.0.0.1:4222');
    assert.equal(config.NATS_USER, 'mfa-services');
    assert.equal(config.NATS_PASSWORD, 'pS3cret');
    assert.equal(config.NATS_TLS_CA, ca);
    assert.equal(config.NATS_INBOX_PREFIX, '_INBOX_svc');
  });

  it('stops the boot on settings that do not go together or files it cannot read, naming variables and never values', () => {
    for (const [env, message] of [
      [{ NATS_USER: 'mfa-services' }, /NATS_PASSWORD: required with NATS_USER/],
      [{ NATS_PASSWORD: 'pHiddenValue' }, /NATS_USER: required with NATS_PASSWORD/],
      [{ NATS_TOKEN: 'tHiddenValue', NATS_USER: 'u', NATS_PASSWORD: 'pHiddenValue' }, /set only one way of authenticating/],
      [{ NATS_CREDS: join(dir, 'missing.creds') }, /NATS_CREDS: file not readable/],
      [{ NATS_TLS_CERT: ca }, /NATS_TLS_KEY: required with NATS_TLS_CERT/],
      [{ NATS_TLS_CA: join(dir, 'missing.pem') }, /NATS_TLS_CA: file not readable/],
      [{ NATS_INBOX_PREFIX: '_INBOX.>' }, /NATS_INBOX_PREFIX: must be a subject prefix/],
    ] as const) {
      assert.throws(() => loadConfig(ServiceEnv, env), (e: Error) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, /^invalid configuration: /);
        assert.match(e.message, message);
        assert.doesNotMatch(e.message, /HiddenValue/);
        return true;
      }, JSON.stringify(env));
    }
  });

  it('leaves schemas without NATS settings alone', () => {
    assert.deepEqual(loadConfig(z.object({ X: z.string().default('x') }), { NATS_USER: 'only-a-user' }), { X: 'x' });
  });
});
