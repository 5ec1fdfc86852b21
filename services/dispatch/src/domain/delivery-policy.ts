/**
 * What to do next with an SMS (or a push to one device, or a call), given what has happened so far: retry the same provider after a
 * back-off, or after its Retry-After (transient error, attempts left), fail over to the next provider in the configured
 * order (permanent error or attempts used up), or give up (no provider left, or the challenge
 * expires before the next attempt could be made). Pure: time and randomness are passed in.
 */
export interface DeliveryPolicy {
  /** Provider names in failover order. */
  readonly providers: readonly string[];
  /** Attempts per provider on transient errors (SMS_SEND_ATTEMPTS). */
  readonly attemptsPerProvider: number;
  /** First back-off (SMS_RETRY_BASE_MS); doubles on each further retry. */
  readonly retryBaseMs: number;
}

export interface FailedAttempt {
  readonly provider: string;
  readonly transient: boolean;
  readonly error: string;
  /** How long the provider asked to be left alone (Retry-After of a 429 or 503), ms. */
  readonly retryAfterMs?: number | undefined;
}

interface DeliveryContext {
  readonly now: Date;
  readonly expiresAt: Date;
  /** Uniform in [0, 1): spreads retries of many messages so they do not hit a provider together. */
  readonly jitter: number;
}

export type DeliveryStep =
  | { readonly type: 'Send'; readonly provider: string; /** 1-based, per provider */ readonly attempt: number; readonly delayMs: number }
  | { readonly type: 'GiveUp'; readonly reason: 'providers_exhausted' | 'expired' };

/** ±20 % around base · 2^(retry − 1). */
export function backoffMs(retryBaseMs: number, retry: number, jitter: number): number {
  const nominal = retryBaseMs * 2 ** (retry - 1);
  return Math.round(nominal * (0.8 + 0.4 * Math.min(Math.max(jitter, 0), 1)));
}

export function nextDeliveryStep(policy: DeliveryPolicy, history: readonly FailedAttempt[], context: DeliveryContext): DeliveryStep {
  const first = policy.providers[0];
  if (first === undefined) return { type: 'GiveUp', reason: 'providers_exhausted' };
  const last = history.at(-1);
  let step: DeliveryStep;
  if (last === undefined) {
    step = { type: 'Send', provider: first, attempt: 1, delayMs: 0 };
  } else {
    const index = policy.providers.indexOf(last.provider);
    if (index < 0) throw new Error(`attempt history names a provider outside the policy: ${last.provider}`);
    const attemptsOnLast = history.filter((h) => h.provider === last.provider).length;
    // A provider's Retry-After is waited out, never cut short by our back-off; one that asks to wait
    // past the expiry is left for the next provider instead of giving up on the code.
    const delayMs = Math.max(backoffMs(policy.retryBaseMs, attemptsOnLast, context.jitter), last.retryAfterMs ?? 0);
    const waitable = last.retryAfterMs === undefined || context.now.getTime() + delayMs < context.expiresAt.getTime();
    if (last.transient && attemptsOnLast < policy.attemptsPerProvider && waitable) {
      step = { type: 'Send', provider: last.provider, attempt: attemptsOnLast + 1, delayMs };
    } else {
      const next = policy.providers[index + 1];
      step = next === undefined ? { type: 'GiveUp', reason: last.transient && !waitable ? 'expired' : 'providers_exhausted' } : { type: 'Send', provider: next, attempt: 1, delayMs: 0 };
    }
  }
  // A code that arrives after its challenge expired is useless and costs money: stop instead.
  if (step.type === 'Send' && context.now.getTime() + step.delayMs >= context.expiresAt.getTime()) {
    return { type: 'GiveUp', reason: 'expired' };
  }
  return step;
}
