import CircuitBreaker from 'opossum';
import { gauge, counter } from '@mfa/telemetry';
import type { HealthCheck } from '@mfa/service-kit';
import { SmsProviderError, type SmsMessage, type SmsSendResult } from './sms/sms-provider.js';

const state = gauge('mfa_provider_circuit_state', 'Circuit breaker of each provider (SMS, push): 0 closed, 1 half-open (probing), 2 open (skipped)', ['provider']);
const transitions = counter('mfa_provider_circuit_transitions_total', 'Circuit breaker state changes per provider (SMS, push)', ['provider', 'to']);

export interface BreakerPolicy {
  /** Failures (transient errors and timeouts) in percent of the calls in the rolling window that open the circuit. */
  errorThresholdPercentage: number;
  /** Calls in the window before the percentage counts (a single failure never opens it). */
  volumeThreshold: number;
  /** Seconds an open circuit waits before letting one probe through (half-open). */
  resetSeconds: number;
  /** The rolling window, seconds. */
  windowSeconds: number;
}

/** The circuit is open: the provider is skipped, the next one tried at once. */
export const CIRCUIT_OPEN = 'circuit open: the provider failed too often lately and is skipped';

/** Anything that sends through a vendor: an SMS provider, a push provider. */
export interface BreakerTarget<M, R> {
  readonly name: string;
  send(message: M): Promise<R>;
  /**
   * Throws the provider's permanent error for a message it would refuse without calling the
   * vendor (an APNs device token that is not hex): checked before the breaker, so such a message
   * is no call of the vendor's at all (in half-open, neither a probe that closes the circuit nor
   * one that opens it again for everyone because of one device).
   */
  refuseUnsendable?(message: M): void;
}

/** What differs between the kinds of provider behind breakers. */
export interface BreakerKind {
  /** The name of the /health check. */
  readonly check: string;
  /** What a call to an open circuit throws: the kind's provider error, permanent for this message. */
  circuitOpen(provider: string): Error;
}

export const SMS_BREAKERS: BreakerKind = {
  check: 'sms_providers',
  circuitOpen: (provider) => new SmsProviderError(CIRCUIT_OPEN, { provider, transient: false }),
};

/** The vendor answered, asking us to slow down (HTTP 429, an SMSC's ESME_RTHROTTLED): our rate, not its health. */
function rateLimited(error: unknown): boolean {
  const { status, code } = (error ?? {}) as { status?: unknown; code?: unknown };
  return status === 429 || code === 'ESME_RTHROTTLED';
}

/**
 * The vendor's own answer to this request made the error (the provider errors' `vendorAnswered`):
 * not merely an error carrying a vendor-style code or status, which errors made here may carry too
 * (APNs' BadDeviceToken for a token that is not hex), nor an answer of another service (FCM's
 * OAuth2 token endpoint).
 */
function answeredByVendor(error: unknown): boolean {
  return (error as { vendorAnswered?: unknown } | undefined)?.vendorAnswered === true;
}

/**
 * A circuit breaker per provider (opossum): transient failures (5xx, network errors, calls that
 * outlast the provider's timeout) in the rolling window open it, and while it is open the provider
 * is not called at all: the delivery fails over to the next one at once (or, for push, gives the
 * device up to polling), so users do not wait for a provider that is down. After `resetSeconds`
 * one call probes it (half-open): success closes the circuit, failure opens it again.
 * Not counted (opossum counts them as successes): permanent errors (an invalid number, a push
 * token the vendor no longer knows), which are about the message, and rate limits (429), which
 * are about our pace (the send retries after the vendor's Retry-After; one account's limit must
 * not turn every message away from the provider). A probe proves health only by an answer of the
 * vendor's own (`vendorAnswered`): any other error (a provider token that cannot be signed, an
 * OAuth2 token endpoint's refusal) is a failed probe. A message the provider refuses before any
 * call (`refuseUnsendable`) never reaches the breaker. Provider errors carry `transient`,
 * `vendorAnswered`, `status` and `code`. State per instance, in metrics and /health.
 */
export class ProviderBreakers<M = SmsMessage, R = SmsSendResult> {
  private readonly breakers = new Map<string, CircuitBreaker<[M], R>>();

  constructor(
    providers: readonly BreakerTarget<M, R>[],
    policy: BreakerPolicy,
    private readonly kind: BreakerKind = SMS_BREAKERS,
  ) {
    for (const provider of providers) {
      const breaker: CircuitBreaker<[M], R> = new CircuitBreaker((message: M) => provider.send(message), {
        timeout: false,
        errorThresholdPercentage: policy.errorThresholdPercentage,
        volumeThreshold: policy.volumeThreshold,
        resetTimeout: policy.resetSeconds * 1000,
        rollingCountTimeout: policy.windowSeconds * 1000,
        errorFilter: (error: unknown) => {
          // Filtered errors count as successes, and a success closes a half-open circuit: in a probe, only the vendor's own answers.
          if (breaker.halfOpen && !answeredByVendor(error)) return false;
          if (rateLimited(error)) return true;
          // A permanent error is about the message, not the provider.
          return (error as { transient?: unknown } | undefined)?.transient === false;
        },
      });
      state.set({ provider: provider.name }, 0);
      breaker.on('open', () => this.moved(provider.name, 2, 'open'));
      breaker.on('halfOpen', () => this.moved(provider.name, 1, 'half_open'));
      breaker.on('close', () => this.moved(provider.name, 0, 'closed'));
      this.breakers.set(provider.name, breaker);
    }
  }

  private moved(provider: string, value: number, to: string): void {
    state.set({ provider }, value);
    transitions.inc({ provider, to });
  }

  /** Sends through the provider's breaker; an open circuit is a permanent failure for this message (fail over). */
  async send(provider: BreakerTarget<M, R>, message: M): Promise<R> {
    const breaker = this.breakers.get(provider.name);
    if (!breaker) return provider.send(message);
    provider.refuseUnsendable?.(message);
    try {
      return await breaker.fire(message);
    } catch (error) {
      if ((error as { code?: string }).code === 'EOPENBREAKER') throw this.kind.circuitOpen(provider.name);
      throw error;
    }
  }

  /** closed, half_open or open, per provider. */
  states(): Record<string, 'closed' | 'half_open' | 'open'> {
    const out: Record<string, 'closed' | 'half_open' | 'open'> = {};
    for (const [name, breaker] of this.breakers) out[name] = breaker.opened ? 'open' : breaker.halfOpen ? 'half_open' : 'closed';
    return out;
  }

  /** /health detail: shown, never failing readiness (one provider down leaves the others, and calls). */
  healthCheck(): HealthCheck {
    return {
      name: this.kind.check,
      informational: true,
      check: async () => {
        const open = Object.entries(this.states()).filter(([, s]) => s !== 'closed');
        if (open.length > 0) throw new Error(open.map(([name, s]) => `${name} ${s}`).join(', '));
      },
    };
  }

  shutdown(): void {
    for (const breaker of this.breakers.values()) breaker.shutdown();
  }
}
