import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError } from '@mfa/contracts';
// Verdicts are built the way the store adapter builds them from the scripts' replies.
import { maskedTokensOf, parseCodeCheck, parseResendVerdict, parseStartVerdict, parseVerifyVerdict, tokenSpecsOf } from '../adapters/script-replies.js';
import { decideResend, decideStart, decideStatus, decideVerify, maskPhoneNumber, phoneCountryAllowed, type StartContext } from './verdicts.js';

const server = { name: 'node-a', ip: '10.0.0.5' };
const ctx = (over: Partial<StartContext> = {}): StartContext => ({
  challengeId: 'tag.nonce',
  userId: 'helga@contoso.com',
  expiresAt: new Date('2026-01-01T00:03:00Z'),
  maxAttempts: 5,
  server,
  clientIp: '203.0.113.9',
  sealedSmsCode: () => 'v1.sealed',
  sealedPersonalData: (profile, dataKey) => `d1.sealed(${dataKey}:${[profile.displayName, profile.email, profile.phoneNumber].join('|')})`,
  ...over,
});
const code = (fn: () => unknown) => errorOf(fn)?.code ?? 'no-error';
const errorOf = (fn: () => unknown): { code: string; message: string } | undefined => {
  try {
    fn();
  } catch (error) {
    return error instanceof ContractError ? { code: error.code, message: error.message } : { code: 'not-a-contract-error', message: '' };
  }
  return undefined;
};

