import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addressInRanges, compileRanges, ipLockKey, isIpv4CompatibleAddress, lockKeyInRanges } from './ip.js';
import { ChallengeStartRequest, describeIssues, FraudIpsUnlockRequest, IpAddress } from './index.js';

describe('trusted ranges', () => {
  it('matches IPv4 and IPv6 addresses inside the ranges, and nothing else', () => {
    const set = compileRanges(['8.8.4.0/24', '203.0.113.7/32', '2001:db8:1::/48', '10.0.0.0/8']);
    for (const inside of ['8.8.4.0', '8.8.4.255', '203.0.113.7', '10.255.255.255', '2001:db8:1:ffff::1', '::ffff:8.8.4.9']) assert.equal(set.has(inside), true, inside);
    for (const outside of ['8.8.5.0', '8.8.3.255', '203.0.113.8', '11.0.0.0', '2001:db8:2::1', '::1', 'not an ip', '']) assert.equal(set.has(outside), false, outside);
  });

  it('merges overlapping and adjacent ranges, and matches all 50 of a full list', () => {
    const ranges = Array.from({ length: 50 }, (_, i) => `8.8.${i}.0/24`);
    const set = compileRanges([...ranges, '8.8.0.0/23']);
    assert.equal(set.size, 1, 'fifty adjacent /24s are one interval');
    for (let i = 0; i < 50; i++) assert.equal(set.has(`8.8.${i}.77`), true);
    assert.equal(set.has('8.8.50.1'), false);
    assert.equal(compileRanges([]).has('8.8.8.8'), false);
  });

  it('takes a range written as IPv4-mapped IPv6 as the IPv4 range, as addresses are', () => {
    const set = compileRanges(['::ffff:203.0.113.0/120', '::ffff:198.51.100.7/128']);
    for (const inside of ['203.0.113.9', '::ffff:203.0.113.255', '198.51.100.7']) assert.equal(set.has(inside), true, inside);
    for (const outside of ['203.0.114.0', '198.51.100.8', '::ffff:cb00:7201']) assert.equal(set.has(outside), false, outside);
    assert.equal(compileRanges(['::ffff:0:0/96']).has('192.0.2.1'), true, 'every IPv4 address');
    assert.equal(compileRanges(['::/0']).has('192.0.2.1'), false, 'an IPv6 range not written as mapped stays IPv6');
  });

  it('finds ranges sharing an address with a block: inside it, holding it, across its edge', () => {
    const set = compileRanges(['2001:db8:1:2::10/128', '2001:db8:9::/48', '2001:db8:5:6:8000::/65', '203.0.113.0/24']);
    for (const block of ['2001:db8:1:2::/64', '2001:db8:9:7::/64', '2001:db8:5:6::/64', '2001:db8::/32', '203.0.113.128/25', '203.0.112.0/23']) {
      assert.equal(set.overlaps(block), true, block);
    }
    for (const block of ['2001:db8:1:3::/64', '2001:db8:a::/64', '2001:db8:1:2::11/128', '203.0.114.0/24', 'not a range']) assert.equal(set.overlaps(block), false, block);
    assert.equal(compileRanges([]).overlaps('::/0'), false);
  });
});

describe('never-block ranges and lock keys', () => {
  it('covers a /64 key holding a never-block address or range, and one inside a never-block range; an IPv4 key by its address', () => {
    const key = ipLockKey('2001:db8:1:2::77')!;
    for (const range of ['2001:db8:1:2::10/128', '2001:db8:1:2::/96', '2001:db8:1:2:8000::/65', '2001:db8:1:2::/64', '2001:db8::/32']) {
      assert.equal(lockKeyInRanges(key, [range]), true, range);
    }
    assert.equal(lockKeyInRanges(key, ['2001:db8:1:3::10/128', '203.0.113.0/24']), false);
    assert.equal(lockKeyInRanges(ipLockKey('::ffff:203.0.113.9')!, ['::ffff:203.0.113.0/120']), true, 'mapped range, IPv4 key');
    assert.equal(lockKeyInRanges('203.0.113.9', ['203.0.113.9/32']), true);
    assert.equal(lockKeyInRanges('203.0.113.10', ['203.0.113.9/32']), false);
    assert.equal(lockKeyInRanges('203.0.113.9', []), false);
  });

  it('matches a client address itself, not its /64', () => {
    const neverBlock = ['2001:db8:1:2::10/128', '::ffff:203.0.113.0/120'];
    assert.equal(addressInRanges('2001:db8:1:2::10', neverBlock), true);
    assert.equal(addressInRanges('2001:db8:1:2::11', neverBlock), false);
    assert.equal(addressInRanges('203.0.113.9', neverBlock), true);
    assert.equal(addressInRanges('::ffff:203.0.113.9', neverBlock), true);
    assert.equal(addressInRanges('203.0.113.9', []), false);
  });
});

