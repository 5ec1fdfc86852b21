import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CIRCUIT_OPEN, ProviderBreakers } from './circuit-breakers.js';
import { SmsProviderError, type SmsMessage, type SmsProvider } from './sms/sms-provider.js';

/** A provider that fails as scripted: 'transient', 'permanent', or answers. */
class Scripted implements SmsProvider {
  calls = 0;
  constructor(
    readonly name: string,
    public mode: 'ok' | 'transient' | 'permanent',
  ) {}
  async send(_message: SmsMessage): Promise<{ providerMessageId: string }> {
    this.calls++;
    if (this.mode === 'ok') return { providerMessageId: `${this.name}-${this.calls}` };
    throw new SmsProviderError(`${this.mode} failure`, { provider: this.name, transient: this.mode === 'transient' });
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
});