describe('start decisions', () => {
  it('given a pending SMS verdict with the user’s data key, then the personal data is sealed (v2) and the phone is nowhere in clear', () => {
    const verdict = parseStartVerdict(['pending', 'sms', '', 'Helga', 'h@contoso.com', '+14155550100', 'sv-SE', '3:v1.wrapped']);
    const outcome = decideStart(verdict, ctx());
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'pending', method: 'sms', expiresAt: '2026-01-01T00:03:00.000Z', sentTo: '+*********00' });
    assert.deepEqual([outcome.event?.type, (outcome.event as { version?: number }).version], ['ChallengeStarted', 2]);
    const data = outcome.event?.data as Record<string, unknown>;
    assert.equal(data.pii, 'd1.sealed(3:v1.wrapped:Helga|h@contoso.com|+14155550100)');
    assert.deepEqual(data.delivery, { channel: 'sms', sealedCode: 'v1.sealed', language: 'sv-SE' });
    assert.equal(data.profile, undefined);
    assert.ok(!JSON.stringify(data).includes('"+14155550100"') && !JSON.stringify(data).includes('"Helga"'));
  });

  it('given a tenant that leaves names or e-mail out of reports, then the event seals only what it keeps, whatever the projection pre-sealed', () => {
    const raw = ['pending', 'sms', '', 'Helga', 'h@contoso.com', '+14155550100', 'sv-SE', '3:v1.wrapped', 'd1.presealed-with-everything'];
    const pii = (omitted?: StartContext['omitted']) => (decideStart(parseStartVerdict(raw), ctx(omitted ? { omitted } : {})).event?.data as { pii?: string }).pii;
    assert.equal(pii(), 'd1.presealed-with-everything');
    assert.equal(pii({ displayName: true }), 'd1.sealed(3:v1.wrapped:|h@contoso.com|+14155550100)');
    assert.equal(pii({ displayName: true, email: true }), 'd1.sealed(3:v1.wrapped:||+14155550100)');
    // Without a data key yet (v1), the clear profile loses them too.
    const v1 = decideStart(parseStartVerdict(raw.slice(0, 7)), ctx({ omitted: { email: true } }));
    assert.deepEqual((v1.event?.data as { profile?: unknown }).profile, { displayName: 'Helga', phoneNumber: '+14155550100', language: 'sv-SE' });
  });

  it('given registration_required, then v2 with sealed personal data, or without any for an unknown user', () => {
    const known = decideStart(parseStartVerdict(['registration_required', '', 'no_method_registered', 'Helga', '', '', '', '1:v1.k']), ctx());
    assert.deepEqual([(known.event as { version?: number }).version, (known.event?.data as { pii?: string }).pii], [2, 'd1.sealed(1:v1.k:Helga||)']);
    let asked = false;
    const unknown = decideStart(
      parseStartVerdict(['registration_required', '', 'no_method_registered', '', '', '', '', '']),
      ctx({ sealedPersonalData: () => ((asked = true), 'x') }),
    );
    assert.equal((unknown.event as { version?: number }).version, 2);
    assert.equal((unknown.event?.data as { pii?: string }).pii, undefined);
    assert.equal(asked, false, 'no key, nothing sealed');
  });

  it('given a projection without a data key yet (written before data keys), when deciding, then v1 carries the profile as before', () => {
    const verdict = parseStartVerdict(['pending', 'sms', '', 'Helga', 'h@contoso.com', '+14155550100', 'sv-SE']);
    const outcome = decideStart(verdict, ctx());
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'pending', method: 'sms', expiresAt: '2026-01-01T00:03:00.000Z', sentTo: '+*********00' });
    assert.equal(outcome.event?.type, 'ChallengeStarted');
    const data = outcome.event?.data as { delivery?: unknown; profile: unknown; clientIp?: string };
    assert.deepEqual(data.delivery, { channel: 'sms', to: '+14155550100', sealedCode: 'v1.sealed', language: 'sv-SE' });
    assert.deepEqual(data.profile, { displayName: 'Helga', email: 'h@contoso.com', phoneNumber: '+14155550100', language: 'sv-SE' });
    assert.equal(data.clientIp, '203.0.113.9');
  });

  it('given a user with nothing personal to seal, then the start names the generation of their data key instead (the registration it belongs to)', () => {
    const nothing = ctx({ sealedPersonalData: () => undefined });
    const started = decideStart(parseStartVerdict(['pending', 'totp', '', '', '', '', '', '2:v1.k']), nothing);
    assert.deepEqual([(started.event?.data as { pii?: string }).pii, (started.event?.data as { keyGen?: number }).keyGen], [undefined, 2]);
    const bypassed = decideStart(parseStartVerdict(['bypassed', '', 'trusted_ip', '', '', '', '', '3:v1.k']), nothing);
    assert.equal((bypassed.event?.data as { keyGen?: number }).keyGen, 3);
    // With personal data sealed, the generation is in it: no keyGen. An unknown user has none.
    const sealedStart = decideStart(parseStartVerdict(['pending', 'totp', '', 'Helga', '', '', '', '2:v1.k']), ctx());
    assert.equal((sealedStart.event?.data as { keyGen?: number }).keyGen, undefined);
    const unknown = decideStart(parseStartVerdict(['registration_required', '', 'no_method_registered', '', '', '', '', '']), nothing);
    assert.equal((unknown.event?.data as { keyGen?: number }).keyGen, undefined);
  });

  it('given a pending TOTP verdict, when deciding, then no code is sealed and no delivery is requested', () => {
    let sealed = false;
    const outcome = decideStart(parseStartVerdict(['pending', 'totp', '', '', '', '', '', '2:v1.k']), ctx({ sealedSmsCode: () => ((sealed = true), 'x') }));
    assert.equal(sealed, false);
    assert.equal((outcome.event?.data as { delivery?: unknown }).delivery, undefined);
  });

  it('given no usable method, when deciding, then registration_required is answered and recorded', () => {
    const outcome = decideStart(parseStartVerdict(['registration_required', '', 'no_method_registered', '', '', '', '']), ctx());
    assert.equal(outcome.reply.status, 'registration_required');
    assert.equal(outcome.reply.reason, 'no_method_registered');
    assert.equal(outcome.reply.method, null);
    assert.equal(outcome.event?.type, 'ChallengeRegistrationRequired');
  });

  it('given an unknown tenant, unknown user or exhausted send budget, then the contract errors follow', () => {
    assert.equal(code(() => decideStart(parseStartVerdict(['unknown_tenant']), ctx())), 'not_found');
    assert.equal(code(() => decideStart(parseStartVerdict(['tenant_unread']), ctx())), 'unavailable');
    assert.equal(code(() => decideStart(parseStartVerdict(['not_found']), ctx())), 'not_found');
    assert.equal(code(() => decideStart(parseStartVerdict(['rate_limited', '120']), ctx())), 'rate_limited');
  });

  it('given a user locked out by wrong codes, then start and verify are rate_limited and record nothing', () => {
    assert.equal(code(() => decideStart(parseStartVerdict(['locked', '600']), ctx())), 'rate_limited');
    assert.equal(code(() => decideVerify(parseVerifyVerdict(['locked', '600']), { challengeId: 'c', server })), 'rate_limited');
  });

  it('given a user at the cap of consecutive wrong codes, then start and verify are rate_limited until an administrator unlocks', () => {
    for (const error of [
      errorOf(() => decideStart(parseStartVerdict(['capped']), ctx())),
      errorOf(() => decideVerify(parseVerifyVerdict(['capped']), { challengeId: 'c', server })),
    ]) {
      assert.equal(error?.code, 'rate_limited');
      assert.match(error?.message ?? '', /administrator must unlock/);
      assert.doesNotMatch(error?.message ?? '', /\d+ s/, 'no time to wait: waiting does not end it');
    }
  });
});

