import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deciderSpec, fakeSealedSecret, testUser, totpTokenEnrolled, userRegistered } from '@mfa/testing';
import { domainEvent } from './events.js';
import { CLAIM_COMPLETES_WITHIN_MS, claimRefusal, inventoryState, oathTokenDecider, type ImportedToken, type OathTokenEvent } from './oath-token.js';
import { countedTokens, decideUser, evolveUser, initialUserState, methodsOf, PENDING_TOKEN_LIFETIME_MS, type UserEvent } from './user.js';

const spec = deciderSpec(oathTokenDecider);
const now = new Date('2026-11-30T12:00:00.000Z');
const earlier = new Date(now.getTime() - 60_000);
const token = (tokenId = 'tok-1'): ImportedToken => ({ tokenId, serialNumber: 'SN-1', sealedSecret: fakeSealedSecret(tokenId), digits: 6, period: 60, algorithm: 'SHA1', manufacturer: 'Acme' });
const imported = (jobId = 'job-1', tokenId = 'tok-1') => {
  const { manufacturer, ...rest } = token(tokenId);
  return domainEvent('OathTokenImported', { ...rest, manufacturer: manufacturer!, jobId }, earlier) as OathTokenEvent;
};
const assigned = (userId = 'alice') => domainEvent('OathTokenAssigned', { tokenId: 'tok-1', userId }, earlier) as OathTokenEvent;

