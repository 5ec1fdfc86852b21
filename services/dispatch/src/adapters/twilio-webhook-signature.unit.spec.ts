import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import twilio from 'twilio';
import { signedByTwilio } from './twilio-webhook-signature.js';

const token = 'a'.repeat(32);
const params = { CallSid: 'CA0123', CallStatus: 'completed' };

describe('signedByTwilio', () => {
  it('accepts Twilio\'s signature of the public URL and the parameters, and nothing else', () => {
    const url = 'https://mfa.example.com/voice/status/ch-1';
    const signature = twilio.getExpectedTwilioSignature(token, url, params);
    assert.equal(signedByTwilio(token, { url, signature, params }), true);
    assert.equal(signedByTwilio(token, { url, signature, params: { ...params, CallStatus: 'failed' } }), false);
    assert.equal(signedByTwilio(token, { url: `${url}x`, signature, params }), false);
    assert.equal(signedByTwilio(undefined, { url, signature, params }), false);
    assert.equal(signedByTwilio(token, { url, signature: undefined, params }), false);
  });

  it('refuses, without throwing, a URL that cannot be the one Twilio requested', () => {
    // No VOICE_WEBHOOK_BASE_URL (only the path), a request line in absolute form behind a base
    // with a port, garbage: each made the SDK throw (a 500 and an error log for any caller).
    for (const url of ['/sms/status/x', 'https://mfa.example.com:8443http://a/voice/status/x', '', 'http://[::1']) {
      assert.equal(signedByTwilio(token, { url, signature: 'abc', params }), false, url);
    }
  });
});