describe('where a code goes (sentTo)', () => {
  it('given a phone number, then every digit but the last two is masked and the + kept', () => {
    assert.equal(maskPhoneNumber('+14155550178'), '+*********78');
    assert.equal(maskPhoneNumber('+46701234567'), '+*********67');
    assert.equal(maskPhoneNumber('+3531234'), '+*****34');
    assert.equal(maskPhoneNumber('12'), '12');
  });

  it('given a pending sms or voice challenge, then the reply says where (masked); never for other methods, and never the code', () => {
    const voiceCtx = ctx({ voice: { callerId: '+14155550000', pinMode: false, fraudCode: '0' } });
    const sms = decideStart(parseStartVerdict(['pending', 'sms', '', 'Helga', '', '+14155550178', '', '2:v1.k']), ctx({ sealedSmsCode: () => 'v1.sealed-314159' }));
    const voice = decideStart(parseStartVerdict(['pending', 'voice', '', '', '', '+46701234567', '', '2:v1.k']), voiceCtx);
    assert.equal(sms.reply.sentTo, '+*********78');
    assert.equal(voice.reply.sentTo, '+*********67');
    assert.ok(!JSON.stringify(sms.reply).includes('314159') && !JSON.stringify(sms.reply).includes('5550178'));
    for (const method of ['totp', 'push']) {
      const reply = decideStart(parseStartVerdict(['pending', method, '', '', '', '+14155550178', '', '2:v1.k']), ctx()).reply;
      assert.equal('sentTo' in reply, false, method);
    }
    const required = decideStart(parseStartVerdict(['registration_required', '', 'method_disabled', '', '', '+14155550178', '', '2:v1.k']), ctx()).reply;
    assert.equal('sentTo' in required, false);
  });
});

describe('how a sign-in came (via) and who decided it (server)', () => {
  const radius = { name: 'vpn-gateway', ip: '192.0.2.10' };
  const raw: Record<string, string[]> = {
    ChallengeStarted: ['pending', 'totp', '', '', '', '', '', '2:v1.k'],
    ChallengeRegistrationRequired: ['registration_required', '', 'method_disabled', '', '', '', '', '2:v1.k'],
    ChallengeDenied: ['blocked', '', 'user_blocked', '', '', '', '', '2:v1.k'],
    ChallengeBypassed: ['bypassed', '', 'trusted_ip', '', '', '', '', '2:v1.k'],
  };

  it('given a RADIUS start, then every start event says via radius with the RADIUS client as its server', () => {
    for (const [type, reply] of Object.entries(raw)) {
      const event = decideStart(parseStartVerdict(reply), ctx({ server: radius, via: 'radius' })).event;
      assert.equal(event?.type, type);
      const data = event?.data as { via?: string; server?: unknown };
      assert.deepEqual([data.via, data.server], ['radius', radius], type);
    }
    // v1 (a projection without a data key yet) too.
    const v1 = decideStart(parseStartVerdict(['pending', 'sms', '', 'Helga', '', '+14155550178', '']), ctx({ server: radius, via: 'radius' })).event;
    assert.deepEqual([(v1 as { version?: number }).version, (v1?.data as { via?: string }).via], [1, 'radius']);
  });

  it('given a start over NATS, then the events carry no via and the instance as their server', () => {
    for (const [type, reply] of Object.entries(raw)) {
      const data = decideStart(parseStartVerdict(reply), ctx()).event?.data as Record<string, unknown>;
      assert.equal('via' in data, false, type);
      assert.deepEqual(data.server, server, type);
    }
  });
});

