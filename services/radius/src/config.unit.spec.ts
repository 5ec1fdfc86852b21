import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadRadiusConfig } from './config.js';

const secret = 'a-shared-secret-of-24-ch';

describe('radius configuration', () => {
  it('starts with no client (answering nobody), on 127.0.0.1:1812, challenge mode, 25 s waits', () => {
    const config = loadRadiusConfig({});
    assert.deepEqual([config.RADIUS_CLIENTS, config.RADIUS_BIND, config.RADIUS_PORT, config.RADIUS_PASSWORD_MODE, config.RADIUS_WAIT_SECONDS, config.HTTP_PORT], [[], '127.0.0.1', 1812, 'challenge', 25, 3006]);
  });

  it('asks the kernel for a 4 MiB receive buffer unless told otherwise', () => {
    assert.equal(loadRadiusConfig({}).RADIUS_RECEIVE_BUFFER_BYTES, 4_194_304);
    assert.equal(loadRadiusConfig({ RADIUS_RECEIVE_BUFFER_BYTES: '' }).RADIUS_RECEIVE_BUFFER_BYTES, 4_194_304);
    assert.equal(loadRadiusConfig({ RADIUS_RECEIVE_BUFFER_BYTES: '16777216' }).RADIUS_RECEIVE_BUFFER_BYTES, 16_777_216);
  });

  it('remembers Access-Requests against replays for 10 minutes unless told otherwise, never less than 5', () => {
    assert.equal(loadRadiusConfig({}).RADIUS_REPLAY_WINDOW_SECONDS, 600);
    assert.equal(loadRadiusConfig({ RADIUS_REPLAY_WINDOW_SECONDS: '' }).RADIUS_REPLAY_WINDOW_SECONDS, 600);
    assert.equal(loadRadiusConfig({ RADIUS_REPLAY_WINDOW_SECONDS: '3600' }).RADIUS_REPLAY_WINDOW_SECONDS, 3600);
    assert.throws(() => loadRadiusConfig({ RADIUS_REPLAY_WINDOW_SECONDS: '30' }), /RADIUS_REPLAY_WINDOW_SECONDS/);
  });

  it('takes empty variables (docker-compose passes ${VAR:-}) as unset', () => {
    const config = loadRadiusConfig({ RADIUS_CLIENTS: '', RADIUS_WAIT_SECONDS: '', RADIUS_PASSWORD_MODE: '', RADIUS_PORT: '', RADIUS_BIND: '' });
    assert.deepEqual([config.RADIUS_CLIENTS, config.RADIUS_WAIT_SECONDS, config.RADIUS_PASSWORD_MODE, config.RADIUS_PORT, config.RADIUS_BIND], [[], 25, 'challenge', 1812, '127.0.0.1']);
  });

  it('reads the clients, IPv6 binds and otp mode', () => {
    const config = loadRadiusConfig({
      RADIUS_CLIENTS: JSON.stringify([{ cidr: '2001:db8::/48', secret, tenantId: 'contoso', name: 'vpn', passwordMode: 'otp' }]),
      RADIUS_BIND: '::',
      RADIUS_PASSWORD_MODE: 'otp',
      RADIUS_WAIT_SECONDS: '40',
    });
    assert.equal(config.RADIUS_CLIENTS.length, 1);
    assert.deepEqual([config.RADIUS_BIND, config.RADIUS_PASSWORD_MODE, config.RADIUS_WAIT_SECONDS], ['::', 'otp', 40]);
  });

  it('refuses to start on invalid JSON, a short secret or a bad bind, naming the variable and never the secret', () => {
    const refused = (env: Record<string, string>) => {
      try {
        loadRadiusConfig(env);
      } catch (error) {
        return (error as Error).message;
      }
      assert.fail(`accepted ${JSON.stringify(env)}`);
    };
    assert.match(refused({ RADIUS_CLIENTS: '[{"cidr":' }), /^invalid configuration: RADIUS_CLIENTS: must be a JSON array/);
    const short = refused({ RADIUS_CLIENTS: JSON.stringify([{ cidr: '192.0.2.1', secret: 'tooshort-secret', tenantId: 'contoso' }]) });
    assert.match(short, /RADIUS_CLIENTS\.0\.secret: must be at least 16 characters/);
    assert.ok(!short.includes('tooshort-secret'));
    assert.match(refused({ RADIUS_BIND: 'localhost' }), /RADIUS_BIND: must be an IPv4 or IPv6 address/);
    assert.match(refused({ RADIUS_WAIT_SECONDS: '0' }), /RADIUS_WAIT_SECONDS/);
    assert.match(refused({ RADIUS_PASSWORD_MODE: 'pap' }), /RADIUS_PASSWORD_MODE/);
    assert.match(refused({ RADIUS_RECEIVE_BUFFER_BYTES: '4096' }), /RADIUS_RECEIVE_BUFFER_BYTES/);
  });
});