describe('hardware token inventory decider', () => {
  it('imports a serial number once; the same job again changes nothing; another job needs replace', () => {
    spec.given([]).when({ type: 'ImportToken', data: { token: token(), jobId: 'job-1', replace: false } }, now).then([imported('job-1')].map((e) => ({ ...e, occurredAt: now.toISOString() })));
    spec.given([imported('job-1')]).when({ type: 'ImportToken', data: { token: token('tok-2'), jobId: 'job-1', replace: false } }, now).thenNothing();
    spec.given([imported('job-1')]).when({ type: 'ImportToken', data: { token: token('tok-2'), jobId: 'job-2', replace: false } }, now).thenThrows('conflict', /already in the inventory/);
    const [replacing] = oathTokenDecider.decide({ type: 'ImportToken', data: { token: token('tok-2'), jobId: 'job-2', replace: true } }, [imported(), assigned()].reduce(oathTokenDecider.evolve, oathTokenDecider.initialState()), now);
    assert.equal(replacing?.type === 'OathTokenImported' && replacing.data.replaced, true);
  });

  it('assigns to one user; another user only when the holder is known not to hold it any more', () => {
    spec.given([]).when({ type: 'AssignToken', data: { userId: 'alice' } }, now).thenThrows('not_found');
    spec.given([imported(), assigned('alice')]).when({ type: 'AssignToken', data: { userId: 'alice' } }, now).thenNothing();
    spec.given([imported(), assigned('alice')]).when({ type: 'AssignToken', data: { userId: 'bob' } }, now).thenThrows('conflict', /another user/);
    spec.given([imported(), assigned('alice')]).when({ type: 'AssignToken', data: { userId: 'bob', takeOver: true } }, now).then([{ type: 'OathTokenAssigned', data: { tokenId: 'tok-1', userId: 'bob' }, occurredAt: now.toISOString() }]);
    // A claim of the holder's own that is too old to be completed is made again, from now.
    spec.given([imported(), assigned('alice')]).when({ type: 'AssignToken', data: { userId: 'alice', renew: true } }, now).then([{ type: 'OathTokenAssigned', data: { tokenId: 'tok-1', userId: 'alice' }, occurredAt: now.toISOString() }]);
  });

  it('gives the token only under the current claim, while it is recent', () => {
    const state = [imported(), assigned('alice')].reduce(oathTokenDecider.evolve, oathTokenDecider.initialState());
    assert.equal(state.assignedAtMs, earlier.getTime());
    const claim = { tokenId: 'tok-1', userId: 'alice', claimedAtMs: earlier.getTime() };
    assert.equal(claimRefusal(state, claim, earlier.getTime() + CLAIM_COMPLETES_WITHIN_MS - 1), undefined);
    assert.match(claimRefusal(state, claim, earlier.getTime() + CLAIM_COMPLETES_WITHIN_MS) ?? '', /took too long/);
    assert.match(claimRefusal(state, { ...claim, userId: 'bob' }, earlier.getTime()) ?? '', /meanwhile/);
    const renewed = oathTokenDecider.evolve(state, domainEvent('OathTokenAssigned', { tokenId: 'tok-1', userId: 'alice' }, now) as OathTokenEvent);
    assert.match(claimRefusal(renewed, claim, now.getTime()) ?? '', /meanwhile/, 'a renewed claim is not the one the give was started under');
  });

  it('takes the token back from a user who lost it only under a claim made before the loss', () => {
    spec.given([imported(), assigned('alice')]).when({ type: 'UnassignToken', data: { tokenId: 'tok-1', userId: 'alice', reason: 'MFA reset', claimedByMs: earlier.getTime() } }, now).then([
      { type: 'OathTokenUnassigned', data: { tokenId: 'tok-1', userId: 'alice', reason: 'MFA reset' }, occurredAt: now.toISOString() },
    ]);
    spec.given([imported(), assigned('alice')]).when({ type: 'UnassignToken', data: { tokenId: 'tok-1', userId: 'alice', reason: 'MFA reset', claimedByMs: earlier.getTime() - 1 } }, now).thenNothing();
  });

  it('unassigns and records activation only for the current holder of the current token', () => {
    spec.given([imported(), assigned('alice')]).when({ type: 'UnassignToken', data: { tokenId: 'tok-1', userId: 'bob', reason: 'x' } }, now).thenNothing();
    spec.given([imported(), assigned('alice')]).when({ type: 'RecordActivation', data: { tokenId: 'old', userId: 'alice', step: 5 } }, now).thenNothing();
    const state = [imported(), assigned('alice'), domainEvent('OathTokenActivated', { tokenId: 'tok-1', userId: 'alice', step: 5 }, now) as OathTokenEvent].reduce(oathTokenDecider.evolve, oathTokenDecider.initialState());
    assert.equal(inventoryState(state), 'active');
    const back = oathTokenDecider.evolve(state, domainEvent('OathTokenUnassigned', { tokenId: 'tok-1', userId: 'alice', reason: 'reset' }, now) as OathTokenEvent);
    assert.equal(inventoryState(back), 'unassigned');
  });
});

