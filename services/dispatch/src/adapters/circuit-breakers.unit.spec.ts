import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CIRCUIT_OPEN, ProviderBreakers } from './circuit-breakers.js';
import { SmsProviderError, type SmsMessage, type SmsProvider } from './sms/sms-provider.js';

/**
 * A provider that fails as scripted: 'transient' (503), 'permanent' (400 21211), 'rate_limited' (429),
 * 'local' (a permanent error made before any request: no status, no code), 'local_coded' (one made
 * here that carries a vendor's code and status all the same), or answers.
 */
class Scripted implements SmsProvider {
  calls = 0;
  constructor(
    readonly name: string,
    public mode: 'ok' | 'transient' | 'permanent' | 'rate_limited' | 'local' | 'local_coded',
  ) {}
  async send(_message: SmsMessage): Promise<{ providerMessageId: string }> {
    this.calls++;
    switch (this.mode) {
      case 'ok':
        return { providerMessageId: `${this.name}-${this.calls}` };
      case 'transient':
        throw new SmsProviderError('transient failure', { provider: this.name, transient: true, status: 503, code: 20500, vendorAnswered: true });
      case 'permanent':
        throw new SmsProviderError('permanent failure', { provider: this.name, transient: false, status: 400, code: 21211, vendorAnswered: true });
      case 'rate_limited':
        throw new SmsProviderError('rate limited', { provider: this.name, transient: true, status: 429, code: 20429, retryAfterMs: 1_000, vendorAnswered: true });
      case 'local':
        throw new SmsProviderError('could not sign the request', { provider: this.name, transient: false });
      case 'local_coded':
        throw new SmsProviderError('the number is not E.164: not sent', { provider: this.name, transient: false, status: 400, code: 21211 });
    }
  }
}

const message: SmsMessage = { to: '+14155550123', body: 'code' };
const policy = { errorThresholdPercentage: 50, volumeThreshold: 3, resetSeconds: 1, windowSeconds: 10 };

describe('circuit breakers of SMS providers', () => {
  it('opens on transient failures, skips the provider without calling it, probes after the reset and closes on success', async () => {
    const twilio = new Scripted('twilio', 'transient');
    const breakers = new ProviderBreakers([twilio], policy);
    try {
      for (let n = 0; n < 3; n++) await assert.rejects(breakers.send(twilio, message), /transient failure/);
      assert.deepEqual(breakers.states(), { twilio: 'open' });
      await assert.rejects(breakers.send(twilio, message), (e: unknown) => e instanceof SmsProviderError && e.message === CIRCUIT_OPEN && !e.transient);
      assert.equal(twilio.calls, 3, 'not called while open');
      await assert.rejects(breakers.healthCheck().check(), /twilio open/);
      assert.equal(breakers.healthCheck().informational, true, 'never makes dispatch unready');
      await new Promise((r) => setTimeout(r, 1_100));
      assert.deepEqual(breakers.states(), { twilio: 'half_open' });
      twilio.mode = 'ok';
      assert.deepEqual(await breakers.send(twilio, message), { providerMessageId: 'twilio-4' });
      assert.deepEqual(breakers.states(), { twilio: 'closed' });
      await breakers.healthCheck().check();
    } finally {
      breakers.shutdown();
    }
  });

  it('does not count permanent errors (an invalid number says nothing of the provider)', async () => {
    const twilio = new Scripted('twilio', 'permanent');
    const breakers = new ProviderBreakers([twilio], policy);
    try {
      for (let n = 0; n < 6; n++) await assert.rejects(breakers.send(twilio, message), /permanent failure/);
      assert.deepEqual(breakers.states(), { twilio: 'closed' });
      assert.equal(twilio.calls, 6);
    } finally {
      breakers.shutdown();
    }
  });

  it('does not open on rate limits (429): the account\'s pace, not the provider\'s health, and the sends wait out its Retry-After', async () => {
    const twilio = new Scripted('twilio', 'rate_limited');
    const breakers = new ProviderBreakers([twilio], policy);
    try {
      for (let n = 0; n < 6; n++) await assert.rejects(breakers.send(twilio, message), (e: unknown) => e instanceof SmsProviderError && e.status === 429 && e.retryAfterMs === 1_000);
      assert.deepEqual(breakers.states(), { twilio: 'closed' });
      assert.equal(twilio.calls, 6, 'every message still goes to the provider');
    } finally {
      breakers.shutdown();
    }
  });

  it('a probe ending in a permanent error made here, without an answer of the provider, proves nothing: the circuit opens again', async () => {
    const twilio = new Scripted('twilio', 'transient');
    const breakers = new ProviderBreakers([twilio], policy);
    try {
      for (let n = 0; n < 3; n++) await assert.rejects(breakers.send(twilio, message));
      await new Promise((r) => setTimeout(r, 1_100));
      assert.deepEqual(breakers.states(), { twilio: 'half_open' });
      twilio.mode = 'local';
      await assert.rejects(breakers.send(twilio, message), /could not sign/);
      assert.deepEqual(breakers.states(), { twilio: 'open' });
      // The provider's own refusal of a message (an invalid number) is an answer: it closes the circuit.
      await new Promise((r) => setTimeout(r, 1_100));
      twilio.mode = 'permanent';
      await assert.rejects(breakers.send(twilio, message), /permanent failure/);
      assert.deepEqual(breakers.states(), { twilio: 'closed' });
    } finally {
      breakers.shutdown();
    }
  });

  it('a probe ending in an error made here that carries a vendor-style code and status is no answer either: it does not close the circuit', async () => {
    const twilio = new Scripted('twilio', 'transient');
    const breakers = new ProviderBreakers([twilio], policy);
    try {
      for (let n = 0; n < 3; n++) await assert.rejects(breakers.send(twilio, message));
      await new Promise((r) => setTimeout(r, 1_100));
      assert.deepEqual(breakers.states(), { twilio: 'half_open' });
      twilio.mode = 'local_coded';
      await assert.rejects(breakers.send(twilio, message), /not E.164/);
      assert.notDeepEqual(breakers.states(), { twilio: 'closed' });
    } finally {
      breakers.shutdown();
    }
  });

  it('a message the provider refuses before calling the vendor (refuseUnsendable) never reaches the breaker: a half-open circuit stays half-open for the next probe', async () => {
    const twilio = Object.assign(new Scripted('twilio', 'transient'), {
      refuseUnsendable(m: SmsMessage): void {
        if (!m.to.startsWith('+')) throw new SmsProviderError('not E.164: not sent', { provider: 'twilio', transient: false, code: 21211 });
      },
    });
    const breakers = new ProviderBreakers([twilio], policy);
    try {
      for (let n = 0; n < 3; n++) await assert.rejects(breakers.send(twilio, message));
      await new Promise((r) => setTimeout(r, 1_100));
      twilio.mode = 'ok';
      await assert.rejects(breakers.send(twilio, { ...message, to: '4155550123' }), /not E.164/);
      assert.equal(twilio.calls, 3, 'not called');
      assert.deepEqual(breakers.states(), { twilio: 'half_open' });
      await breakers.send(twilio, message);
      assert.deepEqual(breakers.states(), { twilio: 'closed' });
    } finally {
      breakers.shutdown();
    }
  });
});

