import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError, defaultTenantSettings, ipLockKey, lockKeyInRanges } from '@mfa/contracts';
import { decideIp, initialIpLockState, type IpLockoutPolicy, type IpLockState } from './ip-lockout.js';

const now = new Date('2026-11-30T10:00:00.000Z');
const policy = (change: Partial<IpLockoutPolicy> = {}): IpLockoutPolicy => ({ ...defaultTenantSettings().ipLockout, threshold: 10, ...change });
const count = (failures: number, users = failures) => ({ type: 'CountDenial', data: { ip: '203.0.113.9', window: { failures, users } } }) as const;
const lockedUntil = (until: number, dryRun = false): IpLockState => ({ locked: true, until, dryRun, lockedAt: now.getTime() - 1000, failures: 10, users: 10 });

describe('per-IP lockout decider', () => {
  it('given fewer denials than the threshold, when one more is counted, then nothing; at the threshold, then locked for the duration', () => {
    assert.deepEqual(decideIp(count(9), policy(), initialIpLockState(), now), []);
    const [locked] = decideIp(count(10, 7), policy({ durationMinutes: 30 }), initialIpLockState(), now);
    assert.deepEqual(locked, {
      type: 'IpLocked',
      data: { ip: '203.0.113.9', until: new Date(now.getTime() + 30 * 60_000).toISOString(), failures: 10, users: 7, windowMinutes: 15, dryRun: false },
    });
  });

  it('given a lock in force, when more denials come, then no second lock; given one that ended, then locked anew', () => {
    assert.deepEqual(decideIp(count(11), policy(), lockedUntil(now.getTime() + 1), now), []);
    assert.equal(decideIp(count(11), policy(), lockedUntil(now.getTime() - 1), now)[0]?.type, 'IpLocked');
  });

  it('given a dry run, then the lock is recorded as dry run once; when the dry run is turned off, then it is locked for real', () => {
    const [dry] = decideIp(count(10), policy({ dryRun: true }), initialIpLockState(), now);
    assert.equal(dry?.type === 'IpLocked' && dry.data.dryRun, true);
    assert.deepEqual(decideIp(count(11), policy({ dryRun: true }), lockedUntil(now.getTime() + 60_000, true), now), []);
    const [real] = decideIp(count(11), policy(), lockedUntil(now.getTime() + 60_000, true), now);
    assert.equal(real?.type === 'IpLocked' && real.data.dryRun, false);
  });

  it('given the lockout off, or the address on the never-block list, then never locked', () => {
    assert.deepEqual(decideIp(count(1000), policy({ enabled: false }), initialIpLockState(), now), []);
    assert.deepEqual(decideIp(count(1000), policy({ neverBlock: ['203.0.113.0/24'] }), initialIpLockState(), now), []);
    assert.equal(decideIp(count(1000), policy({ neverBlock: ['198.51.100.0/24'] }), initialIpLockState(), now).length, 1);
    assert.deepEqual(decideIp(count(1000), policy({ neverBlock: ['::ffff:203.0.113.0/120'] }), initialIpLockState(), now), [], 'written as IPv4-mapped');
  });

  it('given a never-block address or range inside an IPv6 /64, then that /64 is never locked: its counts cannot tell the address apart', () => {
    const gateway = { type: 'CountDenial', data: { ip: ipLockKey('2001:db8:1:2::10')!, window: { failures: 1000, users: 1000 } } } as const;
    for (const neverBlock of [['2001:db8:1:2::10/128'], ['2001:db8:1:2:8000::/65'], ['2001:db8::/32']]) {
      assert.deepEqual(decideIp(gateway, policy({ neverBlock }), initialIpLockState(), now), [], neverBlock[0]);
    }
    assert.equal(decideIp(gateway, policy({ neverBlock: ['2001:db8:1:3::10/128'] }), initialIpLockState(), now).length, 1, 'another /64');
  });

  it('given a lock in force, when unlocked with a reason, then IpUnlocked; given none (or only a dry run), then conflict', () => {
    const unlock = { type: 'Unlock', data: { ip: '203.0.113.9', reason: 'office NAT', by: { clientId: 'c1' } } } as const;
    assert.deepEqual(decideIp(unlock, policy(), lockedUntil(now.getTime() + 1), now), [
      { type: 'IpUnlocked', data: { ip: '203.0.113.9', reason: 'office NAT', by: { clientId: 'c1' } } },
    ]);
    for (const state of [initialIpLockState(), lockedUntil(now.getTime() - 1), lockedUntil(now.getTime() + 1, true)]) {
      assert.throws(() => decideIp(unlock, policy(), state, now), (e: unknown) => e instanceof ContractError && e.code === 'conflict');
    }
  });
});

describe('client addresses for per-IP lockout', () => {
  it('counts IPv4 as is (mapped IPv6 too) and IPv6 by its /64', () => {
    assert.equal(ipLockKey('203.0.113.9'), '203.0.113.9');
    assert.equal(ipLockKey('::ffff:203.0.113.9'), '203.0.113.9');
    assert.equal(ipLockKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(ipLockKey('2001:db8:1:2:bbbb::7'), ipLockKey('2001:db8:1:2:aaaa::1'));
    assert.notEqual(ipLockKey('2001:db8:1:3::1'), ipLockKey('2001:db8:1:2::1'));
    assert.equal(ipLockKey('not an ip'), undefined);
  });

  it('finds a lock key in never-block ranges of its family', () => {
    assert.equal(lockKeyInRanges('203.0.113.9', ['203.0.113.0/24']), true);
    assert.equal(lockKeyInRanges('203.0.114.9', ['203.0.113.0/24']), false);
    assert.equal(lockKeyInRanges('2001:db8:1:2::/64', ['2001:db8::/32']), true);
    assert.equal(lockKeyInRanges('2001:db8:1:2::/64', ['2001:db8:1:2::10/128']), true);
    assert.equal(lockKeyInRanges('2001:db8:1:2::/64', ['203.0.113.0/24']), false);
    assert.equal(lockKeyInRanges('203.0.113.9', []), false);
  });
});
