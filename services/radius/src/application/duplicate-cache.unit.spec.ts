import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DuplicateCache } from './duplicate-cache.js';

describe('DuplicateCache', () => {
  it('keys on source address, port, Identifier and Request Authenticator', () => {
    const auth = Buffer.alloc(16, 7);
    const key = DuplicateCache.keyOf('192.0.2.1', 1645, 9, auth);
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.1', 1646, 9, auth));
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.2', 1645, 9, auth));
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.1', 1645, 10, auth));
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.1', 1645, 9, Buffer.alloc(16, 8)));
  });

  it('gives the same answer, also while it is still being decided, and forgets it keepMs after it settled', async () => {
    const cache = new DuplicateCache(50);
    let settle!: (b: Buffer | undefined) => void;
    const answer = new Promise<Buffer | undefined>((resolve) => (settle = resolve));
    cache.put('k', answer);
    assert.equal(cache.get('k'), answer, 'pending: the same promise');
    await new Promise((r) => setTimeout(r, 1_200));
    assert.equal(cache.get('k'), answer, 'an unsettled answer is never forgotten');
    settle(Buffer.from('x'));
    await answer;
    assert.deepEqual(await cache.get('k'), Buffer.from('x'));
    await new Promise((r) => setTimeout(r, 1_200));
    assert.equal(cache.get('k'), undefined);
    cache.close();
  });

  it('a silence is kept like an answer: a retransmission never starts the work again', async () => {
    const cache = new DuplicateCache(60_000, 2);
    cache.put('a', Promise.resolve(undefined));
    assert.ok(cache.get('a'));
    assert.equal(cache.full, false);
    cache.put('b', Promise.resolve(undefined));
    assert.equal(cache.full, true);
    cache.close();
  });
});
