import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '@mfa/service-kit';
import { loadDispatchConfig } from './config.js';

const load = (env: Record<string, string>) => loadDispatchConfig({ HTTP_PORT: '0', ...env });

describe('dispatch configuration: sends in flight', () => {
  it('SMS_CONCURRENCY and PUSH_CONCURRENCY default to 64 and take what the provider account allows', () => {
    const defaults = load({});
    assert.equal(defaults.SMS_CONCURRENCY, 64);
    assert.equal(defaults.PUSH_CONCURRENCY, 64);
    const raised = load({ SMS_CONCURRENCY: '400', PUSH_CONCURRENCY: '128' });
    assert.equal(raised.SMS_CONCURRENCY, 400);
    assert.equal(raised.PUSH_CONCURRENCY, 128);
  });

  it('refuses none, more than 1024, and what is not a whole number, naming the variable', () => {
    for (const value of ['0', '1025', '12.5', 'many']) {
      assert.throws(() => load({ SMS_CONCURRENCY: value }), (error: unknown) => error instanceof ConfigError && /SMS_CONCURRENCY/.test(error.message), value);
      assert.throws(() => load({ PUSH_CONCURRENCY: value }), (error: unknown) => error instanceof ConfigError && /PUSH_CONCURRENCY/.test(error.message), value);
    }
  });
});
