import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TotpTokenCache } from './totp-token.cache.js';

const tokens = (id: string) => [id, '6:30:0a0b:c0ffee', '-1'];

describe('the TOTP tokens of the challenges started here', () => {
  it('given a challenge\'s tokens, then its verify finds them until the challenge expires or they are dropped', () => {
    const cache = new TotpTokenCache();
    cache.set('c1', tokens('a'), 2_000, 1_000);
    assert.deepEqual(cache.get('c1', 1_999), tokens('a'));
    assert.equal(cache.get('c2', 1_000), undefined);
    assert.equal(cache.get('c1', 2_000), undefined, 'expired');
    assert.equal(cache.size, 0, 'an expired entry found is dropped');
    cache.set('c1', tokens('a'), 2_000, 1_000);
    cache.delete('c1');
    assert.equal(cache.get('c1', 1_000), undefined);
  });

  it('given tokens read again for a challenge, then they replace the ones kept', () => {
    const cache = new TotpTokenCache();
    cache.set('c1', tokens('a'), 2_000, 1_000);
    cache.set('c1', tokens('b'), 3_000, 1_500);
    assert.deepEqual(cache.get('c1', 2_500), tokens('b'));
    assert.equal(cache.size, 1);
  });

  it('given more challenges than it holds, then the oldest go first, and expired ones go with each set', () => {
    const cache = new TotpTokenCache(3);
    for (const id of ['c1', 'c2', 'c3']) cache.set(id, tokens(id), 10_000, 1_000);
    cache.set('c4', tokens('c4'), 15_000, 1_000);
    assert.equal(cache.size, 3);
    assert.equal(cache.get('c1', 1_000), undefined);
    assert.deepEqual(cache.get('c4', 1_000), tokens('c4'));
    // c2 and c3 expire at 10,000: a set then drops them, and keeps c4.
    cache.set('c5', tokens('c5'), 20_000, 10_000);
    assert.equal(cache.size, 2);
    assert.deepEqual([cache.get('c4', 10_000), cache.get('c5', 10_000)], [tokens('c4'), tokens('c5')]);
  });
});
