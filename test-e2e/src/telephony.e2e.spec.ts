import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { Objm } from '@nats-io/obj';
import { Subjects, VoiceMessageBuckets, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeTwilio, freePort, itWith, silentMp3, startStack, testDatabaseUrl, testEnv, toneWav, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

const randomPhone = () => `+1415${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/**
 * Voice challenges through the whole stack and a Twilio simulator that places each call the way
 * Twilio does: dispatch asks Calls.json for the call, the simulator fetches the TwiML (signed),
 * presses the keys the test scripted at each <Gather>, follows the action URLs, and posts the
 * final status. The IdP polls challenge.status, as it does for a call.
 */
describe('end to end: telephony on Twilio (voice challenges, SMS receipts)', () => {
  const twilio = new FakeTwilio();
  let stack: Stack;
  let nc: NatsConnection;
  let webhookBase: string;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000 });

  before(async () => {
    await twilio.start();
    const port = await freePort();
    webhookBase = `http://127.0.0.1:${port}`;
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'fraud', 'reporting'],
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        ...twilio.env(),
      },
      serviceEnv: { dispatch: { HTTP_PORT: String(port), VOICE_WEBHOOK_BASE_URL: webhookBase } },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-voice' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await twilio.stop();
  });

  const userWithPhone = async (settings: Record<string, unknown> = {}, language?: string) => {
    const tenantId = uniqueTenant('voice');
    await ask(Subjects.tenantsConfigure, { tenantId, settings });
    const userId = uniqueUser('caller');
    const phone = randomPhone();
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: phone, ...(language ? { language } : {}) }), { userId, methods: ['sms', 'voice'] });
    return { tenantId, userId, phone };
  };
  const startVoice = (tenantId: string, userId: string) =>
    eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'voice', clientIp: '203.0.113.80' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the tenant and user known');
  const settled = (tenantId: string, challengeId: unknown) =>
    eventually(async () => {
      const reply = await ask(Subjects.challengeStatus, { tenantId, challengeId });
      return reply.status !== 'pending' ? reply : undefined;
    }, 20_000, 'the call decided');

  itWith({ real: wholeStack, fake: ['twilio'] }, '# approves: the call greets the user in their language, from the tenant caller ID, and the report shows it', async () => {
    const { tenantId, userId, phone } = await userWithPhone({ voice: { callerId: '+18553308653' } }, 'sv-SE');
    twilio.phone(phone, { answer: 'answer', presses: ['#'] });
    const start = await startVoice(tenantId, userId);
    assert.equal(start.method, 'voice');
    assert.deepEqual(await settled(tenantId, start.challengeId), { challengeId: start.challengeId, status: 'approved' });
    const call = await twilio.waitForCall(phone);
    assert.equal(call.from, '+18553308653');
    assert.match(call.heard[0]!, /Tryck på fyrkant för att slutföra verifieringen\. .*Tryck noll och fyrkant/);
    assert.match(call.heard.at(-1)!, /Din inloggning har verifierats/);
    assert.ok(call.webhookStatuses.every((s) => s === 200), String(call.webhookStatuses));
    assert.equal(call.statusAnswer, 204);
    // A voice challenge is answered on the phone, never with a code.
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: '123456' })).error?.code, 'conflict');
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 5 })) as Reply & { items?: SigninItem[] };
      return report.items?.find((i) => i.challengeId === start.challengeId && i.result === 'success');
    }, 20_000, 'the approved call in the report');
    assert.equal(row.authMethod, 'voice');
    assert.equal(row.resultDetail, 'MFA successfully completed');
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, "custom voice messages: the tenant's recording in the user's language is played, else our script in it, else the English recording", async () => {
    const { tenantId, userId, phone } = await userWithPhone({}, 'fr-FR');
    const german = uniqueUser('deutsch');
    const germanPhone = randomPhone();
    await ask(Subjects.usersRegister, { tenantId, userId: german, phoneNumber: germanPhone, language: 'de-DE' });
    const uploads = await new Objm(nc).open(VoiceMessageBuckets.uploads);
    const upload = async (type: string, language: string, bytes: Buffer) => {
      const object = `${tenantId}/${type}-${language}-${Date.now()}`;
      await uploads.putBlob({ name: object }, bytes);
      return ask(Subjects.voiceMessagesUpload, { tenantId, type, language, object });
    };
    const sha = (bytes: Buffer) => `play:${createHash('sha256').update(bytes).digest('hex')}`;
    const greetingFr = toneWav(2);
    const successEn = silentMp3(2);
    // Fraud alerts are on by default: the greeting is the one with the fraud sentence.
    assert.equal((await upload('fraudGreetingStandard', 'fr', greetingFr)).format, 'wav');
    assert.equal((await upload('authenticationSuccessful', 'en', successEn)).format, 'mp3');
    // A file that lies about its type is refused through the contract, and the list does not change.
    const lie = await upload('fraudGreetingStandard', 'en', Buffer.from('<html>not audio</html>'));
    assert.equal(lie.error?.code, 'invalid_request', JSON.stringify(lie));
    const listed = (await ask(Subjects.voiceMessagesList, { tenantId })) as Reply & { messages: Array<{ type: string; language: string }> };
    assert.deepEqual(listed.messages.map((m) => `${m.type}/${m.language}`), ['authenticationSuccessful/en', 'fraudGreetingStandard/fr']);

    // French: the French greeting recording; the success message has no French recording, so our French script.
    twilio.phone(phone, { answer: 'answer', presses: ['#'] });
    const start = await startVoice(tenantId, userId);
    assert.equal((await settled(tenantId, start.challengeId)).status, 'approved');
    const call = await twilio.waitForCall(phone);
    assert.equal(call.heard[0], sha(greetingFr), call.heard.join(' | '));
    assert.match(call.heard.at(-1)!, /Votre connexion a bien été vérifiée/);
    assert.equal(call.played[0]!.contentType, 'audio/wav');
    // German: no German recording nor script: English, the tenant's English recording where there is one.
    twilio.phone(germanPhone, { answer: 'answer', presses: ['#'] });
    const germanStart = await startVoice(tenantId, german);
    assert.equal((await settled(tenantId, germanStart.challengeId)).status, 'approved');
    const germanCall = await twilio.waitForCall(germanPhone);
    assert.match(germanCall.heard[0]!, /Please press the pound key/);
    assert.equal(germanCall.heard.at(-1), sha(successEn));
    // The URL is the recording's own: an edited one, or another tenant's path, finds nothing.
    const url = call.played[0]!.url;
    assert.equal((await fetch(url.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')))).status, 404);
    assert.equal((await fetch(url.replace(`/${tenantId}/`, `/${uniqueTenant('other')}/`))).status, 404);
    // Deleted: the next call speaks our script again.
    assert.deepEqual(await ask(Subjects.voiceMessagesDelete, { tenantId, type: 'fraudGreetingStandard', language: 'fr' }), { type: 'fraudGreetingStandard', language: 'fr', deleted: true });
    assert.equal((await fetch(url)).status, 404);
    twilio.phone(phone, { answer: 'answer', presses: ['#'] });
    const again = await startVoice(tenantId, userId);
    assert.equal((await settled(tenantId, again.challengeId)).status, 'approved');
    const secondCall = await twilio.waitForCall(phone, (c) => c.sid !== call.sid);
    assert.match(secondCall.heard[0]!, /Appuyez sur la touche dièse/);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'an office phone with an extension: the call dials it, asks to be put through, then greets the user', async () => {
    const tenantId = uniqueTenant('voice-ext');
    await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
    const userId = uniqueUser('desk');
    const phone = randomPhone();
    await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: phone, phoneExtension: '4711' });
    assert.equal((await ask(Subjects.usersGet, { tenantId, userId })).phoneExtension, '4711');
    assert.equal((await ask(Subjects.usersRegister, { tenantId, userId: uniqueUser('bad'), phoneNumber: phone, phoneExtension: '47-11' })).error?.code, 'invalid_request');
    // Silence at the extension prompt first (still being put through), then # there, then # to approve.
    twilio.phone(phone, { answer: 'answer', presses: ['', '#', '#'] });
    const start = await startVoice(tenantId, userId);
    assert.deepEqual(await settled(tenantId, start.challengeId), { challengeId: start.challengeId, status: 'approved' });
    const call = await twilio.waitForCall(phone);
    assert.equal(call.sendDigits, 'wwww4711');
    assert.match(call.heard[0]!, /transfer this call to the extension\. 4 7 1 1\./);
    assert.match(call.heard[1]!, /If already at this extension, press the pound key to continue/);
    assert.match(call.heard.at(-1)!, /successfully verified/);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'PIN mode: a wrong PIN is denied and asked again, the right one then # approves', async () => {
    const { tenantId, userId, phone } = await userWithPhone({ voice: { pinMode: true } });
    assert.deepEqual(await ask(Subjects.usersPinSet, { tenantId, userId, pin: '2468' }), { userId, pinSet: true });
    assert.equal((await ask(Subjects.usersPinSet, { tenantId, userId, pin: '12' })).error?.code, 'invalid_request');
    twilio.phone(phone, { answer: 'answer', presses: ['1357#', '2468#'] });
    const start = await startVoice(tenantId, userId);
    assert.deepEqual(await settled(tenantId, start.challengeId), { challengeId: start.challengeId, status: 'approved' });
    const call = await twilio.waitForCall(phone);
    assert.match(call.heard[0]!, /Please enter your PIN followed by the pound key/);
    assert.ok(call.heard.includes('Verification denied.'), call.heard.join(' | '));
    assert.match(call.heard.at(-1)!, /successfully verified/);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'the fraud code then # reports fraud: the challenge is denied, the user blocked', async () => {
    const { tenantId, userId, phone } = await userWithPhone();
    twilio.phone(phone, { answer: 'answer', presses: ['0#'] });
    const start = await startVoice(tenantId, userId);
    assert.deepEqual(await settled(tenantId, start.challengeId), { challengeId: start.challengeId, status: 'denied', reason: 'fraud_reported' });
    const call = await twilio.waitForCall(phone);
    assert.match(call.heard.at(-1)!, /A fraud alert has been submitted/);
    const user = await eventually(async () => {
      const reply = await ask(Subjects.usersGet, { tenantId, userId });
      return reply.blocked ? reply : undefined;
    }, 10_000, 'the user blocked');
    assert.match(String((user.blocked as { reason: string }).reason), /fraud/i);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'silence, or a busy line: the status says delivery_failed with SMS to fall back to, and a new start takes it', async () => {
    for (const behaviour of [{ answer: 'answer' as const, presses: ['', '', ''] }, { answer: 'busy' as const }]) {
      const { tenantId, userId, phone } = await userWithPhone();
      await ask(Subjects.usersMethodsDefault, { tenantId, userId, method: 'voice' });
      twilio.phone(phone, behaviour);
      const start = await startVoice(tenantId, userId);
      assert.deepEqual(await settled(tenantId, start.challengeId), { challengeId: start.challengeId, status: 'denied', reason: 'delivery_failed', fallbackMethods: ['sms'] });
      const call = await twilio.waitForCall(phone);
      if (behaviour.answer === 'answer') assert.equal(call.pressed.length, 3, 'three prompts, then goodbye');
      const next = await ask(Subjects.challengeStart, { tenantId, userId });
      assert.equal(next.method, 'sms', 'the next start without a method takes SMS');
    }
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, "SMS delivery receipts: a delivered SMS shows in the report as delivered; an undelivered one makes the status delivery_failed at once", async () => {
    const { tenantId, userId, phone } = await userWithPhone();
    const start = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the tenant known');
    const message = await twilio.waitFor((m) => m.to === phone);
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: FakeTwilio.codeOf(message) })).status, 'approved');
    const row = await eventually(async () => {
      const report = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId, limit: 5 })) as Reply & { items?: SigninItem[] };
      const item = report.items?.find((i) => i.challengeId === start.challengeId);
      return item?.delivery?.status === 'delivered' ? item : undefined;
    }, 20_000, 'the receipt in the report');
    assert.deepEqual(row.delivery, { status: 'delivered', provider: 'twilio', error: null });

    const other = await userWithPhone();
    twilio.undeliverable(other.phone, '30005');
    const lost = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: other.tenantId, userId: other.userId, method: 'sms' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'the other tenant known');
    assert.deepEqual(await settled(other.tenantId, lost.challengeId), { challengeId: lost.challengeId, status: 'denied', reason: 'delivery_failed', fallbackMethods: ['voice'] });
    // A receipt without a valid signature is refused and changes nothing.
    const receiptUrl = `${webhookBase}/sms/status/${encodeURIComponent(String(start.challengeId))}`;
    assert.equal((await twilio.webhook(receiptUrl, { MessageSid: message.sid, MessageStatus: 'undelivered' }, 'Zm9yZ2Vk')).status, 403);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId: start.challengeId })).status, 'approved');
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'webhooks: a bad or missing signature is refused with 403 and changes nothing; an unknown call is 404; a replayed prompt counts once', async () => {
    const { tenantId, userId, phone } = await userWithPhone({ voice: { pinMode: true }, maxAttempts: 2 });
    await ask(Subjects.usersPinSet, { tenantId, userId, pin: '2468' });
    // The call is placed; the test plays Twilio's webhooks itself.
    twilio.phone(phone, { answer: 'hold' });
    const start = await startVoice(tenantId, userId);
    const call = await twilio.waitForCall(phone);
    const challengeId = String(start.challengeId);
    const gatherUrl = `${webhookBase}/voice/gather/${encodeURIComponent(challengeId)}?prompt=1`;
    const params = { CallSid: call.sid, AccountSid: twilio.accountSid, Digits: '2468', FinishedOnKey: '#', CallStatus: 'in-progress' };
    assert.equal((await twilio.webhook(gatherUrl, params, 'bm90IGEgc2lnbmF0dXJl')).status, 403);
    assert.equal((await twilio.webhook(gatherUrl, params, twilio.signature(gatherUrl, { ...params, Digits: '1111' }))).status, 403, 'a signature over other digits');
    assert.equal((await twilio.webhook(`${webhookBase}/voice/gather/${encodeURIComponent(challengeId)}?prompt=1`, { ...params, CallSid: 'CAdeadbeef' })).status, 404);
    const unknown = `${webhookBase}/voice/twiml/${encodeURIComponent(`${challengeId.slice(0, -4)}AAAA`)}`;
    assert.equal((await twilio.webhook(unknown, { CallSid: call.sid })).status, 404);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId })).status, 'pending', 'nothing changed');
    // A wrong PIN delivered twice at the same prompt counts once (2 attempts allowed: a second count would deny).
    const wrong = { ...params, Digits: '1111' };
    const first = await twilio.webhook(gatherUrl, wrong);
    const again = await twilio.webhook(gatherUrl, wrong);
    assert.equal(first.status, 200);
    assert.equal(again.body, first.body, 'the same TwiML');
    assert.match(first.body, /Verification denied\./);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId })).status, 'pending');
    const right = await twilio.webhook(`${webhookBase}/voice/gather/${encodeURIComponent(challengeId)}?prompt=2`, params);
    assert.match(right.body, /successfully verified/);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId })).status, 'approved');
    // The call's end, after the approval, changes nothing.
    const statusUrl = `${webhookBase}/voice/status/${encodeURIComponent(challengeId)}`;
    assert.equal((await twilio.webhook(statusUrl, { CallSid: call.sid, CallStatus: 'completed' })).status, 204);
    assert.equal((await ask(Subjects.challengeStatus, { tenantId, challengeId })).status, 'approved');
  });
});
