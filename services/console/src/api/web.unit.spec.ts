import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Request, Response } from 'express';
import type { Sessions } from '../adapters/sessions.js';
import { cookieNames, csrfCheck, emptyBodyAsForm, securityHeaders, sessionLoader, type WebRequest } from './web.js';

const request = (path: string, cookie?: string) => ({ path, headers: cookie ? { cookie } : {} }) as unknown as Request;
const response = () => {
  const headers = new Map<string, string>();
  return { headers, res: { setHeader: (name: string, value: string) => headers.set(name, value) } as unknown as Response };
};

describe('console middleware', () => {
  const names = cookieNames(false);
  const id = 'A'.repeat(43);

  it('answers 503 when the session store fails, and never lets the request through', async () => {
    const failing = { load: () => Promise.reject(new Error('Redis is down')) } as unknown as Sessions;
    const unavailable: Response[] = [];
    let passed = 0;
    const { res } = response();
    sessionLoader(failing, names, (r) => unavailable.push(r))(request('/t/contoso/overview', `${names.session}=${id}`), res, () => passed++);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual([unavailable.length, passed], [1, 0]);
  });

  it('reads no session for the probes, nor without a cookie', async () => {
    let loads = 0;
    const counting = { load: () => (loads++, Promise.resolve(undefined)) } as unknown as Sessions;
    let passed = 0;
    const { res } = response();
    for (const path of ['/health', '/health/live', '/metrics']) sessionLoader(counting, names, () => assert.fail())(request(path, `${names.session}=${id}`), res, () => passed++);
    sessionLoader(counting, names, () => assert.fail())(request('/t/contoso/overview'), res, () => passed++);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual([loads, passed], [0, 4]);
  });

  it('sends Strict-Transport-Security only over https, the CSP always', () => {
    for (const secure of [true, false]) {
      const { headers, res } = response();
      securityHeaders(secure)(request('/'), res, () => undefined);
      assert.equal(headers.has('Strict-Transport-Security'), secure);
      assert.match(headers.get('Content-Security-Policy') ?? '', /frame-ancestors 'none'/);
    }
  });

  it('lets a sign-out without a session through the CSRF check, but not one of a session without its token, nor from another origin', () => {
    const origin = 'https://console.example';
    const refused: number[] = [];
    const res = { status: (code: number) => (refused.push(code), { type: () => ({ send: () => undefined }) }) } as unknown as Response;
    const post = (path: string, extra: Partial<WebRequest> & { headers?: Record<string, string> }) =>
      ({ method: 'POST', path, headers: {}, body: {}, ...extra }) as unknown as Request;
    const session = { csrf: 'c'.repeat(43) } as WebRequest['session'];
    let passed = 0;
    const check = csrfCheck(origin);
    check(post('/auth/logout', {}), res, () => passed++);
    check(post('/auth/logout', { session, body: { _csrf: session!.csrf } }), res, () => passed++);
    assert.deepEqual([passed, refused], [2, []]);
    check(post('/auth/logout', { session }), res, () => passed++);
    check(post('/auth/logout', { headers: { origin: 'https://evil.example' } }), res, () => passed++);
    check(post('/t/contoso/users/block', {}), res, () => passed++);
    assert.deepEqual([passed, refused], [2, [403, 403, 403]]);
  });

  it('refuses with 403 a token as long as the session’s in characters but not in bytes, in a field or a header', () => {
    const refused: number[] = [];
    const res = { status: (code: number) => (refused.push(code), { type: () => ({ send: () => undefined }) }) } as unknown as Response;
    const session = { csrf: 'c'.repeat(43) } as WebRequest['session'];
    // 43 characters, 44 bytes in UTF-8.
    const accented = `é${'c'.repeat(42)}`;
    let passed = 0;
    const check = csrfCheck('https://console.example');
    const post = (extra: Record<string, unknown>) => ({ method: 'POST', path: '/t/contoso/settings', headers: {}, body: {}, session, ...extra }) as unknown as Request;
    check(post({ body: { _csrf: accented } }), res, () => passed++);
    check(post({ headers: { 'x-csrf-token': accented } }), res, () => passed++);
    assert.deepEqual([passed, refused], [0, [403, 403]]);
    check(post({ body: { _csrf: session!.csrf } }), res, () => passed++);
    assert.equal(passed, 1);
  });

  it('reads a POST without a body as an empty form', () => {
    const req = { body: undefined } as unknown as Request;
    emptyBodyAsForm(req, response().res, () => undefined);
    assert.deepEqual(req.body, {});
    const parsed = { body: { reason: 'x' } } as unknown as Request;
    emptyBodyAsForm(parsed, response().res, () => undefined);
    assert.deepEqual(parsed.body, { reason: 'x' });
  });
});
