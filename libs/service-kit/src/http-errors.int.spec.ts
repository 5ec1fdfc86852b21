import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { BadRequestException, Body, Controller, Get, Module, Post } from '@nestjs/common';
import { keyringFromMasterKey } from '@mfa/crypto';
import { registry, type Logger } from '@mfa/telemetry';
import { itWith, testEnv } from '@mfa/testing';
import { HTTP_BODY_LIMIT_BYTES, runService, type RunningService } from './bootstrap.js';
import { MessagingModule } from './messaging.module.js';

// What the body parser refuses (an unknown Content-Encoding, a body over the limit, malformed
// JSON), on any service's HTTP port, is the caller's fault: answered 4xx, counted, never an
// error-level log line, which any anonymous caller could otherwise write at will.

interface Line {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

function recordingLogger(lines: Line[]): Logger {
  const write = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, ...(fields ? { fields } : {}) });
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error'), child: () => recordingLogger(lines) };
}

@Controller('probe')
class ProbeController {
  @Post('echo')
  echo(@Body() body: unknown): unknown {
    return { received: body };
  }
  @Post('refuse')
  refuse(): never {
    throw new BadRequestException('no, thanks');
  }
  @Get('boom')
  boom(): never {
    throw new Error('a fault of the service');
  }
}

@Module({ controllers: [ProbeController] })
class ProbeModule {}

const clientErrors = async (status: number): Promise<number> => {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'mfa_http_client_errors_total');
  return (metric?.values ?? []).filter((v) => v.labels.status === String(status)).reduce((sum, v) => sum + v.value, 0);
};

describe('HTTP client errors on a service started with runService', () => {
  const lines: Line[] = [];
  let service: RunningService;

  before(async () => {
    const name = `http-errors-probe-${randomUUID().slice(0, 8)}`;
    const log = recordingLogger(lines);
    const keyring = keyringFromMasterKey(randomBytes(32));
    service = await runService({
      name,
      module: { module: ProbeModule, imports: [MessagingModule.forRoot({ serviceName: name, nats: { NATS_URL: testEnv.natsUrl }, log, streams: [], replicas: 1 })] },
      config: { HTTP_HOST: '127.0.0.1', HTTP_PORT: 0, INSTANCE_NAME: `${name}-1`, keyring },
      log,
      transport: false,
    });
  });

  after(async () => {
    await service?.stop();
  });

  const post = (path: string, body: string | Buffer, headers: Record<string, string> = {}) =>
    fetch(`${service.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const errorLines = () => lines.filter((l) => l.level === 'error');

  itWith({ real: ['nats'] }, 'answers what the body parser refuses with 4xx and JSON, without an error line', async () => {
    const before413 = await clientErrors(413);
    const before415 = await clientErrors(415);
    const cases: Array<[string, Promise<Response>, number]> = [
      ['Content-Encoding: bogus', post('/probe/echo', '{"a":1}', { 'content-encoding': 'bogus' }), 415],
      ['a body over the limit', post('/probe/echo', JSON.stringify({ a: 'x'.repeat(200_000) })), 413],
      ['a body just over 16 KB', post('/probe/echo', JSON.stringify({ a: 'x'.repeat(HTTP_BODY_LIMIT_BYTES) })), 413],
      ['a form just over 16 KB', post('/probe/echo', `a=${'x'.repeat(HTTP_BODY_LIMIT_BYTES)}`, { 'content-type': 'application/x-www-form-urlencoded' }), 413],
      // 137 bytes of gzip that would inflate to 100 KB of nested arrays: compressed bodies are not read at all.
      ['a small gzip body', post('/probe/echo', gzipSync('['.repeat(51_150) + ']'.repeat(51_150)), { 'content-encoding': 'gzip' }), 415],
      ['a gzip body over the limit once inflated', post('/probe/echo', gzipSync(JSON.stringify({ a: 'x'.repeat(500_000) })), { 'content-encoding': 'gzip' }), 415],
      ['malformed JSON', post('/probe/echo', '{"a":'), 400],
      ['an unsupported charset', post('/probe/echo', '{"a":1}', { 'content-type': 'application/json; charset=bogus' }), 415],
      ['an unknown route', post('/voice/nowhere', '{"a":'), 400],
      ["a handler's HttpException", post('/probe/refuse', '{}'), 400],
    ];
    for (const [what, pending, status] of cases) {
      const res = await pending;
      assert.equal(res.status, status, what);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/, what);
      const body = (await res.json()) as { statusCode: number; message: unknown };
      assert.equal(body.statusCode, status, what);
      assert.ok(JSON.stringify(body).length < 300, `${what}: a small body`);
    }
    assert.deepEqual(errorLines(), [], 'no error-level line for a client error');
    assert.equal(await clientErrors(413), before413 + 3, 'counted instead');
    assert.equal(await clientErrors(415), before415 + 4);
    // The service still reads what it should: JSON, and a form (Twilio's webhooks) up to 16 KB.
    const ok = await post('/probe/echo', '{"a":1}');
    assert.deepEqual(await ok.json(), { received: { a: 1 } });
    const big = 'x'.repeat(HTTP_BODY_LIMIT_BYTES - 100);
    assert.deepEqual(await (await post('/probe/echo', JSON.stringify({ a: big }))).json(), { received: { a: big } });
    const form = await post('/probe/echo', 'CallSid=CA1&Digits=1234', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.deepEqual(await form.json(), { received: { CallSid: 'CA1', Digits: '1234' } });
  });

  itWith({ real: ['nats'] }, 'still logs a fault of the service (5xx)', async () => {
    const res = await fetch(`${service.url}/probe/boom`);
    assert.equal(res.status, 500);
    assert.ok(errorLines().some((l) => JSON.stringify(l).includes('a fault of the service')), 'the 500 is logged');
  });
});
