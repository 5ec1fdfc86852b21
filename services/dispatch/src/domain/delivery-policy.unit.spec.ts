import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, nextDeliveryStep, type DeliveryPolicy, type DeliveryStep, type FailedAttempt } from './delivery-policy.js';

const policy: DeliveryPolicy = { providers: ['twilio', 'console'], attemptsPerProvider: 3, retryBaseMs: 200, minLifetimeAfterFailureMs: 0 };
const now = new Date('2025-01-01T12:00:00Z');
const inFiveMinutes = new Date(now.getTime() + 5 * 60_000);

const transient = (provider: string): FailedAttempt => ({ provider, transient: true, error: `${provider} 503` });
const permanent = (provider: string): FailedAttempt => ({ provider, transient: false, error: `${provider} 400 error 21211` });
/** Recorded as circuit breakers record an open circuit: a permanent failure, with no call made. */
const skipped = (provider: string): FailedAttempt => ({ provider, transient: false, error: 'circuit open', skipped: true });

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

describe('delivery policy: the lifetime an attempt after a failure must leave (minLifetimeAfterFailureMs)', () => {
  /** As an SMS's: 30 s to receive and type the code; smpp between twilio and console. */
  const margin: DeliveryPolicy = { providers: ['twilio', 'smpp', 'console'], attemptsPerProvider: 3, retryBaseMs: 200, minLifetimeAfterFailureMs: 30_000 };
  const left = (ms: number) => new Date(now.getTime() + ms);
  const cases: Array<{ when: string; history: FailedAttempt[]; expiresAt: Date; policy?: DeliveryPolicy; then: DeliveryStep }> = [
    // The first attempt goes whatever is left.
    { when: 'the first attempt, 10 s left', history: [], expiresAt: left(10_000), then: { type: 'Send', provider: 'twilio', attempt: 1, delayMs: 0 } },
    { when: 'the first attempt, 1 ms left', history: [], expiresAt: left(1), then: { type: 'Send', provider: 'twilio', attempt: 1, delayMs: 0 } },
    { when: 'the first attempt, expired', history: [], expiresAt: now, then: { type: 'GiveUp', reason: 'expired' } },
    // A retry needs the margin after its back-off.
    { when: 'a retry, 25 s left', history: [transient('twilio')], expiresAt: left(25_000), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    { when: 'a retry ending exactly at the margin', history: [transient('twilio')], expiresAt: left(30_200), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    { when: 'a retry ending 1 ms before the margin', history: [transient('twilio')], expiresAt: left(30_201), then: { type: 'Send', provider: 'twilio', attempt: 2, delayMs: 200 } },
    { when: 'a retry whose back-off outlasts the challenge, not yet expired', history: [transient('twilio')], expiresAt: left(100), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    { when: 'a retry, the challenge expired during the failed attempt', history: [transient('twilio')], expiresAt: now, then: { type: 'GiveUp', reason: 'expired' } },
    // A failover needs the margin too.
    { when: 'a failover after a permanent error, 25 s left', history: [permanent('twilio')], expiresAt: left(25_000), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    { when: 'a failover after used-up attempts, 25 s left', history: [transient('twilio'), transient('twilio'), transient('twilio')], expiresAt: left(25_000), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    { when: 'a failover after a permanent error, 31 s left', history: [permanent('twilio')], expiresAt: left(31_000), then: { type: 'Send', provider: 'smpp', attempt: 1, delayMs: 0 } },
    // A circuit-open skip is no call: the next provider's send is still the first attempt.
    { when: 'the next provider after a circuit-open skip, 10 s left', history: [skipped('twilio')], expiresAt: left(10_000), then: { type: 'Send', provider: 'smpp', attempt: 1, delayMs: 0 } },
    { when: 'the next provider after two circuit-open skips, 10 s left', history: [skipped('twilio'), skipped('smpp')], expiresAt: left(10_000), then: { type: 'Send', provider: 'console', attempt: 1, delayMs: 0 } },
    { when: 'a retry of the provider called after a skip, 25 s left', history: [skipped('twilio'), transient('smpp')], expiresAt: left(25_000), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    { when: 'the next provider after a call and then a skip, 25 s left', history: [permanent('twilio'), skipped('smpp')], expiresAt: left(25_000), then: { type: 'GiveUp', reason: 'too_late_after_failure' } },
    // Retry-After: waited out only when the margin is left after it; otherwise the next provider at once.
    { when: 'a Retry-After of 6 s, 60 s left', history: [{ ...transient('twilio'), retryAfterMs: 6_000 }], expiresAt: left(60_000), then: { type: 'Send', provider: 'twilio', attempt: 2, delayMs: 6_000 } },
    { when: 'a Retry-After of 6 s, 35 s left', history: [{ ...transient('twilio'), retryAfterMs: 6_000 }], expiresAt: left(35_000), then: { type: 'Send', provider: 'smpp', attempt: 1, delayMs: 0 } },
    {
      when: 'a Retry-After of 6 s, 35 s left, on the last provider',
      history: [{ ...transient('twilio'), retryAfterMs: 6_000 }],
      expiresAt: left(35_000),
      policy: { ...margin, providers: ['twilio'] },
      then: { type: 'GiveUp', reason: 'too_late_after_failure' },
    },
    {
      when: 'a Retry-After of 6 s, 25 s left, on a call (a 20 s margin)',
      history: [{ ...transient('twilio'), retryAfterMs: 6_000 }],
      expiresAt: left(25_000),
      policy: { ...margin, providers: ['twilio'], minLifetimeAfterFailureMs: 20_000 },
      then: { type: 'GiveUp', reason: 'too_late_after_failure' },
    },
    {
      when: 'a Retry-After past the expiry on the last provider, expired',
      history: [{ ...transient('twilio'), retryAfterMs: 60_000 }],
      expiresAt: now,
      policy: { ...margin, providers: ['twilio'] },
      then: { type: 'GiveUp', reason: 'expired' },
    },
    // Without a margin (push), a failure changes nothing: the expiry alone counts.
    { when: 'no margin: a retry, 1 s left', history: [transient('twilio')], expiresAt: left(1_000), policy: { ...margin, minLifetimeAfterFailureMs: 0 }, then: { type: 'Send', provider: 'twilio', attempt: 2, delayMs: 200 } },
    { when: 'no margin: a retry whose back-off outlasts the challenge', history: [transient('twilio')], expiresAt: left(100), policy: { ...margin, minLifetimeAfterFailureMs: 0 }, then: { type: 'GiveUp', reason: 'expired' } },
  ];
  for (const c of cases) {
    it(`${c.when}: ${c.then.type === 'Send' ? `send through ${c.then.provider} (attempt ${c.then.attempt}, after ${c.then.delayMs} ms)` : `give up (${c.then.reason})`}`, () => {
      given(c.history, { policy: c.policy ?? margin, expiresAt: c.expiresAt }).then(c.then);
    });
  }
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

