import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compileRanges } from './ip.js';

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
});
