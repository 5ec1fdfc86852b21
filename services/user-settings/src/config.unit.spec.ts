import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '@mfa/service-kit';
import { Consumers } from '@mfa/contracts';
import { loadUserSettingsConfig, userSettingsConsumers } from './config.js';

describe('user-settings configuration', () => {
  it('has working defaults', () => {
    const config = loadUserSettingsConfig({});
    assert.equal(config.HTTP_PORT, 3004);
    assert.equal(config.MFA_TOTP_ISSUER, 'Open MFA');
    assert.equal(config.MFA_TENANT_AUTO_CREATE, true);
    assert.equal(config.REDIS_URL, 'redis://127.0.0.1:6379');
    assert.equal(config.developmentKey, true);
    assert.equal(config.OATH_IMPORT_JOBS_PER_INSTANCE, 4);
    assert.equal(config.TENANT_OFFBOARDING_CONCURRENCY, 4);
  });

  it('reads TENANT_OFFBOARDING_CONCURRENCY (1 to 16) into the offboarding consumer, and refuses to start on another value, naming it', () => {
    assert.deepEqual(userSettingsConsumers(loadUserSettingsConfig({})), { [Consumers.tenantOffboarding.durable]: { concurrency: 4 } });
    assert.deepEqual(userSettingsConsumers(loadUserSettingsConfig({ TENANT_OFFBOARDING_CONCURRENCY: '1' })), { [Consumers.tenantOffboarding.durable]: { concurrency: 1 } });
    assert.equal(loadUserSettingsConfig({ TENANT_OFFBOARDING_CONCURRENCY: '16' }).TENANT_OFFBOARDING_CONCURRENCY, 16);
    for (const value of ['0', '17', '2.5', 'four', '-1']) {
      assert.throws(() => loadUserSettingsConfig({ TENANT_OFFBOARDING_CONCURRENCY: value }), (error: Error) => error instanceof ConfigError && /TENANT_OFFBOARDING_CONCURRENCY/.test(error.message), value);
    }
  });

  it('reads OATH_IMPORT_JOBS_PER_INSTANCE (1 to 32) and refuses to start on another value, naming it', () => {
    assert.equal(loadUserSettingsConfig({ OATH_IMPORT_JOBS_PER_INSTANCE: '1' }).OATH_IMPORT_JOBS_PER_INSTANCE, 1);
    assert.equal(loadUserSettingsConfig({ OATH_IMPORT_JOBS_PER_INSTANCE: '32' }).OATH_IMPORT_JOBS_PER_INSTANCE, 32);
    for (const value of ['0', '33', '2.5', 'four', '-1']) {
      assert.throws(() => loadUserSettingsConfig({ OATH_IMPORT_JOBS_PER_INSTANCE: value }), (error: Error) => error instanceof ConfigError && /OATH_IMPORT_JOBS_PER_INSTANCE/.test(error.message), value);
    }
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
