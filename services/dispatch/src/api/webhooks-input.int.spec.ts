import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import twilio from 'twilio';
import type { Subscription } from '@nats-io/nats-core';
import { connectNats, type NatsClients } from '@mfa/messaging';
import type { RunningService } from '@mfa/service-kit';
import { FakeTwilio, freePort, itWith, startNatsServer, testChallengeId, testEnv, type NatsServerProcess } from '@mfa/testing';
import { boot } from '../boot.js';
import { loadDispatchConfig } from '../config.js';

/**
 * Hostile requests to dispatch's public routes (Twilio's voice and SMS webhooks, the recordings
 * a call plays), over HTTP to the real service: each gets a 4xx (voice webhooks in TwiML that
 * hangs up, as Twilio reads them), never a 5xx; nothing is asked or published, and the service
 * keeps serving. Dispatch runs on a nats-server of the test's own, so that what it would send is
 * seen and no shared consumer is touched.
 */
describe('dispatch: hostile input on the Twilio webhooks and recording URLs (real NATS and Redis)', () => {
  const fake = new FakeTwilio();
  let server: NatsServerProcess;
  let nats: NatsClients;
  let running: RunningService;
  let base: string;
  let sent: string[] = [];
  let watch: Subscription;

  before(async () => {
    await fake.start();
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'dispatch-hostile-test', connectTimeoutMs: 5_000 });
    watch = nats.nc.subscribe('>', { callback: (_error, msg) => void (msg.subject.startsWith('_INBOX') || msg.subject.startsWith('$JS.') || sent.push(msg.subject)) });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    running = await boot(
      loadDispatchConfig({ ...process.env, ...fake.env(), NODE_ENV: 'test', LOG_LEVEL: 'error', NATS_URL: server.url, REDIS_URL: testEnv.redisUrl, HTTP_HOST: '127.0.0.1', HTTP_PORT: String(port), VOICE_WEBHOOK_BASE_URL: base }),
    );
  });

  after(async () => {
    watch?.unsubscribe();
    await running?.stop();
    await nats?.nc.drain();
    await server?.stop();
    await fake.stop();
  });

  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  const signed = (path: string, params: Record<string, string>) => twilio.getExpectedTwilioSignature(fake.authToken, `${base}${path}`, params);

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'refuses every hostile webhook with a 4xx, in TwiML on the voice routes, asking and publishing nothing', async () => {
    const id = testChallengeId();
    const webhooks = [`/voice/twiml/${id}`, `/voice/gather/${id}?prompt=1`, `/voice/status/${id}`, `/sms/status/${id}`];
    const params = { CallSid: 'CA00000000000000000000000000000001', MessageSid: 'SM00000000000000000000000000000001', MessageStatus: 'delivered', CallStatus: 'completed', Digits: '1234' };
    const body = new URLSearchParams(params).toString();
    await nats.nc.flush();
    sent = [];
    for (const path of webhooks) {
      const longPath = path.replace(id, 'x'.repeat(5000));
      const cases: Array<[string, string, RequestInit, number]> = [
        ['no signature', path, { method: 'POST', headers: form, body }, 403],
        ['a wrong signature', path, { method: 'POST', headers: { ...form, 'x-twilio-signature': 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' }, body }, 403],
        ['the signature header twice', path, { method: 'POST', headers: [['content-type', form['content-type']], ['x-twilio-signature', signed(path, params)], ['x-twilio-signature', signed(path, params)]], body }, 403],
        ['a parameter twice (an array, not a string)', path, { method: 'POST', headers: { ...form, 'x-twilio-signature': signed(path, params) }, body: `${body}&Digits=9` }, 403],
        ['__proto__ and constructor parameters', path, { method: 'POST', headers: { ...form, 'x-twilio-signature': signed(path, params) }, body: `${body}&__proto__=x&constructor=y` }, 403],
        ['a JSON array', path, { method: 'POST', headers: { 'content-type': 'application/json', 'x-twilio-signature': signed(path, {}) }, body: '[1,2]' }, 404],
        ['signed, for a challenge without a call or message', path, { method: 'POST', headers: { ...form, 'x-twilio-signature': signed(path, params) }, body }, 404],
        ['signed, a 5,000-character challenge id', longPath, { method: 'POST', headers: { ...form, 'x-twilio-signature': signed(longPath, params) }, body }, 404],
        ['signed, a challenge id with NUL and an RTL override', path.replace(id, 'a%00b%E2%80%AE'), { method: 'POST', headers: { ...form, 'x-twilio-signature': signed(path.replace(id, 'a%00b%E2%80%AE'), params) }, body }, 404],
        ['a form over 16 KB', path, { method: 'POST', headers: { ...form, 'x-twilio-signature': signed(path, params) }, body: `${body}&a=${'x'.repeat(17_000)}` }, 413],
        ['10 MB of JSON', path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"a":"${'x'.repeat(10 * 1024 * 1024)}"}` }, 413],
        ['malformed JSON', path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":' }, 400],
        ['a malformed percent escape', path.replace(id, `${'x'.repeat(300)}%`), { method: 'POST', headers: form, body }, 400],
        ['GET', path, {}, 404],
        ['PUT', path, { method: 'PUT', headers: form, body }, 404],
      ];
      for (const [what, url, init, status] of cases) {
        const res = await fetch(`${base}${url}`, init);
        const text = await res.text();
        assert.equal(res.status, status, `${path}: ${what}`);
        assert.ok(text.length < 300 && !text.includes('xxxxxxxxxx'), `${path}: ${what}: a small answer that does not echo the request`);
        // Twilio reads the TwiML of a voice webhook whatever its status: it hangs up.
        if (status !== 413 && status !== 400 && path.startsWith('/voice/') && init.method === 'POST') assert.match(text, /<Response><Hangup\/><\/Response>/, `${path}: ${what}`);
      }
    }
    for (const [what, url, status] of [
      ['an unknown token', `/voice/recordings/${id.split('.')[0]}/nothing`, 404],
      ['a traversal', '/voice/recordings/t/..%2f..%2fetc%2fpasswd', 404],
      ['a 5,000-character token', `/voice/recordings/t/${'x'.repeat(5000)}`, 404],
      ['a malformed percent escape', '/voice/recordings/t/%E0%A4%A', 400],
    ] as const) {
      const res = await fetch(`${base}${url}`);
      assert.equal(res.status, status, `recording: ${what}`);
      assert.ok(!(await res.text()).includes('xxxxxxxxxx'), `recording: ${what}`);
    }
    await nats.nc.flush();
    assert.deepEqual(sent, [], 'nothing asked or published');
    assert.equal((await fetch(`${base}/health/live`)).status, 200, 'still serving');
  });
});
