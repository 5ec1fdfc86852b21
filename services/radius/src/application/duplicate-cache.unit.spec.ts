import { describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { DuplicateCache } from './duplicate-cache.js';

describe('DuplicateCache', () => {
  it('keys on source address, Identifier and Request Authenticator, not the source port (the authenticator is new for every request)', () => {
    const auth = Buffer.alloc(16, 7);
    const key = DuplicateCache.keyOf('192.0.2.1', 9, auth);
    assert.equal(key, DuplicateCache.keyOf('192.0.2.1', 9, Buffer.alloc(16, 7)));
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.2', 9, auth));
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.1', 10, auth));
    assert.notEqual(key, DuplicateCache.keyOf('192.0.2.1', 9, Buffer.alloc(16, 8)));
  });

  it('gives the same answer, also while it is still being decided, and forgets it keepMs after it settled', async () => {
    const cache = new DuplicateCache({ keepMs: 50 });
    let settle!: (b: Buffer | undefined) => void;
    const answer = new Promise<Buffer | undefined>((resolve) => (settle = resolve));
    cache.put('k', answer, 'vpn');
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
    const cache = new DuplicateCache({ keepMs: 60_000, maxEntries: 2 });
    cache.put('a', Promise.resolve(undefined), 'vpn');
    assert.ok(cache.get('a'));
    assert.equal(cache.hasRoomFor('vpn'), true);
    cache.put('b', Promise.resolve(undefined), 'vpn');
    assert.equal(cache.hasRoomFor('vpn'), false);
    cache.close();
  });

  it('keeps half of its entries split between the clients: a client that filled its part and the shared half is refused, the others are not, and swept entries give the room back', async () => {
    mock.timers.enable({ apis: ['Date', 'setInterval'], now: 0 });
    // 12 entries, 3 clients: 2 kept for each, 6 shared.
    const cache = new DuplicateCache({ clients: 3, keepMs: 1_000, maxEntries: 12 });
    try {
      const settled = Promise.resolve(undefined);
      let n = 0;
      const fill = (owner: string) => {
        let added = 0;
        while (cache.hasRoomFor(owner)) cache.put(`k${n++}`, settled, owner), added++;
        return added;
      };
      assert.equal(fill('flooder'), 8, 'its own 2 and the 6 shared');
      assert.equal(cache.hasRoomFor('other-1'), true);
      assert.equal(fill('other-1'), 2, 'its own part');
      assert.equal(fill('other-2'), 2, 'its own part');
      assert.equal(cache.size, 12);

      await settled;
      mock.timers.tick(2_000);
      assert.equal(cache.size, 0, 'swept');
      assert.equal(fill('other-1'), 8, 'the room given back: its part and the shared half');
      assert.equal(fill('flooder'), 2);
      assert.equal(fill('other-2'), 2);
    } finally {
      cache.close();
      mock.timers.reset();
    }
  });
});
