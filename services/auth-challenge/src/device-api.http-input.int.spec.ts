import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { Subscription } from '@nats-io/nats-core';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { itWith, startNatsServer, testEnv, type NatsServerProcess } from '@mfa/testing';
import { boot } from './boot.js';
import { loadAuthChallengeConfig } from './config.js';

/**
 * The device API's HTTP layer (docs/device-api.md, Errors) against hostile requests that no
 * device would send, over HTTP to the real auth-challenge: every one is answered in the API's
 * own shape, `{"error": {"code", "message"}}`, with a 4xx, never echoing the request, never a
 * 5xx; nothing is asked of the other services, and the API keeps serving. auth-challenge runs
 * on a nats-server of the test's own, so that what it would ask is seen.
 */
describe('auth-challenge: hostile HTTP input on the device API (real NATS and Redis)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  let service: Awaited<ReturnType<typeof boot>>;
  let sent: string[] = [];
  let watch: Subscription;

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'device-api-hostile-test', connectTimeoutMs: 5_000 });
    watch = nats.nc.subscribe('>', { callback: (_error, msg) => void (msg.subject.startsWith('_INBOX') || msg.subject.startsWith('$JS.') || sent.push(msg.subject)) });
    service = await boot(loadAuthChallengeConfig({ ...process.env, NATS_URL: server.url, REDIS_URL: testEnv.redisUrl, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test', DEVICE_API_TRUSTED_PROXIES: 'none' }));
  });

  after(async () => {
    watch?.unsubscribe();
    await service?.stop();
    await nats?.nc.drain();
    await server?.stop();
  });

  const json = { 'content-type': 'application/json' };
  const activate = '/device/v1/activate';
  const answer = '/device/v1/challenges/abc/answer';
  const long = 'x'.repeat(5000);

  itWith({ real: ['nats', 'redis'] }, 'answers every hostile request in the device API’s error shape, with a 4xx, asking nothing', async () => {
    const cases: Array<[string, string, RequestInit, number, string]> = [
      ['malformed JSON', activate, { method: 'POST', headers: json, body: '{"code":' }, 400, 'invalid_request'],
      ['a JSON array', activate, { method: 'POST', headers: json, body: '[1,2]' }, 400, 'invalid_request'],
      ['a JSON number', activate, { method: 'POST', headers: json, body: '42' }, 400, 'invalid_request'],
      ['a JSON string', activate, { method: 'POST', headers: json, body: '"x"' }, 400, 'invalid_request'],
      ['JSON null', activate, { method: 'POST', headers: json, body: 'null' }, 400, 'invalid_request'],
      ['__proto__ and constructor keys', activate, { method: 'POST', headers: json, body: '{"__proto__":{"admin":true},"constructor":{"prototype":{"admin":true}}}' }, 400, 'invalid_request'],
      ['a 5,000-character unknown key', activate, { method: 'POST', headers: json, body: `{"${long}":1}` }, 400, 'invalid_request'],
      ['text/plain', activate, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"code":"x"}' }, 400, 'invalid_request'],
      ['multipart', activate, { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=X' }, body: '--X\r\n\r\n--X--' }, 400, 'invalid_request'],
      ['no content type', activate, { method: 'POST', body: '{"code":"x"}' }, 400, 'invalid_request'],
      ['invalid UTF-8', activate, { method: 'POST', headers: json, body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) }, 400, 'invalid_request'],
      ['just over 8 KiB', activate, { method: 'POST', headers: json, body: JSON.stringify({ code: 'x'.repeat(8200) }) }, 413, 'invalid_request'],
      ['10 MB', activate, { method: 'POST', headers: json, body: `{"code":"${'x'.repeat(10 * 1024 * 1024)}"}` }, 413, 'invalid_request'],
      ['gzip', activate, { method: 'POST', headers: { ...json, 'content-encoding': 'gzip' }, body: '{}' }, 415, 'invalid_request'],
      ['query parameters twice and nested', `${activate}?code=a&code=b&x[y]=1&__proto__[admin]=1`, { method: 'POST', headers: json, body: '{}' }, 400, 'invalid_request'],
      ['an unsigned answer', answer, { method: 'POST', headers: json, body: '{"decision":"approve"}' }, 401, 'unauthenticated'],
      ['signature headers twice, garbled', answer, { method: 'POST', headers: [['content-type', 'application/json'], ['mfa-device', 'a'], ['mfa-device', 'b'], ['mfa-timestamp', '1e3'], ['mfa-nonce', '\u00ff\u00fe'.repeat(8)], ['mfa-signature', long]], body: '{}' }, 403, 'not_activated'],
      ['a traversal in the challenge id', '/device/v1/challenges/..%2f..%2factivate/answer', { method: 'POST', headers: json, body: '{}' }, 401, 'unauthenticated'],
      ['a malformed percent escape', `/device/v1/challenges/${long}%/answer`, { method: 'POST', headers: json, body: '{}' }, 400, 'invalid_request'],
      ['an unknown route with a long path', `/device/v1/${long}`, {}, 404, 'not_found'],
      ['GET on a POST route', activate, {}, 404, 'not_found'],
      ['PUT', activate, { method: 'PUT', headers: json, body: '{}' }, 404, 'not_found'],
      ['DELETE', '/device/v1/challenges/pending', { method: 'DELETE' }, 404, 'not_found'],
      ['OPTIONS', activate, { method: 'OPTIONS' }, 404, 'not_found'],
    ];
    await nats.nc.flush();
    sent = [];
    for (const [what, path, init, status, code] of cases) {
      const res = await fetch(`${service.url}${path}`, init);
      const text = await res.text();
      assert.equal(res.status, status, `${what}: ${text}`);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/, what);
      assert.equal((JSON.parse(text) as { error?: { code?: string } }).error?.code, code, what);
      assert.ok(text.length < 400 && !text.includes('xxxxxxxxxx'), `${what}: a small body that does not echo the request`);
    }
    const head = await fetch(`${service.url}/device/v1/challenges/pending`, { method: 'HEAD' });
    assert.equal(head.status, 401, 'HEAD is GET without the body');
    const trace = await new Promise<string>((resolve) => {
      const socket = connect(Number(new URL(service.url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (chunk) => (text += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(text));
      socket.write(`TRACE ${activate} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    });
    assert.match(trace, /^HTTP\/1\.1 404 [^]*"not_found"/);
    await nats.nc.flush();
    assert.deepEqual(sent, [], 'nothing asked of the other services');
    assert.equal((await fetch(`${service.url}/health/live`)).status, 200, 'still serving');
  });
});