describe('verify decisions', () => {
  const vctx = { challengeId: 'tag.nonce', server };

  it('given a matching code, then approved with the token that matched', () => {
    const outcome = decideVerify(parseVerifyVerdict(['approved', 'u', 'totp', 'tok1']), vctx);
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'approved' });
    assert.equal(outcome.event?.type, 'ChallengeApproved');
    assert.equal((outcome.event?.data as { tokenId?: string }).tokenId, 'tok1');
  });

  it('given a wrong code with attempts left, then pending/invalid_code and a rejection event', () => {
    const outcome = decideVerify(parseVerifyVerdict(['rejected', 'u', 'sms', '2', '3', 'mismatch', '4', '1700000900000', '7']), vctx);
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'pending', reason: 'invalid_code' });
    assert.deepEqual(
      { attempt: 2, attemptsRemaining: 3, cause: 'mismatch', guard: { failures: 4, resetAt: 1_700_000_900_000, consecutive: 7 } },
      (({ attempt, attemptsRemaining, cause, guard }) => ({ attempt, attemptsRemaining, cause, guard }))(
        outcome.event?.data as { attempt: number; attemptsRemaining: number; cause: string; guard: unknown },
      ),
    );
  });

  it('given a replayed TOTP step, then it is rejected like a wrong code, with the cause kept for audit', () => {
    const outcome = decideVerify(parseVerifyVerdict(['rejected', 'u', 'totp', '1', '4', 'reused', '1', '1700000900000', '1']), vctx);
    assert.equal(outcome.reply.reason, 'invalid_code');
    assert.equal((outcome.event?.data as { cause: string }).cause, 'reused');
  });

  it('given the last attempt fails, then denied/too_many_attempts', () => {
    const outcome = decideVerify(parseVerifyVerdict(['exhausted', 'u', 'sms', '5', 'mismatch', '10', '1700000900000', '12']), vctx);
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'denied', reason: 'too_many_attempts' });
    assert.equal(outcome.event?.type, 'ChallengeAttemptsExhausted');
    assert.deepEqual((outcome.event?.data as { guard: unknown }).guard, { failures: 10, resetAt: 1_700_000_900_000, consecutive: 12 });
  });

  it('given the wrong code that reaches the lockout threshold, then denied/locked_out, recorded as exhausted with lockedOut', () => {
    const outcome = decideVerify(parseVerifyVerdict(['locked_out', 'u', 'totp', '2', 'mismatch', '3', '1700000900000', '3']), vctx);
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'denied', reason: 'locked_out' });
    assert.equal(outcome.event?.type, 'ChallengeAttemptsExhausted');
    assert.deepEqual(
      (({ attempts, lastCause, lockedOut, guard }) => ({ attempts, lastCause, lockedOut, guard }))(outcome.event?.data as never),
      { attempts: 2, lastCause: 'mismatch', lockedOut: true, guard: { failures: 3, resetAt: 1_700_000_900_000, consecutive: 3 } },
    );
  });

  it('given a wrong code without readable failure counters, then the reply is refused as a script error', () => {
    assert.throws(() => parseVerifyVerdict(['rejected', 'u', 'sms', '2', '3', 'mismatch']), /failure counters/);
  });

  it('given an expired challenge, then denied/expired, recorded only the first time', () => {
    const first = decideVerify(parseVerifyVerdict(['expired', 'u', 'sms']), vctx);
    const again = decideVerify(parseVerifyVerdict(['expired_again', 'u', 'sms']), vctx);
    assert.deepEqual(first.reply, { challengeId: 'tag.nonce', status: 'denied', reason: 'expired' });
    assert.equal(first.event?.type, 'ChallengeExpired');
    assert.deepEqual(again.reply, first.reply);
    assert.equal(again.event, undefined);
  });

  it('given a completed or unknown challenge, then conflict or not_found', () => {
    assert.equal(code(() => decideVerify(parseVerifyVerdict(['conflict', 'u', 'sms', 'approved']), vctx)), 'conflict');
    assert.equal(code(() => decideVerify(parseVerifyVerdict(['not_found']), vctx)), 'not_found');
  });
});

