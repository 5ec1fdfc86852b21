import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from './logger.js';

/** The JSON lines a logger writes (stdout and stderr) while `fn` runs. */
function linesOf(fn: () => void): Array<Record<string, unknown>> {
  const captured: string[] = [];
  const out = process.stdout.write;
  const err = process.stderr.write;
  const capture = ((chunk: string | Uint8Array) => {
    captured.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = capture;
  process.stderr.write = capture;
  try {
    fn();
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  return captured.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
}

const logged = (fields: Record<string, unknown>) => linesOf(() => createLogger('test').warn('m', fields))[0]!;

describe('log redaction', () => {
  it('redacts the secret and personal field names of the contracts, at any depth and in any case', () => {
    const names = [
      'activationCode', 'activationUrl', 'qrCode', 'pushToken', 'rememberToken', 'deviceToken', 'phoneNumber', 'email',
      'smsCode', 'totpCode', 'appPassword', 'newPin', 'passcode', 'otpauthUri', 'code', 'secret', 'sealedSecret', 'password',
      'token', 'authToken', 'auth_token', 'key', 'apiKey', 'authorization', 'pin', 'otp', 'phone', 'clientEmail', 'recoveryCodes',
      'PushToken', 'PHONE_NUMBER', 'user_email',
    ];
    const fields = Object.fromEntries(names.map((name) => [name, 'S3CRET-value']));
    const line = logged({ ...fields, nested: { deeper: [fields] } });
    for (const name of names) assert.equal(line[name], '[redacted]', name);
    const deeper = (line.nested as { deeper: Array<Record<string, unknown>> }).deeper[0]!;
    for (const name of names) assert.equal(deeper[name], '[redacted]', `nested ${name}`);
    assert.ok(!JSON.stringify(line).includes('S3CRET'));
  });

  it('keeps identifiers, outcome codes and the code of an error', () => {
    const system = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    const line = logged({
      challengeId: 'c1', tokenId: 't1', clientId: 'k1', deviceId: 'd1', keyId: 'kid1', activationId: 'a1', keyHash: 'h1',
      errorCode: 30003, statusCode: 413, provider: 'twilio',
      error: new Error('failed', { cause: system }),
      reply: { error: { code: 'invalid_request', message: 'bad' } },
    });
    for (const [name, value] of Object.entries({ challengeId: 'c1', tokenId: 't1', clientId: 'k1', deviceId: 'd1', keyId: 'kid1', activationId: 'a1', keyHash: 'h1', errorCode: 30003, statusCode: 413, provider: 'twilio' })) {
      assert.equal(line[name], value, name);
    }
    assert.deepEqual(line.error, { name: 'Error', message: 'failed', cause: { name: 'Error', message: 'connect ECONNREFUSED 127.0.0.1:6379', code: 'ECONNREFUSED' } });
    assert.deepEqual(line.reply, { error: { code: 'invalid_request', message: 'bad' } });
    // A bare `code` outside an error is still the one a user typed.
    assert.deepEqual(logged({ request: { code: '123456' } }).request, { code: '[redacted]' });
  });

  it('masks the credentials of URLs, and leaves other URLs as written', () => {
    const line = logged({
      redis: 'redis://default:hunter2@redis.internal:6379/0',
      nats: 'nats://s3cr3ttoken@nats.internal:4222',
      callback: 'https://hooks.example.com/voice/answer?challenge=c1&token=abcdef&lang=en',
      seed: 'otpauth://totp/ACME:alice?secret=JBSWY3DPEHPK3PXP&issuer=ACME',
      plain: 'http://127.0.0.1:8080',
      mention: 'https://example.com/users/a@b',
    });
    assert.equal(line.redis, 'redis://default:***@redis.internal:6379/0');
    assert.equal(line.nats, 'nats://***@nats.internal:4222');
    assert.equal(line.callback, 'https://hooks.example.com/voice/answer?challenge=c1&token=***&lang=en');
    assert.equal(line.seed, '[redacted]');
    assert.equal(line.plain, 'http://127.0.0.1:8080');
    assert.equal(line.mention, 'https://example.com/users/a@b');
    assert.ok(!JSON.stringify(line).match(/hunter2|s3cr3ttoken|abcdef|JBSWY3DP/));
  });

  it('masks a password without a user, and URLs inside a longer text or an error\'s message', () => {
    const line = logged({
      requirepass: 'redis://:hunter2@redis.internal:6379',
      smtp: 'smtps://:hunter3@mail.example.com:465',
      sentence: 'REDIS_URL=redis://default:hunter4@redis.internal:6379 refused; try nats://tok5@nats:4222 next',
      seedInText: 'scan otpauth://totp/ACME:alice?secret=JBSWY3DPEHPK3PXP&issuer=ACME now',
      error: new Error('cannot reach redis://default:hunter6@redis.internal:6379'),
    });
    assert.equal(line.requirepass, 'redis://:***@redis.internal:6379');
    assert.equal(line.smtp, 'smtps://:***@mail.example.com:465');
    assert.equal(line.sentence, 'REDIS_URL=redis://default:***@redis.internal:6379 refused; try nats://***@nats:4222 next');
    assert.equal(line.seedInText, 'scan [redacted] now');
    assert.deepEqual(line.error, { name: 'Error', message: 'cannot reach redis://default:***@redis.internal:6379' });
    assert.ok(!JSON.stringify(line).match(/hunter\d|tok5|JBSWY3DP/));
  });

  it('masks a URL followed by punctuation, or that does not parse, and reads a long text in one pass', () => {
    const line = logged({
      period: 'connect to redis://:s3cret1@redis:6379.',
      comma: 'connect to redis://:s3cret2@redis:6379, retrying',
      parens: '(nats://user:s3cret3@nats:4222)',
      badPort: 'redis://user:s3cret4@redis:99999/0',
      error: new Error('failed redis://:s3cret5@redis:6379.'),
    });
    assert.equal(line.period, 'connect to redis://:***@redis:6379.');
    assert.equal(line.comma, 'connect to redis://:***@redis:6379, retrying');
    assert.equal(line.parens, '(nats://user:***@nats:4222)');
    assert.equal(line.badPort, 'redis://***@redis:99999/0');
    assert.deepEqual(line.error, { name: 'Error', message: 'failed redis://:***@redis:6379.' });
    assert.ok(!JSON.stringify(line).match(/s3cret\d/));
    // An error's message is cut as a string value is (2,000 characters), before its URLs are looked for.
    const long = logged({ error: new Error(`${'a'.repeat(100_000)}://${'b'.repeat(100_000)}`) }).error as { message: string };
    assert.equal(long.message.length, 2001);
  });
});
