import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '@mfa/service-kit';
import { loadUserSettingsConfig } from './config.js';

describe('user-settings configuration', () => {
  it('has working defaults', () => {
    const config = loadUserSettingsConfig({});
    assert.equal(config.HTTP_PORT, 3004);
    assert.equal(config.MFA_TOTP_ISSUER, 'Open MFA');
    assert.equal(config.MFA_TENANT_AUTO_CREATE, true);
    assert.equal(config.REDIS_URL, 'redis://127.0.0.1:6379');
    assert.equal(config.developmentKey, true);
  });

  it('reads the issuer, auto-create switch and encryption key', () => {
    const config = loadUserSettingsConfig({
      MFA_TOTP_ISSUER: 'Contoso',
      MFA_TENANT_AUTO_CREATE: 'false',
      MFA_ENCRYPTION_KEY: 'ab'.repeat(32),
    });
    assert.equal(config.MFA_TOTP_ISSUER, 'Contoso');
    assert.equal(config.MFA_TENANT_AUTO_CREATE, false);
    assert.equal(config.developmentKey, false);
  });

  it('fails at boot on bad values', () => {
    for (const env of [
      { MFA_TENANT_AUTO_CREATE: 'maybe' },
      { MFA_TOTP_ISSUER: 'Contoso:MFA' },
      { MFA_ENCRYPTION_KEY: 'too-short' },
      { NODE_ENV: 'production' },
    ]) {
      assert.throws(() => loadUserSettingsConfig(env), ConfigError, JSON.stringify(env));
    }
  });
});
