import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, nextDeliveryStep, type DeliveryPolicy, type DeliveryStep, type FailedAttempt } from './delivery-policy.js';

const policy: DeliveryPolicy = { providers: ['twilio', 'console'], attemptsPerProvider: 3, retryBaseMs: 200 };
const now = new Date('2025-01-01T12:00:00Z');
const inFiveMinutes = new Date(now.getTime() + 5 * 60_000);

const transient = (provider: string): FailedAttempt => ({ provider, transient: true, error: `${provider} 503` });
const permanent = (provider: string): FailedAttempt => ({ provider, transient: false, error: `${provider} 400 error 21211` });

/** given the attempts so far, when asked what next (at `now`, jitter 0.5 = no spread), then `expected`. */
function given(history: FailedAttempt[], options: { policy?: DeliveryPolicy; now?: Date; expiresAt?: Date; jitter?: number } = {}) {
  return {
    then(expected: DeliveryStep) {
      const step = nextDeliveryStep(options.policy ?? policy, history, {
        now: options.now ?? now,
        expiresAt: options.expiresAt ?? inFiveMinutes,
        jitter: options.jitter ?? 0.5,
      });
      assert.deepEqual(step, expected);
    },
  };
}

describe('delivery policy', () => {
  it('sends through the first provider at once when nothing was tried', () => {
    given([]).then({ type: 'Send', provider: 'twilio', attempt: 1, delayMs: 0 });
  });

  it('retries the same provider after the base delay on a first transient error', () => {
    given([transient('twilio')]).then({ type: 'Send', provider: 'twilio', attempt: 2, delayMs: 200 });
  });

  it('doubles the delay on the next transient error', () => {
    given([transient('twilio'), transient('twilio')]).then({ type: 'Send', provider: 'twilio', attempt: 3, delayMs: 400 });
  });

  it('fails over at once when the attempts of a provider are used up', () => {
    given([transient('twilio'), transient('twilio'), transient('twilio')]).then({
      type: 'Send',
      provider: 'console',
      attempt: 1,
      delayMs: 0,
    });
  });

  it('fails over at once on a permanent error, without retrying', () => {
    given([permanent('twilio')]).then({ type: 'Send', provider: 'console', attempt: 1, delayMs: 0 });
  });

  it('fails over after a permanent error that follows transient ones', () => {
    given([transient('twilio'), permanent('twilio')]).then({ type: 'Send', provider: 'console', attempt: 1, delayMs: 0 });
  });

  it('counts attempts per provider: the next provider gets its own retries', () => {
    given([permanent('twilio'), transient('console')]).then({ type: 'Send', provider: 'console', attempt: 2, delayMs: 200 });
  });

  it('gives up when the last provider fails permanently', () => {
    given([permanent('twilio'), permanent('console')]).then({ type: 'GiveUp', reason: 'providers_exhausted' });
  });

  it('gives up when the last provider has used up its attempts', () => {
    const only: DeliveryPolicy = { ...policy, providers: ['twilio'] };
    given([transient('twilio'), transient('twilio'), transient('twilio')], { policy: only }).then({
      type: 'GiveUp',
      reason: 'providers_exhausted',
    });
  });

  it('with one attempt per provider, a transient error fails over', () => {
    given([transient('twilio')], { policy: { ...policy, attemptsPerProvider: 1 } }).then({
      type: 'Send',
      provider: 'console',
      attempt: 1,
      delayMs: 0,
    });
  });

  it('gives up before the first attempt when the challenge has already expired', () => {
    given([], { expiresAt: now }).then({ type: 'GiveUp', reason: 'expired' });
  });

  it('gives up rather than retry when the back-off would end after the expiry', () => {
    given([transient('twilio')], { expiresAt: new Date(now.getTime() + 150) }).then({ type: 'GiveUp', reason: 'expired' });
  });

  it('retries when the back-off ends before the expiry', () => {
    given([transient('twilio')], { expiresAt: new Date(now.getTime() + 250) }).then({
      type: 'Send',
      provider: 'twilio',
      attempt: 2,
      delayMs: 200,
    });
  });

  it('gives up with no providers configured', () => {
    given([], { policy: { ...policy, providers: [] } }).then({ type: 'GiveUp', reason: 'providers_exhausted' });
  });

  it('refuses a history that names a provider outside the policy (broken invariant)', () => {
    assert.throws(() => nextDeliveryStep(policy, [transient('nexmo')], { now, expiresAt: inFiveMinutes, jitter: 0.5 }), /outside the policy/);
  });
});

describe('back-off', () => {
  it('spreads each delay by ±20 % around base · 2^(retry − 1)', () => {
    assert.equal(backoffMs(200, 1, 0), 160);
    assert.equal(backoffMs(200, 1, 0.5), 200);
    assert.equal(backoffMs(200, 1, 0.999999), 240);
    assert.equal(backoffMs(200, 2, 0.5), 400);
    assert.equal(backoffMs(200, 3, 0.5), 800);
  });

  it('clamps a jitter outside [0, 1]', () => {
    assert.equal(backoffMs(200, 1, -3), 160);
    assert.equal(backoffMs(200, 1, 7), 240);
  });

  it('is zero with a zero base', () => {
    assert.equal(backoffMs(0, 4, 0.3), 0);
  });

  it('waits out a provider\'s Retry-After when it is longer than the back-off', () => {
    given([{ ...transient('twilio'), retryAfterMs: 1_500 }]).then({ type: 'Send', provider: 'twilio', attempt: 2, delayMs: 1_500 });
    given([{ ...transient('twilio'), retryAfterMs: 50 }]).then({ type: 'Send', provider: 'twilio', attempt: 2, delayMs: 200 });
  });

  it('fails over at once when the Retry-After ends at or after the expiry, and gives up on the last provider', () => {
    given([{ ...transient('twilio'), retryAfterMs: 5 * 60_000 }]).then({ type: 'Send', provider: 'console', attempt: 1, delayMs: 0 });
    given([transient('twilio'), transient('twilio'), transient('twilio'), { ...transient('console'), retryAfterMs: 10 * 60_000 }]).then({ type: 'GiveUp', reason: 'expired' });
  });
});