describe('user decider: hardware tokens', () => {
  const helga = testUser({ profile: { displayName: 'Helga' } });
  const user = (events: UserEvent[]) => [userRegistered(helga, { occurredAt: earlier.toISOString() }) as UserEvent, ...events].reduce(evolveUser, initialUserState());
  const give = (tokenId: string) => ({ type: 'AssignHardwareToken', data: { ...token(tokenId), serialNumber: `SN-${tokenId}` } }) as const;
  const app = (tokenId: string, at = earlier) => totpTokenEnrolled(helga, { occurredAt: at.toISOString(), data: { tokenId } }) as UserEvent;

  it('counts hardware and app tokens together towards the limit of 5', () => {
    const four = user([app('a1'), app('a2'), app('a3'), app('a4')]);
    const [given] = decideUser(give('h1'), four, now);
    assert.equal(given?.type, 'HardwareTokenAssigned');
    const five = evolveUser(four, given!);
    assert.equal(countedTokens(five, now), 5);
    assert.throws(() => decideUser(give('h2'), five, now), /at most 5 OATH tokens/);
    assert.throws(() => decideUser({ type: 'EnrollTotpToken', data: { tokenId: 'a5', label: 'x', sealedSecret: fakeSealedSecret('a5') } }, five, now), /at most 5 OATH tokens/);
    assert.deepEqual(decideUser(give('h1'), five, now), [], 'given again: nothing');
  });

  it('remembers the hardware tokens a user lost until given back, and refuses one under a claim older than its loss', () => {
    const gave = (state: ReturnType<typeof user>, tokenId: string, at: Date) => evolveUser(state, decideUser(give(tokenId), state, at)[0]!);
    const holding = gave(gave(user([app('a1')]), 'h1', earlier), 'h2', earlier);
    const deleted = evolveUser(holding, domainEvent('TotpTokenDeleted', { tokenId: 'h1' }, earlier) as UserEvent);
    assert.deepEqual(deleted.lostHardware, [{ tokenId: 'h1', serialNumber: 'SN-h1', lostAtMs: earlier.getTime(), how: 'deleted' }]);
    const reset = evolveUser(deleted, domainEvent('UserMfaReset', { userId: helga.userId }, now) as UserEvent);
    assert.deepEqual(reset.lostHardware?.map((t) => [t.tokenId, t.how]), [['h1', 'deleted'], ['h2', 'reset']]);
    const erased = evolveUser(gave(reset, 'h3', now), domainEvent('UserErased', { userId: helga.userId, gen: 1 }, now) as UserEvent);
    assert.deepEqual(erased.lostHardware?.map((t) => [t.tokenId, t.how]), [['h1', 'deleted'], ['h2', 'reset'], ['h3', 'erased']], 'kept through the erasure');
    // Given back under a claim made before the loss: refused; under a later claim: given, and no longer lost.
    assert.throws(() => decideUser({ ...give('h2'), claimedAtMs: now.getTime() }, reset, now), /taken from the user after it was assigned/);
    const later = new Date(now.getTime() + 1);
    const again = evolveUser(reset, decideUser({ ...give('h2'), claimedAtMs: later.getTime() }, reset, later)[0]!);
    assert.deepEqual(again.lostHardware?.map((t) => t.tokenId), ['h1']);
  });

  it('keeps a pending hardware token however long it waits, unlike an abandoned app enrolment', () => {
    const later = new Date(now.getTime() + 10 * PENDING_TOKEN_LIFETIME_MS);
    const state = evolveUser(user([app('a1')]), decideUser(give('h1'), user([app('a1')]), now)[0]!);
    assert.equal(countedTokens(state, later), 1);
    assert.deepEqual(methodsOf(state), [], 'pending: no method yet');
  });
});

describe('hardware token inventory decider: secret sealed again (master key rotation)', () => {
  const reseal = (from: string) => ({ type: 'ResealToken', data: { tokenId: 'tok-1', from, sealedSecret: fakeSealedSecret('new') } }) as const;

  it('given the token as read, when sealed again, then OathTokenResealed, and the state holds the new value; a token replaced since keeps its own', () => {
    spec.given([imported(), assigned()]).when(reseal(fakeSealedSecret('tok-1')), now).then([domainEvent('OathTokenResealed', { tokenId: 'tok-1', sealedSecret: fakeSealedSecret('new') }, now) as OathTokenEvent]);
    const state = [imported(), assigned(), ...oathTokenDecider.decide(reseal(fakeSealedSecret('tok-1')), [imported(), assigned()].reduce(oathTokenDecider.evolve, oathTokenDecider.initialState()), now)].reduce(oathTokenDecider.evolve, oathTokenDecider.initialState());
    assert.deepEqual([state.sealedSecret, state.userId, state.tokenId], [fakeSealedSecret('new'), 'alice', 'tok-1']);
    spec.given([imported('job-1', 'tok-2')]).when(reseal(fakeSealedSecret('tok-1')), now).thenNothing();
    spec.given([imported()]).when(reseal(fakeSealedSecret('other')), now).thenNothing();
    spec.given([]).when(reseal(fakeSealedSecret('tok-1')), now).thenNothing();
  });
});
