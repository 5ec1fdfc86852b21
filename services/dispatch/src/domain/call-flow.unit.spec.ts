import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { callStep, MAX_PROMPTS, promptMessage } from './call-flow.js';
import { chooseVoiceMessage, VOICE_MESSAGE_TYPES, voiceLanguage, voiceMessage } from './voice-messages.js';

const standard = { pinMode: false, fraudCode: '0' };
const pin = { pinMode: true, fraudCode: '0' };
const at = (digits: string, finishedOnKey: string, prompt = 1) => ({ digits, finishedOnKey, prompt });

describe('a voice call, prompt by prompt', () => {
  it('given standard mode, when # alone is pressed, then approve; when the fraud code then #, then fraud', () => {
    assert.deepEqual(callStep(standard, at('', '#')), { kind: 'approve' });
    assert.deepEqual(callStep(standard, at('0', '#')), { kind: 'fraud' });
  });

  it('given PIN mode, when digits then #, then the PIN is checked; # alone is not an approval there', () => {
    assert.deepEqual(callStep(pin, at('2468', '#')), { kind: 'check_pin', pin: '2468' });
    assert.deepEqual(callStep(pin, at('', '#')), { kind: 'prompt_again', prompt: 2 });
    assert.deepEqual(callStep(pin, at('123', '#')), { kind: 'prompt_again', prompt: 2 }, 'too short for a PIN');
    assert.deepEqual(callStep(pin, at('0', '#')), { kind: 'fraud' }, 'the fraud code in either mode');
  });

  it('given fraud alerts off, when 0 then #, then nothing is reported: asked again', () => {
    assert.deepEqual(callStep({ pinMode: false, fraudCode: null }, at('0', '#')), { kind: 'prompt_again', prompt: 2 });
  });

  it('given silence or keys without #, then ask again up to the last prompt, then give up', () => {
    assert.deepEqual(callStep(standard, at('', '')), { kind: 'prompt_again', prompt: 2 });
    assert.deepEqual(callStep(standard, at('5', '')), { kind: 'prompt_again', prompt: 2 });
    assert.deepEqual(callStep(standard, at('', '', MAX_PROMPTS)), { kind: 'give_up' });
    assert.deepEqual(callStep(pin, at('2468', '', MAX_PROMPTS)), { kind: 'give_up' }, 'a PIN without # is not entered');
  });

  it('greets with the fraud sentence when alerts are on, then retries with the retry message', () => {
    assert.equal(promptMessage(standard, 1), 'fraudGreetingStandard');
    assert.equal(promptMessage({ pinMode: false, fraudCode: null }, 1), 'greetingStandard');
    assert.equal(promptMessage(pin, 1), 'fraudGreetingPin');
    assert.equal(promptMessage({ pinMode: true, fraudCode: null }, 1), 'greetingPin');
    assert.equal(promptMessage(standard, 2), 'retryStandard');
    assert.equal(promptMessage(pin, 3), 'retryPin');
  });
});

describe('voice messages', () => {
  it('has the 18 message types of the seed, each in English, French and Swedish', () => {
    assert.equal(VOICE_MESSAGE_TYPES.length, 18);
    for (const type of VOICE_MESSAGE_TYPES) {
      for (const language of ['en-US', 'fr-CA', 'sv-SE']) {
        const { text } = voiceMessage(type, language);
        assert.ok(text.length > 10, `${type} ${language}`);
        assert.ok(!/microsoft/i.test(text), 'no vendor name');
      }
    }
  });

  it("speaks the user's language, else English; says the tenant's fraud digit", () => {
    assert.deepEqual(voiceMessage('authenticationDenied', 'fr-CA').language, 'fr-FR');
    assert.deepEqual(voiceMessage('authenticationDenied', 'de-DE').language, 'en-US');
    assert.equal(voiceLanguage(undefined), 'en');
    assert.match(voiceMessage('fraudGreetingStandard', 'en-GB', '7').text, /press seven pound/);
    assert.match(voiceMessage('fraudGreetingStandard', 'fr-FR', '0').text, /appuyer sur zéro puis sur dièse/);
    assert.match(voiceMessage('fraudGreetingPin', 'sv-SE', '3').text, /Tryck tre och fyrkant/);
  });
});

describe('the choice of a message: the tenant’s recording in the user’s language, our script in it, else English', () => {
  const has = (...languages: string[]) => async (language: string) => languages.includes(language);
  it('plays the recording in the user’s language first, whatever the language', async () => {
    assert.deepEqual(await chooseVoiceMessage('greetingStandard', 'fr-CA', '0', has('fr', 'en')), { kind: 'play', language: 'fr' });
    assert.deepEqual(await chooseVoiceMessage('greetingStandard', 'de-DE', '0', has('de')), { kind: 'play', language: 'de' });
  });
  it('speaks our script in the user’s language before any English recording', async () => {
    const choice = await chooseVoiceMessage('greetingStandard', 'sv-SE', '0', has('en'));
    assert.equal(choice.kind, 'say');
    assert.equal(choice.language, 'sv-SE');
  });
  it('falls back to English: the tenant’s English recording, else our English script', async () => {
    assert.deepEqual(await chooseVoiceMessage('greetingStandard', 'de-DE', '0', has('en')), { kind: 'play', language: 'en' });
    const spoken = await chooseVoiceMessage('greetingStandard', 'de-DE', '0', has());
    assert.deepEqual(spoken, { kind: 'say', ...voiceMessage('greetingStandard', 'en', '0') });
    assert.deepEqual(await chooseVoiceMessage('greetingStandard', undefined, '0', has('en')), { kind: 'play', language: 'en' });
  });
});
