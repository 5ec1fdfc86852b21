import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError, type FraudUserEvent } from '@mfa/contracts';
import { BLOCK_DAYS, decideBlock, fraudBlockUntil, initialBlockState, type BlockState } from './user-block.js';

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
    assert.equal(decideBlock(block, blockedUntil(now.getTime() - 1), now).at(-1)!.event.type, 'UserBlocked');
  });

  it('given a block that ended but whose automatic unblock is not recorded yet, when blocked or unblocked, then that automatic unblock, dated at its end, comes first', () => {
    const end = now.getTime() - 3_600_000;
    const autoUnblock = { event: { type: 'UserUnblocked', data: { userId: 'u', automatic: true } }, at: new Date(end) };
    const block = decideBlock({ type: 'Block', data: { userId: 'u', reason: 'again', source: 'admin' } }, blockedUntil(end), now);
    assert.deepEqual(block.map((d) => [d.event.type, d.at]), [['UserUnblocked', new Date(end)], ['UserBlocked', now]]);
    assert.deepEqual(block[0], autoUnblock);
    const forAlert = decideBlock({ type: 'BlockForAlert', data: { userId: 'u', alertId: 'a1', until: now.getTime() + 1_000, since: [] } }, blockedUntil(end), now);
    assert.deepEqual(forAlert.map((d) => d.event.type), ['UserUnblocked', 'UserBlocked']);
    assert.deepEqual(forAlert[0], autoUnblock);
    const unblock = decideBlock({ type: 'Unblock', data: { userId: 'u', reason: 'help desk', lockedOut: true } }, blockedUntil(end), now);
    assert.deepEqual(unblock.map((d) => d.event.type), ['UserUnblocked', 'UserUnblocked']);
    assert.deepEqual(unblock[0], autoUnblock);
    // A user never blocked, or whose end is recorded: nothing comes first.
    assert.equal(decideBlock({ type: 'Block', data: { userId: 'u', reason: 'x', source: 'admin' } }, initialBlockState(), now).length, 1);
  });

  it("given a fraud alert, when its auto-block is decided, then the user is blocked until the alert's end once, unless a block stands, its end passed, or an administrator unblocked since", () => {
    const until = now.getTime() + BLOCK_DAYS * 86_400_000;
    const forAlert = (since: FraudUserEvent[], alertUntil = until) => ({ type: 'BlockForAlert', data: { userId: 'u', alertId: 'a1', until: alertUntil, by: { clientId: 'idp' }, since } }) as const;
    const event = (type: 'UserBlocked' | 'UserUnblocked', data: Record<string, unknown>) => ({ type, data: { userId: 'u', ...data } }) as unknown as FraudUserEvent;
    assert.deepEqual(decideBlock(forAlert([]), initialBlockState(), now), [
      {
        event: { type: 'UserBlocked', data: { userId: 'u', reason: 'fraud reported', until: new Date(until).toISOString(), source: 'fraud_report', by: { clientId: 'idp' }, alertId: 'a1' } },
        at: now,
      },
    ]);
    // Once: the alert's block recorded since (and lifted since by anyone) is not made again.
    assert.deepEqual(decideBlock(forAlert([event('UserBlocked', { alertId: 'a1', until: new Date(until).toISOString() }), event('UserUnblocked', { reason: 'help desk' })]), initialBlockState(), now), []);
    // An administrator who lifted a block after the report has the last word: the block in force
    // before the alert (the one it recorded), or one made since.
    const at = (e: FraudUserEvent, occurredAt: Date) => ({ ...e, occurredAt: occurredAt.toISOString() }) as FraudUserEvent;
    const inForce = at(event('UserBlocked', { until: new Date(until).toISOString() }), new Date(now.getTime() - 60_000));
    const adminUnblock = at(event('UserUnblocked', { reason: 'help desk' }), new Date(now.getTime() - 1_000));
    assert.deepEqual(decideBlock({ ...forAlert([adminUnblock]), data: { ...forAlert([adminUnblock]).data, before: inForce } }, initialBlockState(), now), []);
    assert.deepEqual(decideBlock(forAlert([inForce, adminUnblock]), initialBlockState(), now), []);
    // One that only cleared the lockouts of a user not blocked lifted nothing of the alert's: its block still comes.
    assert.equal(decideBlock(forAlert([adminUnblock]), initialBlockState(), now).length, 1);
    const ended = at(event('UserBlocked', { until: new Date(now.getTime() - 30_000).toISOString() }), new Date(now.getTime() - 60_000));
    assert.equal(decideBlock({ ...forAlert([adminUnblock]), data: { ...forAlert([adminUnblock]).data, before: ended } }, initialBlockState(), now).length, 1);
    assert.equal(decideBlock(forAlert([at(event('UserUnblocked', { automatic: true }), new Date(now.getTime() - 2_000)), adminUnblock]), initialBlockState(), now).length, 1);
    // An automatic unblock since says nothing of the kind; another alert's block neither.
    assert.equal(decideBlock(forAlert([event('UserUnblocked', { automatic: true }), event('UserBlocked', { alertId: 'a0', until: now.toISOString() })]), initialBlockState(), now).length, 1);
    // A block in force stands; a block the alert named that has ended is not made again.
    assert.deepEqual(decideBlock(forAlert([]), blockedUntil(now.getTime() + 1), now), []);
    assert.deepEqual(decideBlock(forAlert([], now.getTime()), initialBlockState(), now), []);
    // What a report records: the block in force, or 90 days from the report.
    assert.equal(fraudBlockUntil(blockedUntil(now.getTime() + 5), now), now.getTime() + 5);
    assert.equal(fraudBlockUntil(blockedUntil(now.getTime() - 5), now), until);
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
