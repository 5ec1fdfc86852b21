import CircuitBreaker from 'opossum';
import { gauge, counter } from '@mfa/telemetry';
import type { HealthCheck } from '@mfa/service-kit';
import { SmsProviderError, type SmsMessage, type SmsProvider } from './sms-provider.js';

const state = gauge('mfa_provider_circuit_state', 'Circuit breaker of each SMS provider: 0 closed, 1 half-open (probing), 2 open (skipped)', ['provider']);
const transitions = counter('mfa_provider_circuit_transitions_total', 'Circuit breaker state changes per SMS provider', ['provider', 'to']);

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

/**
 * A circuit breaker per SMS provider (opossum): transient failures (5xx, 429, network errors,
 * calls that outlast TWILIO_TIMEOUT_MS) in the rolling window open it, and while it is open the
 * provider is not called at all: the delivery fails over to the next one at once, so users do not
 * wait for a provider that is down. After `resetSeconds` one call probes it (half-open): success
 * closes the circuit, failure opens it again. Permanent errors (an invalid number) say nothing of
 * the provider's health and do not count. State per instance, in metrics and /health.
 */
export class ProviderBreakers {
  private readonly breakers = new Map<string, CircuitBreaker<[SmsMessage], { providerMessageId: string }>>();

  constructor(providers: readonly SmsProvider[], policy: BreakerPolicy) {
    for (const provider of providers) {
      const breaker = new CircuitBreaker((message: SmsMessage) => provider.send(message), {
        timeout: false,
        errorThresholdPercentage: policy.errorThresholdPercentage,
        volumeThreshold: policy.volumeThreshold,
        resetTimeout: policy.resetSeconds * 1000,
        rollingCountTimeout: policy.windowSeconds * 1000,
        // A permanent error is about the message, not the provider.
        errorFilter: (error: unknown) => error instanceof SmsProviderError && !error.transient,
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
  async send(provider: SmsProvider, message: SmsMessage): Promise<{ providerMessageId: string }> {
    const breaker = this.breakers.get(provider.name);
    if (!breaker) return provider.send(message);
    try {
      return await breaker.fire(message);
    } catch (error) {
      if ((error as { code?: string }).code === 'EOPENBREAKER') throw new SmsProviderError(CIRCUIT_OPEN, { provider: provider.name, transient: false });
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
      name: 'sms_providers',
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
