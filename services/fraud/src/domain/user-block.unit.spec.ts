import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError } from '@mfa/contracts';
import { BLOCK_DAYS, decideBlock, initialBlockState, type BlockState } from './user-block.js';

const now = new Date('2026-11-30T10:00:00.000Z');
const blockedUntil = (ms: number): BlockState => ({ blocked: true, until: ms, reason: 'stolen phone' });
const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return (error as ContractError).code;
  }
  return undefined;
};

describe('user block decider', () => {
  it('given a user not blocked, when blocked, then blocked for 90 days with the reason, source and actor', () => {
    const [decided] = decideBlock({ type: 'Block', data: { userId: 'u', reason: 'stolen phone', source: 'admin', by: { clientId: 'c1' } } }, initialBlockState(), now);
    assert.deepEqual(decided, {
      event: { type: 'UserBlocked', data: { userId: 'u', reason: 'stolen phone', until: new Date(now.getTime() + BLOCK_DAYS * 86_400_000).toISOString(), source: 'admin', by: { clientId: 'c1' } } },
      at: now,
    });
  });

  it('given a block in force, when blocked again, then conflict; given one that ended, then blocked anew', () => {
    const block = { type: 'Block', data: { userId: 'u', reason: 'again', source: 'admin' } } as const;
    assert.equal(codeOf(() => decideBlock(block, blockedUntil(now.getTime() + 1), now)), 'conflict');
    assert.equal(decideBlock(block, blockedUntil(now.getTime() - 1), now)[0]!.event.type, 'UserBlocked');
  });

  it('given a block in force or lockout counters, when unblocked, then UserUnblocked with the reason; given neither, then conflict', () => {
    const unblock = (lockedOut: boolean) => ({ type: 'Unblock', data: { userId: 'u', reason: 'help desk', lockedOut } }) as const;
    assert.deepEqual(decideBlock(unblock(false), blockedUntil(now.getTime() + 1), now)[0]!.event, { type: 'UserUnblocked', data: { userId: 'u', reason: 'help desk' } });
    assert.equal(decideBlock(unblock(true), initialBlockState(), now)[0]!.event.type, 'UserUnblocked');
    assert.equal(codeOf(() => decideBlock(unblock(false), initialBlockState(), now)), 'conflict');
    assert.equal(codeOf(() => decideBlock(unblock(false), blockedUntil(now.getTime() - 1), now)), 'conflict');
  });

  it('given a block whose end has passed, when expired, then an automatic unblock dated at the end; otherwise nothing', () => {
    const end = now.getTime() - 60_000;
    assert.deepEqual(decideBlock({ type: 'Expire', data: { userId: 'u' } }, blockedUntil(end), now), [
      { event: { type: 'UserUnblocked', data: { userId: 'u', automatic: true } }, at: new Date(end) },
    ]);
    assert.deepEqual(decideBlock({ type: 'Expire', data: { userId: 'u' } }, blockedUntil(now.getTime() + 1), now), []);
    assert.deepEqual(decideBlock({ type: 'Expire', data: { userId: 'u' } }, initialBlockState(), now), []);
  });
});
