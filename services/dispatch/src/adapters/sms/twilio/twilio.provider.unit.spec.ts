import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SmsProviderError } from '../sms-provider.js';
import { classifyTwilioResponse, twilioMessageForm, twilioNetworkError, withoutNumbers } from './twilio.provider.js';

const twilioError = (status: number, code: number, message: string) => ({
  code,
  message,
  more_info: `https://www.twilio.com/docs/errors/${code}`,
  status,
});

describe('Twilio answer classification', () => {
  it('201 and 200 with a sid are accepted, the sid being the provider message id', () => {
    assert.deepEqual(classifyTwilioResponse(201, { sid: 'SM0123', status: 'queued' }), { ok: true, sid: 'SM0123' });
    assert.deepEqual(classifyTwilioResponse(200, { sid: 'SM4567' }), { ok: true, sid: 'SM4567' });
  });

  it('a success without a sid is a permanent failure (it may have been sent: do not retry it)', () => {
    const result = classifyTwilioResponse(201, { status: 'queued' });
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.transient, false);
  });

  it('429 and every 5xx are transient', () => {
    for (const status of [429, 500, 502, 503, 504]) {
      const result = classifyTwilioResponse(status, twilioError(status, 20500, 'Internal Server Error'));
      assert.equal(result.ok, false, String(status));
      assert.equal(!result.ok && result.transient, true, String(status));
    }
  });

  it('the numbers an error text quotes are cut out, however they are written; Twilio\'s codes and other numbers stay', () => {
    for (const written of ['+16632211116', '16632211116', '+1 663 221 1116', '+1 (663) 221-1116', '+46.70.123.45.67', '0701234567']) {
      assert.equal(withoutNumbers(`The 'To' number ${written} is not a valid phone number.`), "The 'To' number [number] is not a valid phone number.", written);
    }
    assert.equal(withoutNumbers('Error 21211 (HTTP 400), retry in 30 s, 123456 max'), 'Error 21211 (HTTP 400), retry in 30 s, 123456 max');
  });

  it('other 4xx are permanent and carry Twilio\'s code and message', () => {
    const result = classifyTwilioResponse(400, twilioError(400, 21211, "The 'To' number +16632211116 is not a valid phone number."));
    assert.deepEqual(result, {
      ok: false,
      transient: false,
      code: 21211,
      message: "Twilio 400 error 21211: The 'To' number [number] is not a valid phone number.",
    });
    for (const [status, code] of [
      [401, 20003],
      [403, 21610],
      [404, 20404],
    ] as const) {
      const other = classifyTwilioResponse(status, twilioError(status, code, 'refused'));
      assert.equal(!other.ok && other.transient, false, String(status));
      assert.equal(!other.ok && other.code, code);
    }
  });

  it('an error without a JSON body still says what happened', () => {
    assert.deepEqual(classifyTwilioResponse(502, undefined), { ok: false, transient: true, code: undefined, message: 'Twilio 502: no error message' });
    assert.deepEqual(classifyTwilioResponse(400, 'Bad Request'), { ok: false, transient: false, code: undefined, message: 'Twilio 400: no error message' });
  });

  it('an unexpected status (a redirect) is permanent', () => {
    const result = classifyTwilioResponse(302, undefined);
    assert.equal(!result.ok && result.transient, false);
  });

  it('keeps error messages short', () => {
    const result = classifyTwilioResponse(400, twilioError(400, 21000, 'x'.repeat(5000)));
    assert.ok(!result.ok && result.message.length <= 300);
  });
});

describe('Twilio network failures', () => {
  it('a timeout is transient and says so', () => {
    const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    const error = twilioNetworkError(timeout, 10_000);
    assert.ok(error instanceof SmsProviderError);
    assert.equal(error.transient, true);
    assert.equal(error.provider, 'twilio');
    assert.match(error.message, /did not answer within 10000 ms/);
    assert.equal(error.cause, timeout);
  });

  it('a refused or reset connection is transient and keeps its cause', () => {
    const refused = new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }) });
    const error = twilioNetworkError(refused, 10_000);
    assert.equal(error.transient, true);
    assert.match(error.message, /Twilio request failed: fetch failed/);
    assert.equal(error.cause, refused);
  });
});

describe('Twilio message form', () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  const message = { to: '+14155550123', body: '123456 is your verification code. It expires in 3 minutes.' };

  it('asks Twilio to drop the message once the code has expired: ValidityPeriod, the seconds left, rounded up', () => {
    assert.deepEqual(twilioMessageForm({ ...message, expiresAt: new Date(now + 170_200), statusCallback: 'https://mfa.example.com/sms/status/c' }, '+15005550006', now), {
      To: '+14155550123',
      From: '+15005550006',
      Body: message.body,
      StatusCallback: 'https://mfa.example.com/sms/status/c',
      ValidityPeriod: '171',
    });
  });

  it('keeps ValidityPeriod within what Twilio takes (1 to 36,000 s), and sends none without an expiry', () => {
    assert.equal(twilioMessageForm({ ...message, expiresAt: new Date(now + 20 * 3_600_000) }, '+15005550006', now).ValidityPeriod, '36000');
    assert.equal(twilioMessageForm({ ...message, expiresAt: new Date(now - 5_000) }, '+15005550006', now).ValidityPeriod, '1');
    assert.equal('ValidityPeriod' in twilioMessageForm(message, '+15005550006', now), false);
  });
});

