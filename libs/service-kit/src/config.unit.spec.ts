import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BaseConfig, ConfigError, DatabaseConfig, loadConfig, redisConnectionFrom } from './config.js';
import { describeRedis, RedisConfig } from './redis-connection.js';

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
      [{ NATS_INBOX_PREFIX: '_INBOX.>' }, /NATS_INBOX_PREFIX: must be _INBOX or _INBOX_<name>/],
      [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '1%' }, /OTEL_TRACES_SAMPLER_ARG: must be a ratio/],
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

describe('base configuration: clusters (REDIS_MODE, NATS_URL, DATABASE_READ_URL)', () => {
  const RedisServiceEnv = ServiceEnv.extend(RedisConfig.shape).extend(DatabaseConfig.shape);

  it('reads each Redis mode into the connection the adapter opens, empty variables unset', () => {
    const standalone = loadConfig(RedisServiceEnv, { REDIS_MODE: '', REDIS_URL: 'redis://cache:6380' });
    assert.deepEqual(redisConnectionFrom(standalone), { mode: 'standalone', url: 'redis://cache:6380' });
    const cluster = loadConfig(RedisServiceEnv, { REDIS_MODE: 'cluster', REDIS_NODES: 'r1:7000, r2:7001,[::1]:7002', REDIS_PASSWORD: 'pw', REDIS_URL: 'ignored' });
    assert.deepEqual(redisConnectionFrom(cluster), {
      mode: 'cluster',
      nodes: [{ host: 'r1', port: 7000 }, { host: 'r2', port: 7001 }, { host: '::1', port: 7002 }],
      password: 'pw',
    });
    const sentinel = loadConfig(RedisServiceEnv, { REDIS_MODE: 'sentinel', REDIS_SENTINELS: 's1:26379,s2:26379', REDIS_SENTINEL_PASSWORD: 'spw', REDIS_SENTINEL_NAME: '' });
    assert.deepEqual(redisConnectionFrom(sentinel), { mode: 'sentinel', sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }], name: 'mymaster', sentinelPassword: 'spw' });
    assert.equal(describeRedis(redisConnectionFrom(sentinel)), 'sentinel mymaster via s1:26379,s2:26379');
    const nats = loadConfig(RedisServiceEnv, { NATS_URL: 'nats://n1:4222,n2:4222, tls://n3:4222,n4' });
    assert.equal(nats.NATS_URL, 'nats://n1:4222,n2:4222, tls://n3:4222,n4');
  });

  it('refuses a mode without its variables, malformed addresses and URLs, naming the variable and never a password', () => {
    for (const [env, message] of [
      [{ REDIS_MODE: 'cluster' }, /REDIS_NODES: required/],
      [{ REDIS_MODE: 'sentinel', REDIS_NODES: 'a:1' }, /REDIS_SENTINELS: required/],
      [{ REDIS_MODE: 'cluster', REDIS_NODES: 'r1:7000,r2' }, /REDIS_NODES: "r2" is not host:port/],
      [{ REDIS_MODE: 'cluster', REDIS_NODES: 'r1:99999' }, /REDIS_NODES: "r1:99999" is not host:port/],
      [{ REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'redis://s1:26379' }, /REDIS_SENTINELS: .* is not host:port/],
      [{ REDIS_MODE: 'replicated' }, /REDIS_MODE/],
      [{ REDIS_URL: 'http://cache:6379' }, /REDIS_URL: must start with redis:\/\//],
      [{ NATS_URL: 'nats://n1:4222,http://n2:4222' }, /NATS_URL: "http:\/\/n2:4222" is not/],
      [{ NATS_URL: 'nats://user:sHiddenValue@n1:42x22' }, /NATS_URL: "nats:\/\/\*\*\*@n1:42x22" is not/],
      [{ NATS_URL: ' , ' }, /NATS_URL: names no server/],
      [{ DATABASE_READ_URL: 'mysql://replica/mfa' }, /DATABASE_READ_URL: must start with postgres:\/\//],
    ] as const) {
      assert.throws(() => loadConfig(RedisServiceEnv, env), (e: Error) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, message);
        assert.doesNotMatch(e.message, /HiddenValue/);
        return true;
      }, JSON.stringify(env));
    }
  });
});
