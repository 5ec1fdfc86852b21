import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '@mfa/service-kit';
import { DispatchEnv } from '../../config.js';
import { createSmsProviders } from './sms-provider.factory.js';
import type { TwilioSmsProvider } from './twilio/twilio.provider.js';

const twilio = { TWILIO_ACCOUNT_SID: 'AC00000000000000000000000000000000', TWILIO_AUTH_TOKEN: 'not-a-real-token', TWILIO_FROM_NUMBER: '+15005550006' };

/** Configuration as the service reads it, from environment variables. */
const configFrom = (env: Record<string, string>) => DispatchEnv.parse(env);
const names = (env: Record<string, string>) => createSmsProviders(configFrom(env)).map((p) => p.name);

describe('SMS provider factory', () => {
  it('picks the providers in the order of SMS_PROVIDERS', () => {
    assert.deepEqual(names({ SMS_PROVIDERS: 'twilio,console', ...twilio }), ['twilio', 'console']);
    assert.deepEqual(names({ SMS_PROVIDERS: ' console , twilio ', ...twilio }), ['console', 'twilio']);
  });

  it('defaults to console in development and test', () => {
    assert.deepEqual(names({ NODE_ENV: 'development' }), ['console']);
    assert.deepEqual(names({ NODE_ENV: 'test' }), ['console']);
    assert.deepEqual(names({ NODE_ENV: 'test', SMS_PROVIDERS: '' }), ['console']);
  });

  it('refuses to start in production without SMS_PROVIDERS', () => {
    assert.throws(() => names({ NODE_ENV: 'production' }), (e: Error) => e instanceof ConfigError && /SMS_PROVIDERS is required/.test(e.message));
  });

  it('refuses console in production, alone or as a fallback', () => {
    for (const SMS_PROVIDERS of ['console', 'twilio,console']) {
      assert.throws(
        () => names({ NODE_ENV: 'production', SMS_PROVIDERS, ...twilio }),
        (e: Error) => e instanceof ConfigError && /console is for development only/.test(e.message),
      );
    }
  });

  it('accepts twilio alone in production', () => {
    assert.deepEqual(names({ NODE_ENV: 'production', SMS_PROVIDERS: 'twilio', ...twilio }), ['twilio']);
  });

  it('refuses an unknown provider, naming it', () => {
    assert.throws(
      () => names({ SMS_PROVIDERS: 'twilio,nexmo', ...twilio }),
      (e: Error) => e instanceof ConfigError && /unknown provider nexmo/.test(e.message),
    );
  });

  it('refuses a provider listed twice and a list of only commas', () => {
    assert.throws(() => names({ SMS_PROVIDERS: 'console,console' }), /listed twice/);
    assert.throws(() => names({ SMS_PROVIDERS: ' , ' }), /names no provider/);
  });

  it('refuses twilio without its account, token or sender, naming what is missing', () => {
    for (const missing of Object.keys(twilio)) {
      const env: Record<string, string> = { SMS_PROVIDERS: 'twilio', ...twilio };
      delete env[missing];
      assert.throws(
        () => names(env),
        (e: Error) => e instanceof ConfigError && e.message.includes(missing) && !e.message.includes(twilio.TWILIO_AUTH_TOKEN),
      );
    }
    assert.throws(() => names({ SMS_PROVIDERS: 'twilio', ...twilio, TWILIO_AUTH_TOKEN: '  ' }), /TWILIO_AUTH_TOKEN/);
  });

  it('sends from the sender of the destination country (SMS_SENDERS): short codes in the US and Canada, a long number elsewhere', () => {
    const [provider] = createSmsProviders(configFrom({ SMS_PROVIDERS: 'twilio', ...twilio, SMS_SENDERS: 'US=97671,CA=759731,*=+15005550007' })) as [TwilioSmsProvider];
    assert.equal(provider.senderFor('+14155550123'), '97671');
    assert.equal(provider.senderFor('+14165550123'), '759731', 'Toronto is +1 too: the country comes from the number, not its prefix');
    assert.equal(provider.senderFor('+46701234567'), '+15005550007');
    const [fallback] = createSmsProviders(configFrom({ SMS_PROVIDERS: 'twilio', ...twilio, SMS_SENDERS: 'US=97671' })) as [TwilioSmsProvider];
    assert.equal(fallback.senderFor('+46701234567'), twilio.TWILIO_FROM_NUMBER);
    // With `*`, TWILIO_FROM_NUMBER is not needed.
    const { TWILIO_FROM_NUMBER: _from, ...noFrom } = twilio;
    assert.deepEqual(names({ SMS_PROVIDERS: 'twilio', ...noFrom, SMS_SENDERS: 'US=97671,*=+15005550007' }), ['twilio']);
    for (const bad of ['us=97671', 'US=97', 'US=97671,US=69829', 'US:97671', 'US=+0123']) {
      assert.throws(() => names({ SMS_PROVIDERS: 'twilio', ...twilio, SMS_SENDERS: bad }), /SMS_SENDERS/, bad);
    }
  });

  it('does not show the Twilio credentials when the provider is printed', () => {
    const [provider] = createSmsProviders(configFrom({ SMS_PROVIDERS: 'twilio', ...twilio }));
    assert.ok(!JSON.stringify(provider).includes(twilio.TWILIO_AUTH_TOKEN));
    assert.ok(!JSON.stringify(provider).includes(Buffer.from(`${twilio.TWILIO_ACCOUNT_SID}:${twilio.TWILIO_AUTH_TOKEN}`).toString('base64')));
  });

  const smppEnv = { SMPP_URL: 'smpp://mfa-esme:s3cr%40t@smsc.example.net:2775', SMPP_SOURCE_ADDR: '+15005550006' };

  it('builds smpp from SMPP_URL and SMPP_SOURCE_ADDR, alone or with twilio in a failover list, without connecting', () => {
    assert.deepEqual(names({ NODE_ENV: 'production', SMS_PROVIDERS: 'smpp', ...smppEnv }), ['smpp']);
    assert.deepEqual(names({ SMS_PROVIDERS: 'smpp,twilio', ...smppEnv, ...twilio }), ['smpp', 'twilio']);
    assert.deepEqual(names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_SOURCE_ADDR: 'Contoso' }), ['smpp']);
    // With SMS_SENDERS' `*`, no SMPP_SOURCE_ADDR is needed.
    assert.deepEqual(names({ SMS_PROVIDERS: 'smpp', SMPP_URL: smppEnv.SMPP_URL, SMS_SENDERS: 'US=97671,*=+15005550007' }), ['smpp']);
  });

  it('refuses smpp without SMPP_URL or a sender, or with a URL or sender it cannot use', () => {
    assert.throws(() => names({ SMS_PROVIDERS: 'smpp', SMPP_SOURCE_ADDR: '+15005550006' }), (e: Error) => e instanceof ConfigError && /smpp needs SMPP_URL/.test(e.message));
    assert.throws(() => names({ SMS_PROVIDERS: 'smpp', SMPP_URL: smppEnv.SMPP_URL }), (e: Error) => e instanceof ConfigError && /SMPP_SOURCE_ADDR/.test(e.message));
    assert.throws(() => names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_URL: 'https://smsc.example.net' }), /SMPP_URL/);
    assert.throws(() => names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_URL: 'smpp://smsc.example.net:2775' }), (e: Error) => e instanceof ConfigError && /SMPP_URL: .*system_id/.test(e.message));
    for (const bad of ['Contoso Bank Ltd', '+0123', '12', 'ab$']) {
      assert.throws(() => names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_SOURCE_ADDR: bad }), /SMPP_SOURCE_ADDR/, bad);
    }
    assert.throws(() => names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_WINDOW: '0' }), /SMPP_WINDOW/);
    assert.throws(() => names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_VALIDITY_PERIOD: 'off' }), /SMPP_VALIDITY_PERIOD/);
  });

  it('SMPP_VALIDITY_PERIOD is relative unless set to absolute or none', () => {
    assert.equal(configFrom({ SMS_PROVIDERS: 'smpp', ...smppEnv }).SMPP_VALIDITY_PERIOD, 'relative');
    for (const format of ['absolute', 'none', 'relative']) {
      assert.deepEqual(names({ SMS_PROVIDERS: 'smpp', ...smppEnv, SMPP_VALIDITY_PERIOD: format }), ['smpp'], format);
    }
  });

  it('does not show the SMPP password when the provider is printed', () => {
    const [provider] = createSmsProviders(configFrom({ SMS_PROVIDERS: 'smpp', ...smppEnv }));
    assert.ok(!JSON.stringify(provider).includes('s3cr'));
  });
});
