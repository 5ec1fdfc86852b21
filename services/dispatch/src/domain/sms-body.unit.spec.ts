import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { expiryMinutes, SMS_LANGUAGES, smsBody, smsLanguage } from './sms-body.js';

const occurredAt = new Date('2025-01-01T12:00:00Z');
const after = (seconds: number) => new Date(occurredAt.getTime() + seconds * 1000);
const sixDigitRuns = (body: string) => body.match(/\d+/g)?.filter((run) => run.length === 6) ?? [];

describe('SMS body', () => {
  it('contains the code as the only six-digit run, and the expiry in minutes', () => {
    const body = smsBody({ code: '042917', occurredAt, expiresAt: after(300) });
    assert.deepEqual(sixDigitRuns(body), ['042917']);
    assert.match(body, /\b5 minutes\b/);
    assert.equal(body, '042917 is your verification code. It expires in 5 minutes.');
  });

  it('rounds the expiry up to whole minutes', () => {
    assert.equal(expiryMinutes(occurredAt, after(180)), 3);
    assert.equal(expiryMinutes(occurredAt, after(181)), 4);
    assert.equal(expiryMinutes(occurredAt, after(1)), 1);
    assert.match(smsBody({ code: '123456', occurredAt, expiresAt: after(61) }), /2 minutes/);
  });

  it('says "1 minute", not "1 minutes"', () => {
    assert.match(smsBody({ code: '123456', occurredAt, expiresAt: after(30) }), /in 1 minute\.$/);
  });

  it('never states less than one minute or a six-digit number of minutes', () => {
    assert.equal(expiryMinutes(occurredAt, after(-60)), 1);
    const body = smsBody({ code: '123456', occurredAt, expiresAt: after(500_000 * 60) });
    assert.deepEqual(sixDigitRuns(body), ['123456']);
  });

  it('is plain ASCII and one GSM-7 segment in every language', () => {
    for (const language of SMS_LANGUAGES) {
      const body = smsBody({ code: '999999', occurredAt, expiresAt: after(9999 * 60), language });
      assert.match(body, /^[\x20-\x7e]+$/, `${language} is not printable ASCII`);
      assert.ok(body.length <= 160, `${language} is ${body.length} characters`);
      assert.deepEqual(sixDigitRuns(body), ['999999'], language);
    }
  });

  it('speaks French, Swedish, German and Spanish by primary language, English otherwise', () => {
    const say = (language: string | undefined) => smsBody({ code: '123456', occurredAt, expiresAt: after(300), language });
    assert.equal(say('fr-CA'), '123456 est votre code de connexion. Il expire dans 5 minutes.');
    assert.equal(say('sv-SE'), '123456 - din verifieringskod. Giltig i 5 minuter.');
    assert.equal(say('de'), '123456 ist Ihr Anmeldecode. Er gilt 5 Minuten.');
    assert.equal(say('ES-mx'), '123456 es tu clave de acceso. Expira en 5 minutos.');
    assert.equal(say('ja-JP'), say('en'));
    assert.equal(say(undefined), say('en-GB'));
  });

  it('maps language tags to their primary subtag', () => {
    assert.equal(smsLanguage('sv'), 'sv');
    assert.equal(smsLanguage('fr_FR'), 'fr');
    assert.equal(smsLanguage('nb-NO'), 'en');
    assert.equal(smsLanguage(''), 'en');
  });

  it('refuses anything but six digits as the code', () => {
    for (const code of ['12345', '1234567', '12a456', '']) {
      assert.throws(() => smsBody({ code, occurredAt, expiresAt: after(300) }), RangeError);
    }
  });
});
