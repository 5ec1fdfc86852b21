import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadAuthChallengeConfig } from '../config.js';
import { DEFAULT_TRUSTED_PROXIES, sourceAddress, trustedProxies } from './device-api.source.js';

describe('auth-challenge: the device API’s source address (X-Forwarded-For from trusted proxies only)', () => {
  const byDefault = trustedProxies(DEFAULT_TRUSTED_PROXIES);
  /** A deployment whose proxies are on its private networks (DEVICE_API_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16). */
  const privateProxies = trustedProxies(['10.0.0.0/8', '192.168.0.0/16']);

  it('a client that connects from the internet is its own address: what it writes in X-Forwarded-For is not believed', () => {
    assert.equal(sourceAddress('203.0.113.9', '198.51.100.1', byDefault), '203.0.113.9');
    assert.equal(sourceAddress('2001:db8::9', undefined, byDefault), '2001:db8::9');
  });

  it('behind a trusted proxy, the address the proxy added; entries the client wrote before it are not believed', () => {
    assert.equal(sourceAddress('127.0.0.1', '203.0.113.9', byDefault), '203.0.113.9');
    assert.equal(sourceAddress('::ffff:10.0.0.5', '198.51.100.1, 203.0.113.9', privateProxies), '203.0.113.9', 'the forged first entry is skipped');
    assert.equal(sourceAddress('10.0.0.5', ['198.51.100.1', '203.0.113.9, 192.168.1.2'], privateProxies), '203.0.113.9', 'past a second trusted proxy; several headers as one list');
    assert.equal(sourceAddress('10.0.0.5', '2001:db8:1:2::7', privateProxies), '2001:db8:1:2::7');
  });

  it('an entry with the port a proxy added is its address', () => {
    assert.equal(sourceAddress('127.0.0.1', '203.0.113.9:51234', byDefault), '203.0.113.9');
    assert.equal(sourceAddress('127.0.0.1', '[2001:db8::9]:443', byDefault), '2001:db8::9');
    assert.equal(sourceAddress('127.0.0.1', '[2001:db8::9]', byDefault), '2001:db8::9');
    assert.equal(sourceAddress('127.0.0.1', '203.0.113.9:port', byDefault), undefined, 'not a port: not an address');
  });

  it('by default only this host is a proxy: a client on a private network is its own address, whatever it writes', () => {
    assert.equal(sourceAddress('10.1.2.3', '198.51.100.77', byDefault), '10.1.2.3');
    assert.equal(sourceAddress('192.168.1.20', undefined, byDefault), '192.168.1.20');
  });

  it('a trusted proxy that names no client, or writes something else than an address, leaves the source unknown: its clients never share one budget', () => {
    assert.equal(sourceAddress('10.0.0.5', undefined, privateProxies), undefined);
    assert.equal(sourceAddress('10.0.0.5', '', privateProxies), undefined);
    assert.equal(sourceAddress('10.0.0.5', '203.0.113.9, unknown', privateProxies), undefined);
    assert.equal(sourceAddress('10.0.0.5', '10.0.0.6, 10.0.0.7', privateProxies), undefined, 'only trusted hops');
  });

  it('DEVICE_API_TRUSTED_PROXIES: a list of addresses and ranges, or none; the default trusts loopback and private networks', () => {
    const env = { NODE_ENV: 'test' };
    assert.deepEqual(loadAuthChallengeConfig(env).DEVICE_API_TRUSTED_PROXIES, DEFAULT_TRUSTED_PROXIES);
    assert.deepEqual(loadAuthChallengeConfig({ ...env, DEVICE_API_TRUSTED_PROXIES: '' }).DEVICE_API_TRUSTED_PROXIES, DEFAULT_TRUSTED_PROXIES, 'empty is unset');
    const none = loadAuthChallengeConfig({ ...env, DEVICE_API_TRUSTED_PROXIES: 'none' }).DEVICE_API_TRUSTED_PROXIES;
    assert.deepEqual(none, []);
    assert.equal(sourceAddress('127.0.0.1', '203.0.113.9', trustedProxies(none)), '127.0.0.1', 'none: not even loopback is believed');
    const listed = loadAuthChallengeConfig({ ...env, DEVICE_API_TRUSTED_PROXIES: '198.51.100.7, 2001:db8::/32' }).DEVICE_API_TRUSTED_PROXIES;
    assert.deepEqual(listed, ['198.51.100.7', '2001:db8::/32']);
    assert.equal(sourceAddress('198.51.100.7', '203.0.113.9', trustedProxies(listed)), '203.0.113.9');
    assert.equal(sourceAddress('127.0.0.1', '203.0.113.9', trustedProxies(listed)), '127.0.0.1', 'a list replaces the default');
    assert.equal(sourceAddress('198.51.100.7', undefined, trustedProxies(listed)), undefined, 'the listed proxy itself is no client');
    assert.throws(() => loadAuthChallengeConfig({ ...env, DEVICE_API_TRUSTED_PROXIES: 'proxy.example.com' }), /DEVICE_API_TRUSTED_PROXIES/);
    const config = loadAuthChallengeConfig(env);
    assert.deepEqual([config.DEVICE_API_MAX_FAILURES_PER_WINDOW, config.DEVICE_API_FAILURE_WINDOW_SECONDS], [1000, 600]);
  });
});
