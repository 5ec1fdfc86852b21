/**
 * What to do next with an SMS (or a push to one device, or a call), given what has happened so far: retry the same provider after a
 * back-off, or after its Retry-After (transient error, attempts left), fail over to the next provider in the configured
 * order (permanent error or attempts used up), or give up (no provider left, the challenge
 * expires before the next attempt could be made, or, once a provider was called and failed, the
 * next attempt would leave the user too little of the challenge to use what it sends). Pure: time
 * and randomness are passed in.
 */
export interface DeliveryPolicy {
  /** Provider names in failover order. */
  readonly providers: readonly string[];
  /** Attempts per provider on transient errors (SMS_SEND_ATTEMPTS). */
  readonly attemptsPerProvider: number;
  /** First back-off (SMS_RETRY_BASE_MS); doubles on each further retry. */
  readonly retryBaseMs: number;
  /**
   * The least of the challenge's lifetime an attempt made after a provider was called and failed
   * (a retry after a back-off or a Retry-After, or the next provider) must leave, ms: a code sent,
   * or a call placed, later than the first attempt would have been still has to reach the user and
   * be used before the challenge expires. The first attempt is made whatever is left (a tenant may
   * give challenges 30 s; a start picked up late still gets its one try), and so is the first one
   * after providers that were only skipped (`skipped`): nothing has been tried yet. 0: every
   * attempt is made while the challenge has not expired.
   */
  readonly minLifetimeAfterFailureMs: number;
}

export interface FailedAttempt {
  readonly provider: string;
  readonly transient: boolean;
  readonly error: string;
  /** How long the provider asked to be left alone (Retry-After of a 429 or 503), ms. */
  readonly retryAfterMs?: number | undefined;
  /**
   * The provider was not called at all (its circuit breaker is open: CIRCUIT_OPEN): no time went by
   * on it, so the attempt after it is still the first (minLifetimeAfterFailureMs does not apply).
   */
  readonly skipped?: true | undefined;
}

interface DeliveryContext {
  readonly now: Date;
  readonly expiresAt: Date;
  /** Uniform in [0, 1): spreads retries of many messages so they do not hit a provider together. */
  readonly jitter: number;
}

export type DeliveryStep =
  | { readonly type: 'Send'; readonly provider: string; /** 1-based, per provider */ readonly attempt: number; readonly delayMs: number }
  | { readonly type: 'GiveUp'; readonly reason: GiveUpReason };

/**
 * Why nothing more is tried: `providers_exhausted`, every provider failed (or none is configured);
 * `expired`, the challenge expires before the next attempt could be made (or already has);
 * `too_late_after_failure`, a provider was called and failed, and the next attempt would leave
 * less than `minLifetimeAfterFailureMs` of the challenge, which has not expired yet.
 */
export type GiveUpReason = 'providers_exhausted' | 'expired' | 'too_late_after_failure';

/** ±20 % around base · 2^(retry − 1). */
export function backoffMs(retryBaseMs: number, retry: number, jitter: number): number {
  const nominal = retryBaseMs * 2 ** (retry - 1);
  return Math.round(nominal * (0.8 + 0.4 * Math.min(Math.max(jitter, 0), 1)));
}

export function nextDeliveryStep(policy: DeliveryPolicy, history: readonly FailedAttempt[], context: DeliveryContext): DeliveryStep {
  const first = policy.providers[0];
  if (first === undefined) return { type: 'GiveUp', reason: 'providers_exhausted' };
  const now = context.now.getTime();
  const expiresAt = context.expiresAt.getTime();
  // Once a provider was called and failed, whatever is sent next arrives later than the first
  // attempt's would have: it must leave the user the policy's margin. Skipped providers took no time.
  const afterFailure = policy.minLifetimeAfterFailureMs > 0 && history.some((h) => !h.skipped);
  const usableUntil = afterFailure ? expiresAt - policy.minLifetimeAfterFailureMs : expiresAt;
  // No time for the next attempt: too late to be used while the challenge still runs (the margin
  // is what stops it), expired otherwise.
  const tooLate: DeliveryStep = { type: 'GiveUp', reason: afterFailure && now < expiresAt ? 'too_late_after_failure' : 'expired' };
  const last = history.at(-1);
  let step: DeliveryStep;
  if (last === undefined) {
    step = { type: 'Send', provider: first, attempt: 1, delayMs: 0 };
  } else {
    const index = policy.providers.indexOf(last.provider);
    if (index < 0) throw new Error(`attempt history names a provider outside the policy: ${last.provider}`);
    const attemptsOnLast = history.filter((h) => h.provider === last.provider).length;
    // A provider's Retry-After is waited out, never cut short by our back-off; one that asks to wait
    // past the time left (the expiry, less the margin after a failure) is left for the next provider
    // instead of giving up on the code.
    const delayMs = Math.max(backoffMs(policy.retryBaseMs, attemptsOnLast, context.jitter), last.retryAfterMs ?? 0);
    const waitable = last.retryAfterMs === undefined || now + delayMs < usableUntil;
    if (last.transient && attemptsOnLast < policy.attemptsPerProvider && waitable) {
      step = { type: 'Send', provider: last.provider, attempt: attemptsOnLast + 1, delayMs };
    } else {
      const next = policy.providers[index + 1];
      if (next === undefined) return last.transient && !waitable ? tooLate : { type: 'GiveUp', reason: 'providers_exhausted' };
      step = { type: 'Send', provider: next, attempt: 1, delayMs: 0 };
    }
  }
  // A code that arrives after its challenge expired, or too late to be used, is useless and costs
  // money: stop instead.
  if (now + step.delayMs >= usableUntil) return tooLate;
  return step;
}