describe('IPv4-compatible IPv6 addresses (::a.b.c.d)', () => {
  // ipaddr.js alone reads "::203.0.113.5" as ::ffff:203.0.113.5 (IPv4-mapped), but "::cb00:7105",
  // the same address, and "0:0:0:0:0:0:203.0.113.5" as IPv6.
  const spellings = ['::203.0.113.5', '::cb00:7105', '0:0:0:0:0:0:203.0.113.5', '0::203.0.113.5', '::0:203.0.113.5', '::CB00:7105'];

  it('reads every spelling as one IPv6 address: none is taken as its IPv4, in ranges or lock keys', () => {
    for (const address of spellings) {
      assert.equal(ipLockKey(address), '::/64', address);
      assert.equal(addressInRanges(address, ['203.0.113.0/24']), false, address);
      assert.equal(addressInRanges(address, ['::cb00:7100/120']), true, address);
      assert.equal(lockKeyInRanges(ipLockKey(address)!, ['203.0.113.5/32']), false, address);
    }
    // The mapped form is still its IPv4 address, whichever way it is written.
    for (const mapped of ['::ffff:203.0.113.5', '::ffff:cb00:7105', '0:0:0:0:0:ffff:203.0.113.5']) {
      assert.equal(ipLockKey(mapped), '203.0.113.5', mapped);
      assert.equal(addressInRanges(mapped, ['203.0.113.0/24']), true, mapped);
    }
    assert.equal(ipLockKey('2001:db8::203.0.113.5'), '2001:db8::/64');
    assert.equal(addressInRanges('64:ff9b::203.0.113.5', ['64:ff9b::cb00:7105/128']), true, 'a dotted tail elsewhere reads as its hex groups');
  });

  it('reads a range the same way: ::a.b.c.d/n is the range of its hex spelling, not an IPv4 range', () => {
    const dotted = compileRanges(['::203.0.113.0/120']);
    assert.equal(dotted.has('203.0.113.5'), false);
    assert.equal(dotted.has('::ffff:203.0.113.5'), false);
    assert.equal(dotted.has('::cb00:7105'), true);
    assert.equal(compileRanges(['::ffff:203.0.113.0/120']).has('203.0.113.5'), true, 'the mapped range is the IPv4 range');
    assert.equal(compileRanges(['::203.0.113.0/129']).size, 0, 'a prefix too long for IPv6 is still unreadable');
  });

  it('tells IPv4-compatible addresses in every spelling, and nothing else', () => {
    for (const address of spellings) assert.equal(isIpv4CompatibleAddress(address), true, address);
    for (const other of ['::', '::1', '::0.0.0.1', '::0.0.0.0', '203.0.113.5', '::ffff:203.0.113.5', '2001:db8::1', '64:ff9b::203.0.113.5', '1::', 'not an ip', '']) {
      assert.equal(isIpv4CompatibleAddress(other), false, other);
    }
  });

  it('are refused by the IpAddress contract with a message that says what to send; other addresses are accepted', () => {
    for (const address of spellings) {
      const parsed = IpAddress.safeParse(address);
      assert.equal(parsed.success, false, address);
      assert.match(describeIssues(parsed.error!.issues), /IPv4-compatible IPv6 address \(::a\.b\.c\.d, deprecated by RFC 4291\): send the IPv4 address a\.b\.c\.d, or ::ffff:a\.b\.c\.d/);
    }
    for (const address of ['203.0.113.5', '::ffff:203.0.113.5', '2001:db8::1', '::1', '::']) assert.equal(IpAddress.safeParse(address).success, true, address);
    const notAnAddress = IpAddress.safeParse('203.0.113');
    assert.equal(notAnAddress.success, false);
    assert.match(describeIssues(notAnAddress.error!.issues), /must be an IPv4 or IPv6 address$/);
    // Where requests carry one: a start's client IP, an unlock's IP.
    const start = ChallengeStartRequest.safeParse({ tenantId: 'acme', userId: 'u', clientIp: '::203.0.113.5' });
    assert.equal(start.success, false);
    assert.match(describeIssues(start.error!.issues), /^clientIp: must not be an IPv4-compatible/);
    assert.equal(ChallengeStartRequest.safeParse({ tenantId: 'acme', userId: 'u', clientIp: '203.0.113.5' }).success, true);
    assert.equal(FraudIpsUnlockRequest.safeParse({ tenantId: 'acme', ip: '::cb00:7105', reason: 'false positive' }).success, false);
  });
});
