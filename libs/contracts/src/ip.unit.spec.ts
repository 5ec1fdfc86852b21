import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addressInRanges, compileRanges, ipLockKey, lockKeyInRanges } from './ip.js';

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
