import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '@mfa/service-kit';
import { cleartextWarnings, loadDispatchConfig } from './config.js';

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

  it('VOICE_PROVIDER: empty is unset (an .env template, a compose pass-through), anything else must be a provider', () => {
    assert.equal(load({ VOICE_PROVIDER: '' }).VOICE_PROVIDER, undefined);
    assert.equal(load({ VOICE_PROVIDER: ' console ' }).VOICE_PROVIDER, 'console');
    assert.throws(() => load({ VOICE_PROVIDER: 'tw1lio' }), /VOICE_PROVIDER/);
  });

  it('refuses none, more than 1024, and what is not a whole number, naming the variable', () => {
    for (const value of ['0', '1025', '12.5', 'many']) {
      assert.throws(() => load({ SMS_CONCURRENCY: value }), (error: unknown) => error instanceof ConfigError && /SMS_CONCURRENCY/.test(error.message), value);
      assert.throws(() => load({ PUSH_CONCURRENCY: value }), (error: unknown) => error instanceof ConfigError && /PUSH_CONCURRENCY/.test(error.message), value);
    }
  });
});

describe('dispatch configuration: what goes in clear', () => {
  const fcm = JSON.stringify({ type: 'service_account', project_id: 'p', private_key: 'k', client_email: 'a@p.iam.gserviceaccount.com' });
  const plain = { TWILIO_API_URL: 'http://twilio.internal:8080', TWILIO_ACCOUNT_SID: 'AC1', TWILIO_AUTH_TOKEN: 't', VOICE_WEBHOOK_BASE_URL: 'http://mfa.example.com/hooks', FCM_SERVICE_ACCOUNT_JSON: fcm, FCM_API_URL: 'http://fcm.internal' };
  // Production needs keys this test has no use for: the loaded configuration, said to be production.
  const inProduction = (env: Record<string, string>) => ({ ...load(env), NODE_ENV: 'production' as const });

  it('warns in production of http:// for Twilio\'s API, its webhooks and FCM, as of smpp://, naming each variable', () => {
    const warnings = cleartextWarnings(inProduction({ ...plain, SMPP_URL: 'smpp://esme:pw@smsc.example.net' }), ['twilio', 'smpp']);
    assert.deepEqual(
      warnings.map((w) => w.split(' ')[0]),
      ['SMPP_URL', 'TWILIO_API_URL', 'VOICE_WEBHOOK_BASE_URL', 'FCM_API_URL'],
    );
    assert.ok(warnings.every((w) => /no TLS/.test(w)));
  });

  it('says nothing of https://, of a URL nothing uses, or outside production (the fakes speak http)', () => {
    assert.deepEqual(cleartextWarnings(inProduction({ TWILIO_ACCOUNT_SID: 'AC1', TWILIO_AUTH_TOKEN: 't', VOICE_WEBHOOK_BASE_URL: 'https://mfa.example.com/hooks', FCM_SERVICE_ACCOUNT_JSON: fcm }), ['twilio']), []);
    assert.deepEqual(cleartextWarnings(inProduction({ TWILIO_API_URL: 'http://twilio.internal', FCM_API_URL: 'http://fcm.internal' }), ['console']), [], 'neither Twilio nor FCM configured');
    assert.deepEqual(cleartextWarnings(load(plain), ['twilio']), []);
  });
});
