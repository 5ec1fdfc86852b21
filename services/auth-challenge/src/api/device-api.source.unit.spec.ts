import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadAuthChallengeConfig } from '../config.js';
import { DEFAULT_TRUSTED_PROXIES, sourceAddress, trustedProxies } from './device-api.source.js';

describe('auth-challenge: the device API’s source address (X-Forwarded-For or Forwarded from trusted proxies only)', () => {
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

  it('Forwarded (RFC 7239): the `for=` of the elements, read from the end past the trusted proxies like X-Forwarded-For', () => {
    const forwarded = (header: string | string[] | undefined, trusted = privateProxies) => sourceAddress('10.0.0.5', header, trusted, 'forwarded');
    assert.equal(forwarded('for=192.0.2.60;proto=http;by=203.0.113.43'), '192.0.2.60');
    assert.equal(forwarded('for="[2001:db8:cafe::17]:4711"'), '2001:db8:cafe::17');
    assert.equal(forwarded('for="[2001:db8:cafe::17]"'), '2001:db8:cafe::17');
    assert.equal(forwarded('For="192.0.2.60:4711"'), '192.0.2.60', 'parameter names are case-insensitive; a port');
    assert.equal(forwarded('for="192.0.2.60:_port"'), '192.0.2.60', 'an obfuscated port');
    assert.equal(forwarded('for="\\192.0.2.60"'), '192.0.2.60', 'a quoted-pair');
    assert.equal(forwarded('for=198.51.100.1, for=192.0.2.60'), '192.0.2.60', 'the element the client wrote first is not believed');
    assert.equal(forwarded(['for=198.51.100.1', 'for=192.0.2.60;proto=https, for=192.168.1.2']), '192.0.2.60', 'several headers are one list; past a second trusted proxy');
    assert.equal(forwarded('for="oops\\, for=192.0.2.60'), '192.0.2.60', 'a malformed element before the proxy’s does not hide it');
    assert.equal(sourceAddress('203.0.113.9', 'for=198.51.100.1', privateProxies, 'forwarded'), '203.0.113.9', 'from an untrusted peer it is not read');
  });

  it('Forwarded: a hop that names no address leaves the source unknown: unknown, obfuscated, malformed, IPv6 without brackets, no for=', () => {
    const forwarded = (header: string | undefined) => sourceAddress('10.0.0.5', header, privateProxies, 'forwarded');
    for (const header of [
      undefined,
      '',
      'for=unknown',
      'for=_hidden',
      'for="_SEVKISEK"',
      'for=192.0.2.60, for=unknown',
      'for=2001:db8::1',
      'for="2001:db8::1"',
      'for="[192.0.2.60]"',
      'for="[2001:db8::1]:port"',
      'for="192.0.2.60',
      'for=192.0.2.60 x',
      'proto=https;by=10.0.0.5',
      'for=',
      'for=10.0.0.6, for=10.0.0.7',
      'for=192.0.2.60;constructor=x;__proto__=y, for=unknown',
    ]) assert.equal(forwarded(header), undefined, String(header));
    assert.equal(forwarded('for=192.0.2.60, proto=https'), undefined, 'an element without for=');
  });

  it('one header is read, the one DEVICE_API_FORWARDED_HEADER names: the other passes through the proxy as the client wrote it', () => {
    assert.equal(sourceAddress('127.0.0.1', 'for=198.51.100.1', byDefault, 'x-forwarded-for'), undefined, 'a Forwarded value is no X-Forwarded-For entry');
    assert.equal(sourceAddress('127.0.0.1', '198.51.100.1', byDefault, 'forwarded'), undefined, 'an X-Forwarded-For value is no Forwarded element');
    const env = { NODE_ENV: 'test' };
    assert.equal(loadAuthChallengeConfig(env).DEVICE_API_FORWARDED_HEADER, 'x-forwarded-for');
    assert.equal(loadAuthChallengeConfig({ ...env, DEVICE_API_FORWARDED_HEADER: '' }).DEVICE_API_FORWARDED_HEADER, 'x-forwarded-for', 'empty is unset');
    assert.equal(loadAuthChallengeConfig({ ...env, DEVICE_API_FORWARDED_HEADER: ' Forwarded ' }).DEVICE_API_FORWARDED_HEADER, 'forwarded');
    assert.throws(() => loadAuthChallengeConfig({ ...env, DEVICE_API_FORWARDED_HEADER: 'x-real-ip' }), /DEVICE_API_FORWARDED_HEADER/);
    assert.throws(() => loadAuthChallengeConfig({ ...env, DEVICE_API_FORWARDED_HEADER: 'both' }), /DEVICE_API_FORWARDED_HEADER/);
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