describe('first verify call', () => {
  it('given a pending TOTP challenge, then the user\'s masked tokens come back to be checked outside Redis', () => {
    const check = parseCodeCheck(['totp', 'u', 'app', '6:30:0a0b:c0ffee', '-1', 'hw', '8:60:0c0d:beef', '55', 'h256', '6:30:0e0f:abcd:sha256', '7', 'odd', 'garbage', '1', 'h512', '6:30:0e0f:abcd:sha512', '1']);
    assert.equal(check.kind, 'totp_check');
    if (check.kind !== 'totp_check') return;
    assert.equal(check.userId, 'u');
    assert.deepEqual(
      maskedTokensOf(check.tokens).map((t) => ({ ...t, nonce: Buffer.from(t.nonce).toString('hex'), masked: Buffer.from(t.masked).toString('hex') })),
      [
        { tokenId: 'app', digits: 6, period: 30, algorithm: 'SHA1', nonce: '0a0b', masked: 'c0ffee', lastStep: -1 },
        { tokenId: 'hw', digits: 8, period: 60, algorithm: 'SHA1', nonce: '0c0d', masked: 'beef', lastStep: 55 },
        { tokenId: 'h256', digits: 6, period: 30, algorithm: 'SHA256', nonce: '0e0f', masked: 'abcd', lastStep: 7 },
      ],
      'an entry this version cannot read is left out: it can never match',
    );
  });

  it('given a pending TOTP start, then the user\'s tokens follow the reply, for the verify to check the code before its one call', () => {
    const raw = ['pending', 'totp', '', 'Helga', '', '', '', '2:v1.k', '', 'app', '6:30:0a0b:c0ffee', '-1', 'hw', '8:60:0c0d:beef', '55'];
    const verdict = parseStartVerdict(raw);
    assert.ok(verdict.kind === 'pending');
    assert.deepEqual(verdict.totp, raw.slice(9));
    assert.deepEqual(tokenSpecsOf(verdict.totp!), ['app', '6:30:0a0b:c0ffee', 'hw', '8:60:0c0d:beef']);
    assert.deepEqual(maskedTokensOf(verdict.totp!).map((t) => [t.tokenId, t.digits, t.period, t.lastStep]), [['app', 6, 30, -1], ['hw', 8, 60, 55]]);
    // The reply the outbox keeps (the relay parses it) has no tokens, nor has any other method's.
    assert.equal('totp' in parseStartVerdict(raw.slice(0, 9)), false);
    assert.equal('totp' in parseStartVerdict(['pending', 'sms', '', '', '', '+14155550100', '', '2:v1.k', '']), false);
  });

  it('given an SMS challenge, then the first call already holds the verdict', () => {
    assert.deepEqual(parseCodeCheck(['approved', 'u', 'sms', '']), { kind: 'approved', userId: 'u', method: 'sms' });
    assert.deepEqual(parseCodeCheck(['capped']), { kind: 'capped' });
  });
});

