import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { afterError, afterStart, afterVerify, afterWait, waitedTooLong } from './answers.js';

const expiresAt = new Date(Date.now() + 120_000).toISOString();
const start = (status: 'pending' | 'approved' | 'denied' | 'registration_required', method: 'sms' | 'totp' | 'push' | 'voice' | null, extra: Record<string, unknown> = {}) => ({
  challengeId: 'c1',
  status,
  method,
  expiresAt,
  ...extra,
});

describe('RADIUS decisions', () => {
  it('asks for SMS and TOTP codes with a challenge, names the masked number, never the code', () => {
    const sms = afterStart(start('pending', 'sms', { sentTo: '+*********78' }), false);
    assert.deepEqual(sms, { kind: 'challenge', challengeId: 'c1', method: 'sms', message: 'Enter the code sent by SMS to +*********78.', expiresAt });
    const totp = afterStart(start('pending', 'totp'), false);
    assert.equal(totp.kind, 'challenge');
    assert.match((totp as { message: string }).message, /authenticator app or hardware token/);
  });

  it('waits for push and calls in both modes; verifies the password as the code in otp mode; refuses SMS in otp mode', () => {
    assert.deepEqual(afterStart(start('pending', 'push'), false), { kind: 'wait', challengeId: 'c1', method: 'push' });
    assert.deepEqual(afterStart(start('pending', 'voice'), true), { kind: 'wait', challengeId: 'c1', method: 'voice' });
    assert.deepEqual(afterStart(start('pending', 'totp'), true), { kind: 'verify', challengeId: 'c1' });
    assert.equal(afterStart(start('pending', 'sms'), true).kind, 'reject');
    assert.match((afterStart(start('registration_required', null, { reason: 'method_disabled' }), true) as { message: string }).message, /challenge mode/);
  });

  it('accepts a bypass at once and rejects saying why', () => {
    assert.deepEqual(afterStart(start('approved', null, { reason: 'trusted_ip' }), false), { kind: 'accept' });
    const why = (reason: string, status: 'denied' | 'registration_required' = 'denied') => (afterStart(start(status, null, { reason }), false) as { message: string }).message;
    assert.match(why('user_blocked'), /blocked/);
    assert.match(why('locked_out'), /locked out/);
    assert.match(why('ip_locked'), /address/);
    assert.match(why('no_method_registered', 'registration_required'), /No MFA method is registered/);
    assert.match(why('push_suspended'), /suspended/);
  });

  it('after a verify: accept, ask again while attempts remain (not in otp mode), or reject', () => {
    const pending = { challengeId: 'c1', method: 'sms' as const, expiresAt };
    assert.deepEqual(afterVerify({ challengeId: 'c1', status: 'approved' }, pending, false), { kind: 'accept' });
    const again = afterVerify({ challengeId: 'c1', status: 'pending', reason: 'invalid_code' }, pending, false);
    assert.equal(again.kind, 'challenge');
    assert.match((again as { message: string }).message, /^Wrong code\. Enter the code sent by SMS/);
    assert.equal(afterVerify({ challengeId: 'c1', status: 'pending', reason: 'invalid_code' }, pending, true).kind, 'reject');
    assert.match((afterVerify({ challengeId: 'c1', status: 'denied', reason: 'too_many_attempts' }, pending, false) as { message: string }).message, /Too many wrong codes/);
  });

  it('waiting: undefined while pending, then accept or reject; too long rejects', () => {
    assert.equal(afterWait({ challengeId: 'c1', status: 'pending' }), undefined);
    assert.deepEqual(afterWait({ challengeId: 'c1', status: 'approved' }), { kind: 'accept' });
    assert.match((afterWait({ challengeId: 'c1', status: 'denied', reason: 'denied_by_user' }) as { message: string }).message, /denied in the app/);
    assert.match((waitedTooLong('push') as { message: string }).message, /not answered in time/);
  });

  it('errors: the NAS fails over on unavailable and internal (no answer); the rest reject', () => {
    assert.deepEqual(afterError('unavailable'), { kind: 'silent', why: 'unavailable' });
    assert.deepEqual(afterError('internal'), { kind: 'silent', why: 'internal' });
    assert.match((afterError('rate_limited', 42) as { message: string }).message, /in 42 s/);
    for (const code of ['not_found', 'conflict', 'invalid_request', 'forbidden'] as const) assert.equal(afterError(code).kind, 'reject');
  });
});
