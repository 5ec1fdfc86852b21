import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { defaultTenantSettings, type TenantSettings } from '@mfa/contracts';
import { createEvent, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { IpLocks } from './ip-locks.js';

const tenantId = 'contoso';
// Now, not a fixed date: folding an event drops the locks that ended by the clock.
const now = Date.now();
const until = new Date(now + 60_000).toISOString();
const settings = (neverBlock: string[]): TenantSettings => ({ ...defaultTenantSettings(), ipLockout: { ...defaultTenantSettings().ipLockout, neverBlock } });

/** A followed message as its consumer hands it over: `json()` parses the body (and throws on one that is not JSON). */
type Followed = { json(): unknown; seq: number };
const message = (event: unknown, seq = 1): Followed => ({ json: () => event, seq });
const notJson = (seq = 1): Followed => ({ json: () => JSON.parse('{ not json'), seq });
type Feed = { fold(msg: Followed): void; foldThrottle(msg: Followed): void };
const lockEvent = (ip: string) => createEvent('IpLocked', 1, { tenantId, aggregateId: ip, now: new Date(now), data: { ip, until, failures: 50, users: 50, windowMinutes: 15, dryRun: false } });
const throttleEvent = (ip: string) => createEvent('IpThrottled', 1, { tenantId, aggregateId: ip, now: new Date(now), data: { ip, until, starts: 300, windowSeconds: 300 } });

/** IpLocks fed as its consumers would feed it (no NATS: locked and throttledUntil read memory only). */
function locksOf(...ips: string[]): IpLocks {
  const locks = new IpLocks({} as NatsClients, createLogger('auth-challenge-test', { level: 'error' }));
  const feed = locks as unknown as Feed;
  for (const ip of ips) {
    feed.fold(message(lockEvent(ip)));
    feed.foldThrottle(message(throttleEvent(ip)));
  }
  return locks;
}

describe('per-IP locks and throttles at start', () => {
  it('given a lock of a /64 recorded before its gateway was listed, then the gateway is never refused and the rest of the /64 still is', () => {
    const locks = locksOf('2001:db8:1:2::/64');
    const listed = settings(['2001:db8:1:2::10/128']);
    assert.equal(locks.locked(tenantId, listed, '2001:db8:1:2::10', now), false);
    assert.equal(locks.throttledUntil(tenantId, listed, '2001:db8:1:2::10', now), undefined);
    assert.equal(locks.locked(tenantId, listed, '2001:db8:1:2::99', now), true);
    assert.equal(locks.throttledUntil(tenantId, listed, '2001:db8:1:2::99', now), Date.parse(until));
    assert.equal(locks.locked(tenantId, settings([]), '2001:db8:1:2::10', now), true);
  });

  it('given a never-block range written as IPv4-mapped IPv6, then IPv4 clients in it are never refused, however they are written', () => {
    const locks = locksOf('203.0.113.9', '198.51.100.9');
    const listed = settings(['::ffff:203.0.113.0/120']);
    for (const clientIp of ['203.0.113.9', '::ffff:203.0.113.9']) {
      assert.equal(locks.locked(tenantId, listed, clientIp, now), false, clientIp);
      assert.equal(locks.throttledUntil(tenantId, listed, clientIp, now), undefined, clientIp);
    }
    assert.equal(locks.locked(tenantId, listed, '198.51.100.9', now), true);
  });

  it('given a message that is not JSON among the followed ones, then it is skipped (logged) and the locks and throttles after it still hold', () => {
    const errors: string[] = [];
    const log = createLogger('auth-challenge-test', { level: 'error' });
    const locks = new IpLocks({} as NatsClients, { ...log, error: (msg: string) => void errors.push(msg) });
    const feed = locks as unknown as Feed;
    assert.doesNotThrow(() => feed.fold(notJson(1)));
    assert.doesNotThrow(() => feed.foldThrottle(notJson(1)));
    feed.fold(message(lockEvent('203.0.113.7'), 2));
    feed.foldThrottle(message(throttleEvent('203.0.113.7'), 2));
    assert.equal(locks.locked(tenantId, settings([]), '203.0.113.7', now), true);
    assert.equal(locks.throttledUntil(tenantId, settings([]), '203.0.113.7', now), Date.parse(until));
    assert.deepEqual(errors, ['unreadable per-IP lock event skipped', 'unreadable per-IP throttle event skipped']);
  });
});