describe('resend decisions', () => {
  const resend = (raw: string[]) => decideResend(parseResendVerdict(raw), { challengeId: 'tag.nonce', server, minIntervalSeconds: 30 });

  it('given a resend the script counted, then pending with the resends left, and an event asking for resend n of the code', () => {
    const outcome = resend(['resent', 'helga@contoso.com', 'sms', '2', '2', String(Date.parse('2026-01-01T00:03:00Z'))]);
    assert.deepEqual(outcome.reply, { challengeId: 'tag.nonce', status: 'pending', resendsRemaining: 2 });
    assert.deepEqual(outcome.event, {
      type: 'ChallengeResendRequested',
      data: { challengeId: 'tag.nonce', userId: 'helga@contoso.com', method: 'sms', server, resend: 2, expiresAt: '2026-01-01T00:03:00.000Z' },
    });
  });

  it('given a challenge of another tenant or none, another method, or one no longer pending, then not_found or conflict', () => {
    assert.equal(code(() => resend(['not_found'])), 'not_found');
    assert.deepEqual(errorOf(() => resend(['conflict', 'method', 'totp'])), { code: 'conflict', message: "only an SMS challenge's code can be sent again (this one is totp)" });
    assert.deepEqual(errorOf(() => resend(['conflict', 'status', 'approved'])), { code: 'conflict', message: 'challenge already completed (approved)' });
    assert.deepEqual(errorOf(() => resend(['conflict', 'status', 'expired'])), { code: 'conflict', message: 'the challenge has expired; start a new one' });
  });

  it('given a limit reached, then rate_limited: with the wait for the interval and the throttles, without one when a new start is needed', () => {
    const limited = (raw: string[]) => {
      try {
        resend(raw);
      } catch (error) {
        if (error instanceof ContractError) return { code: error.code, message: error.message, retryAfterSeconds: error.retryAfterSeconds };
      }
      return undefined;
    };
    assert.deepEqual(limited(['rate_limited', '12', 'interval']), { code: 'rate_limited', message: 'the code was sent less than 30 s ago; try again in 12 s', retryAfterSeconds: 12 });
    assert.deepEqual(limited(['rate_limited', '240', 'user']), { code: 'rate_limited', message: 'too many codes sent to this user; try again in 240 s', retryAfterSeconds: 240 });
    assert.equal(limited(['rate_limited', '60', 'phone'])?.message, "too many codes sent to this user's phone number; try again in 60 s");
    assert.deepEqual(limited(['exhausted', '5']), { code: 'rate_limited', message: "this challenge's code was sent 5 times already; start a new challenge", retryAfterSeconds: undefined });
    assert.equal(limited(['locked', '600'])?.retryAfterSeconds, 600);
    assert.equal(limited(['capped'])?.retryAfterSeconds, undefined);
  });
});

describe('status decisions', () => {
  const now = new Date('2026-01-01T00:00:00Z');
  it('given a pending challenge within its lifetime, then pending', () => {
    assert.deepEqual(decideStatus('c', { status: 'pending', reason: '', expiresAt: now.getTime() + 1 }, now), { challengeId: 'c', status: 'pending' });
  });
  it('given a pending challenge past its lifetime, then denied/expired', () => {
    assert.deepEqual(decideStatus('c', { status: 'pending', reason: '', expiresAt: now.getTime() }, now), {
      challengeId: 'c',
      status: 'denied',
      reason: 'expired',
    });
  });
  it('given a denied challenge, then its reason is kept', () => {
    assert.deepEqual(decideStatus('c', { status: 'denied', reason: 'too_many_attempts', expiresAt: 0 }, now), {
      challengeId: 'c',
      status: 'denied',
      reason: 'too_many_attempts',
    });
  });
});

describe('phone country rules', () => {
  it('given every country allowed and none blocked, then any phone, even of unknown country', () => {
    const rules = { allowedCountries: null, blockedCountries: [] };
    assert.equal(phoneCountryAllowed(rules, 'SE'), true);
    assert.equal(phoneCountryAllowed(rules, ''), true);
  });
  it('given an allow-list, then only its countries, and never a phone of unknown country', () => {
    const rules = { allowedCountries: ['SE', 'FR'], blockedCountries: [] };
    assert.equal(phoneCountryAllowed(rules, 'FR'), true);
    assert.equal(phoneCountryAllowed(rules, 'GB'), false);
    assert.equal(phoneCountryAllowed(rules, ''), false);
  });
  it('given a block-list, then its countries are refused and the block wins over the allow-list', () => {
    assert.equal(phoneCountryAllowed({ allowedCountries: null, blockedCountries: ['NG'] }, 'NG'), false);
    assert.equal(phoneCountryAllowed({ allowedCountries: null, blockedCountries: ['NG'] }, ''), true);
    assert.equal(phoneCountryAllowed({ allowedCountries: ['NG', 'SE'], blockedCountries: ['NG'] }, 'NG'), false);
    assert.equal(phoneCountryAllowed({ allowedCountries: ['NG', 'SE'], blockedCountries: ['NG'] }, 'SE'), true);
  });
});
