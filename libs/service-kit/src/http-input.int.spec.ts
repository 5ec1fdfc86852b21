import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { Body, Controller, Get, Module, Param, Post, Query } from '@nestjs/common';
import { keyringFromMasterKey } from '@mfa/crypto';
import type { Logger } from '@mfa/telemetry';
import { itWith, testEnv } from '@mfa/testing';
import { HTTP_HEADERS_TIMEOUT_MS, HTTP_REQUEST_TIMEOUT_MS, runService, type RunningService } from './bootstrap.js';
import { MessagingModule } from './messaging.module.js';

// Hostile input on the HTTP port every service opens with runService (/health, /metrics, and the
// routes of the service): whatever arrives, a small 4xx in JSON that does not echo the request
// back, no error-level line, and the port keeps serving. A request that never finishes arriving
// is ended by the server, not held for minutes.

interface Line {
  level: string;
  msg: string;
}

function recordingLogger(lines: Line[]): Logger {
  const write = (level: string) => (msg: string) => void lines.push({ level, msg });
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error'), child: () => recordingLogger(lines) };
}

@Controller('probe')
class ProbeController {
  @Post('echo/:id')
  echo(@Param('id') id: string, @Query() query: Record<string, unknown>, @Body() body: unknown): unknown {
    return { id, query, body };
  }
  @Get('prototype')
  prototype(): unknown {
    return { polluted: ({} as Record<string, unknown>).polluted ?? null };
  }
}

@Module({ controllers: [ProbeController] })
class ProbeModule {}

/** Writes `text` on a new connection and reads what comes back until the server closes it (or `waitMs`). */
function rawExchange(url: string, text: string, waitMs: number): Promise<{ answer: string; closed: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ answer, closed: false });
    }, waitMs);
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ answer, closed: true });
    });
    socket.write(text);
  });
}

describe('hostile HTTP input on a service started with runService', () => {
  const lines: Line[] = [];
  let service: RunningService;

  before(async () => {
    const name = `http-input-probe-${randomUUID().slice(0, 8)}`;
    const log = recordingLogger(lines);
    service = await runService({
      name,
      module: { module: ProbeModule, imports: [MessagingModule.forRoot({ serviceName: name, nats: { NATS_URL: testEnv.natsUrl }, log, streams: [], replicas: 1 })] },
      config: { HTTP_HOST: '127.0.0.1', HTTP_PORT: 0, INSTANCE_NAME: `${name}-1`, keyring: keyringFromMasterKey(randomBytes(32)) },
      log,
      transport: false,
    });
  });

  after(async () => {
    await service?.stop();
  });

  const json = { 'content-type': 'application/json' };
  const long = 'x'.repeat(6000);

  itWith({ real: ['nats'] }, 'answers every hostile request with a small JSON 4xx that does not echo the request, and keeps serving', async () => {
    const cases: Array<[string, string, RequestInit, number]> = [
      ['malformed JSON', '/probe/echo/a', { method: 'POST', body: '{"a":', headers: json }, 400],
      ['malformed JSON, the error inside a long run', '/probe/echo/a', { method: 'POST', body: `{"a": ${long}}`, headers: json }, 400],
      ['a JSON number', '/probe/echo/a', { method: 'POST', body: '42', headers: json }, 400],
      ['a JSON string', '/probe/echo/a', { method: 'POST', body: '"x"', headers: json }, 400],
      ['JSON null', '/probe/echo/a', { method: 'POST', body: 'null', headers: json }, 400],
      ['10 MB of JSON', '/probe/echo/a', { method: 'POST', body: `{"a":"${'x'.repeat(10 * 1024 * 1024)}"}`, headers: json }, 413],
      ['a multipart body', '/probe/prototype', { method: 'POST', body: '--X\r\n\r\n--X--', headers: { 'content-type': 'multipart/form-data; boundary=X' } }, 404],
      ['an unknown route with a long path', `/${long}`, {}, 404],
      ['an unknown route with a long query', `/nowhere?q=${long}`, {}, 404],
      ['a wrong method on /health', `/health?${long}`, { method: 'DELETE' }, 404],
      ['PUT on /metrics', '/metrics', { method: 'PUT', body: '{}', headers: json }, 404],
      ['OPTIONS on /health', '/health', { method: 'OPTIONS' }, 404],
      ['a malformed percent escape in a long path parameter', `/probe/echo/${long}%`, { method: 'POST', body: '{}', headers: json }, 400],
      ['a path traversal', '/probe/echo/..%2f..%2fetc%2fpasswd/x', { method: 'POST', body: '{}', headers: json }, 404],
    ];
    for (const [what, path, init, status] of cases) {
      const res = await fetch(`${service.url}${path}`, init);
      const text = await res.text();
      assert.equal(res.status, status, what);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/, what);
      assert.equal((JSON.parse(text) as { statusCode: number }).statusCode, status, what);
      assert.ok(text.length < 300, `${what}: a small body (${text.length} characters)`);
      assert.ok(!text.includes('xxxxxxxxxx'), `${what}: the request is not echoed back`);
    }
    // What reaches a handler: duplicate and nested query parameters stay plain strings (no objects
    // built from the query), __proto__ in JSON pollutes nothing, and TRACE is refused.
    const echoed = await fetch(`${service.url}/probe/echo/%E2%80%AEid?a=1&a=2&b[c]=1&__proto__[polluted]=1`, { method: 'POST', body: '{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}', headers: json });
    assert.equal(echoed.status, 201);
    const { id, query } = (await echoed.json()) as { id: string; query: Record<string, unknown> };
    assert.equal(id, '\u202eid');
    assert.deepEqual({ ...query }, { a: ['1', '2'], 'b[c]': '1', '__proto__[polluted]': '1' });
    assert.deepEqual(await (await fetch(`${service.url}/probe/prototype`)).json(), { polluted: null });
    const trace = await rawExchange(service.url, `TRACE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 5_000);
    assert.match(trace.answer, /^HTTP\/1\.1 404 /);
    const bigHeader = await rawExchange(service.url, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\nConnection: close\r\n\r\n`, 5_000);
    assert.match(bigHeader.answer, /^HTTP\/1\.1 431 /);
    assert.deepEqual(lines.filter((l) => l.level === 'error'), [], 'no error-level line for any of them');
    assert.equal((await fetch(`${service.url}/probe/prototype`)).status, 200, 'still serving');
  });

  itWith({ real: ['nats'] }, 'ends a request whose headers or body never finish arriving: 408 and the connection closed, within the bounds the port sets', async () => {
    // Each waits well past its bound (Node's own defaults, 60 s and 300 s, would still hold them).
    const [headers, body] = await Promise.all([
      rawExchange(service.url, 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n', HTTP_HEADERS_TIMEOUT_MS + 15_000),
      rawExchange(service.url, 'POST /probe/echo/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":', HTTP_REQUEST_TIMEOUT_MS + 15_000),
    ]);
    assert.match(headers.answer, /^HTTP\/1\.1 408 /, 'headers that never end');
    assert.ok(headers.closed);
    assert.match(body.answer, /^HTTP\/1\.1 408 /, 'a body that never ends');
    assert.ok(body.closed);
    const server = service.app.getHttpServer() as { headersTimeout: number; requestTimeout: number };
    assert.deepEqual([server.headersTimeout, server.requestTimeout], [HTTP_HEADERS_TIMEOUT_MS, HTTP_REQUEST_TIMEOUT_MS]);
    assert.equal((await fetch(`${service.url}/probe/prototype`)).status, 200, 'still serving');
    assert.deepEqual(lines.filter((l) => l.level === 'error'), [], 'no error-level line');
  });
});
