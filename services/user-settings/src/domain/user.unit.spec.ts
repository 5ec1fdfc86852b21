import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { totp, totpStep } from '@mfa/crypto';
import {
  deciderSpec,
  fakeSealedSecret,
  testUser,
  totpTokenActivated,
  totpTokenEnrolled,
  userErased,
  userProfileChanged,
  userRegistered,
} from '@mfa/testing';
import {
  appPasswordRequired,
  defaultMethodOf,
  evolveUser,
  initialUserState,
  MAX_ENROLMENTS_PER_DAY,
  MAX_TOTP_TOKENS,
  methodsOf,
  PENDING_TOKEN_LIFETIME_MS,
  userDecider,
  type UserEvent,
} from './user.js';

const spec = deciderSpec(userDecider);
const now = new Date('2025-06-01T12:00:10.000Z');
const minutesAgo = (m: number) => new Date(now.getTime() - m * 60_000).toISOString();
const secret = Buffer.from('0123456789abcdefghij');
const sealed = fakeSealedSecret;

// Helga has a phone number (so sms) and nothing else the register commands below would change.
const helga = testUser({ profile: { displayName: 'Helga', phoneNumber: '+14155550123' } });
const registered = (at = minutesAgo(60)) => userRegistered(helga, { occurredAt: at });
const enrolled = (tokenId: string, at = minutesAgo(1)) => totpTokenEnrolled(helga, { occurredAt: at, data: { tokenId } });
const activated = (tokenId: string, step = 1000) =>
  totpTokenActivated(helga, { occurredAt: minutesAgo(0), data: { tokenId, step } });
const enroll = (tokenId = 'new-token') =>
  ({ type: 'EnrollTotpToken', data: { tokenId, label: 'phone', sealedSecret: sealed(tokenId) } }) as const;
const activate = (code: string, tokenId = 'tok') =>
  ({ type: 'ActivateTotpToken', data: { tokenId, code, secret } }) as const;

describe('user decider: register', () => {
  it('registers a new user with the fields given', () => {
    spec
      .given([])
      .when({ type: 'RegisterUser', data: { userId: 'u1', email: 'u1@contoso.com', language: 'sv-SE' } }, now)
      .then([
        { type: 'UserRegistered', data: { userId: 'u1', email: 'u1@contoso.com', language: 'sv-SE' }, occurredAt: now.toISOString() },
      ]);
  });

  it('records only the fields that changed for an existing user', () => {
    spec
      .given([registered()])
      .when(
        { type: 'RegisterUser', data: { userId: 'helga@contoso.com', displayName: 'Helga', phoneNumber: '+46701234567', email: 'h@contoso.com' } },
        now,
      )
      .then([
        { type: 'UserProfileChanged', data: { phoneNumber: '+46701234567', email: 'h@contoso.com' }, occurredAt: now.toISOString() },
      ]);
  });

  it('changes nothing when registered again with the same values', () => {
    spec
      .given([registered()])
      .when({ type: 'RegisterUser', data: { userId: 'helga@contoso.com', displayName: 'Helga', phoneNumber: '+14155550123' } }, now)
      .thenNothing();
  });

  it('treats omitted fields as unchanged, not as removed', () => {
    spec.given([registered()]).when({ type: 'RegisterUser', data: { userId: 'helga@contoso.com' } }, now).thenNothing();
  });
});

describe('user decider: TOTP enrollment', () => {
  it('rejects enrollment for an unknown user', () => {
    spec.given([]).when(enroll(), now).thenThrows('not_found', /unknown user/);
  });

  it('enrolls a pending SHA-1, 6-digit, 30-second token', () => {
    spec
      .given([registered()])
      .when(enroll('t1'), now)
      .then([
        {
          type: 'TotpTokenEnrolled',
          data: { tokenId: 't1', label: 'phone', sealedSecret: sealed('t1'), digits: 6, period: 30, algorithm: 'SHA1' },
          occurredAt: now.toISOString(),
        },
      ]);
  });

  it(`allows the ${MAX_TOTP_TOKENS}th token`, () => {
    const four = ['a', 'b', 'c', 'd'].map((id) => enrolled(id));
    const [event] = userDecider.decide(enroll(), [registered(), ...four].reduce(evolveUser, initialUserState()), now);
    assert.equal(event?.type, 'TotpTokenEnrolled');
  });

  it(`refuses a 6th token when ${MAX_TOTP_TOKENS} are active or pending`, () => {
    spec
      .given([registered(), enrolled('a'), activated('a'), enrolled('b'), activated('b'), enrolled('c'), enrolled('d'), enrolled('e')])
      .when(enroll(), now)
      .thenThrows('conflict');
  });

  it('does not count pending tokens older than 10 minutes', () => {
    const stale = ['a', 'b', 'c', 'd', 'e'].map((id) => enrolled(id, minutesAgo(10)));
    const [event] = userDecider.decide(enroll(), [registered(), ...stale].reduce(evolveUser, initialUserState()), now);
    assert.equal(event?.type, 'TotpTokenEnrolled');
  });

  it('counts pending tokens younger than 10 minutes', () => {
    const fresh = ['a', 'b', 'c', 'd', 'e'].map((id) => enrolled(id, minutesAgo(9.9)));
    spec.given([registered(), ...fresh]).when(enroll(), now).thenThrows('conflict');
  });

  it('counts active tokens however old their enrollment', () => {
    const old = ['a', 'b', 'c', 'd', 'e'].flatMap((id) => [enrolled(id, minutesAgo(600)), activated(id)]);
    spec.given([registered(), ...old]).when(enroll(), now).thenThrows('conflict');
  });

  it(`refuses more than ${MAX_ENROLMENTS_PER_DAY} enrolments a day, so abandoned ones cannot grow the aggregate without bound`, () => {
    const abandoned = Array.from({ length: MAX_ENROLMENTS_PER_DAY }, (_, i) => enrolled(`x${i}`, minutesAgo(20 + i * 60)));
    spec.given([registered(), ...abandoned]).when(enroll(), now).thenThrows('rate_limited');
    const yesterday = Array.from({ length: MAX_ENROLMENTS_PER_DAY }, (_, i) => enrolled(`y${i}`, minutesAgo(24 * 60 + i)));
    const [event] = userDecider.decide(enroll(), [registered(), ...yesterday].reduce(evolveUser, initialUserState()), now);
    assert.equal(event?.type, 'TotpTokenEnrolled');
  });

  it('counts enrolments deleted since: enrolling and deleting in turn does not get round the cap', () => {
    const churn = Array.from({ length: MAX_ENROLMENTS_PER_DAY }, (_, i) => [
      enrolled(`z${i}`, minutesAgo(60 - i)),
      { type: 'TotpTokenDeleted', data: { tokenId: `z${i}` }, occurredAt: minutesAgo(59 - i) } as UserEvent,
    ]).flat();
    const state = [registered(), ...churn].reduce(evolveUser, initialUserState());
    assert.deepEqual(state.tokens, []);
    spec.given([registered(), ...churn]).when(enroll(), now).thenThrows('rate_limited');
  });
});

describe('user decider: TOTP activation', () => {
  const step = totpStep(now.getTime());
  const at = (s: number) => totp(secret, s * 30_000);

  it('activates with the code of the current step and records the step', () => {
    spec
      .given([registered(), enrolled('tok')])
      .when(activate(at(step)), now)
      .then([{ type: 'TotpTokenActivated', data: { tokenId: 'tok', step }, occurredAt: now.toISOString() }]);
  });

  it('accepts the previous and the next step (clock drift), recording the matched step', () => {
    for (const s of [step - 1, step + 1]) {
      spec
        .given([registered(), enrolled('tok')])
        .when(activate(at(s)), now)
        .then([{ type: 'TotpTokenActivated', data: { tokenId: 'tok', step: s }, occurredAt: now.toISOString() }]);
    }
  });

  it('decides nothing for a wrong code or one two steps away', () => {
    const wrong = String((Number(at(step)) + 1) % 1_000_000).padStart(6, '0');
    for (const code of [wrong, at(step - 2), at(step + 2), '1234', '12345678']) {
      if ([at(step - 1), at(step), at(step + 1)].includes(code)) continue;
      spec.given([registered(), enrolled('tok')]).when(activate(code), now).thenNothing();
    }
  });

  it('refuses a token that is already active', () => {
    spec.given([registered(), enrolled('tok'), activated('tok')]).when(activate(at(step)), now).thenThrows('conflict');
  });

  it('does not find an unknown token, user, or an expired enrollment', () => {
    spec.given([registered(), enrolled('tok')]).when(activate(at(step), 'other'), now).thenThrows('not_found', /unknown token/);
    spec.given([]).when(activate(at(step)), now).thenThrows('not_found', /unknown user/);
    const expiredAt = new Date(now.getTime() - PENDING_TOKEN_LIFETIME_MS).toISOString();
    spec.given([registered(), enrolled('tok', expiredAt)]).when(activate(at(step)), now).thenThrows('not_found', /expired/);
  });
});

describe('user state: methods', () => {
  const fold = (events: UserEvent[]) => events.reduce(evolveUser, initialUserState());

  it('offers sms with a phone number, totp once a token is active, totp first', () => {
    assert.deepEqual(methodsOf(fold([registered()])), ['sms', 'voice']);
    assert.deepEqual(methodsOf(fold([registered(), enrolled('tok')])), ['sms', 'voice']);
    const both = fold([registered(), enrolled('tok'), activated('tok')]);
    assert.deepEqual(methodsOf(both), ['totp', 'sms', 'voice']);
    // A number the phone-number library knows to be a fixed line has both (MISSION.md, Telephony).
    assert.deepEqual(methodsOf(fold([registered(), userProfileChanged(helga, { data: { phoneNumber: '+46812345678' } })])), ['sms', 'voice']);
    assert.equal(defaultMethodOf(both), 'totp');
  });

  it('has no method and no default without phone or active token', () => {
    const state = fold([userRegistered(testUser({ userId: 'u', profile: {} }), { occurredAt: minutesAgo(1) })]);
    assert.deepEqual(methodsOf(state), []);
    assert.equal(defaultMethodOf(state), undefined);
  });

  it('merges profile changes and keeps the activation step', () => {
    const state = fold([
      registered(),
      userProfileChanged(helga, { occurredAt: minutesAgo(1), data: { email: 'h@contoso.com' } }),
      enrolled('tok'),
      activated('tok', 42),
    ]);
    assert.deepEqual(state.profile, { displayName: 'Helga', phoneNumber: '+14155550123', email: 'h@contoso.com' });
    assert.equal(state.tokens[0]?.activatedStep, 42);
  });
});

describe('user decider: erase', () => {
  const erase = (gen = 1) => ({ type: 'EraseUser', data: { userId: helga.userId, gen } }) as const;
  const erased = (gen = 1) => userErased(helga, gen, minutesAgo(30));

  it('records UserErased with the generation of the data key to destroy', () => {
    spec
      .given([registered(), enrolled('tok'), activated('tok')])
      .when(erase(1), now)
      .then([{ type: 'UserErased', data: { userId: helga.userId, gen: 1 }, occurredAt: now.toISOString() }]);
  });

  it('answers not_found for a user that never existed, and records nothing again for an erased one', () => {
    spec.given([]).when(erase(), now).thenThrows('not_found', /unknown user/);
    spec.given([registered(), erased()]).when(erase(), now).thenNothing();
  });

  it('forgets everything of the user: a register afterwards starts a new user, a later generation to erase', () => {
    const fold = (events: UserEvent[]) => events.reduce(evolveUser, initialUserState());
    const after = fold([registered(), enrolled('tok'), activated('tok'), erased(1)]);
    assert.deepEqual(after, { ...initialUserState(), erasedGen: 1 });
    assert.deepEqual(methodsOf(after), []);
    spec.given([registered(), erased(1)]).when(enroll(), now).thenThrows('not_found');
    spec
      .given([registered(), erased(1)])
      .when({ type: 'RegisterUser', data: { userId: helga.userId, displayName: 'Helga' } }, now)
      .then([{ type: 'UserRegistered', data: { userId: helga.userId, displayName: 'Helga' }, occurredAt: now.toISOString() }]);
    const again = fold([registered(), erased(1), registered()]);
    assert.deepEqual([again.registered, again.erasedGen, again.tokens.length], [true, 1, 0]);
    spec.given([registered(), erased(1), registered()]).when(erase(2), now).then([
      { type: 'UserErased', data: { userId: helga.userId, gen: 2 }, occurredAt: now.toISOString() },
    ]);
    assert.throws(() => userDecider.decide(erase(1), again, now), /generation 1 was erased before/);
  });
});

describe('user decider: reset and token deletion', () => {
  it('given a user with a token and a phone, when reset, then every method is cleared and the profile stays', () => {
    spec.given([registered(), enrolled('a'), activated('a')]).when({ type: 'ResetMfa', data: { userId: helga.userId } }, now).then([
      { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: now.toISOString() },
    ]);
    const state = [registered(), enrolled('a'), activated('a')].reduce((s, e) => evolveUser(s, e as UserEvent), initialUserState());
    const reset = evolveUser(state, { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: now.toISOString() });
    assert.deepEqual([methodsOf(reset), reset.tokens, reset.profile.displayName, reset.profile.phoneNumber], [[], [], 'Helga', undefined]);
  });

  it('given a phone with an extension, when reset, then the extension goes with the phone', () => {
    const withExtension = userRegistered(testUser({ profile: { displayName: 'Desk', phoneNumber: '+14155550123', phoneExtension: '4711' } }));
    const state = evolveUser(initialUserState(), withExtension as UserEvent);
    assert.equal(state.profile.phoneExtension, '4711');
    const reset = evolveUser(state, { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: now.toISOString() });
    assert.deepEqual([reset.profile.phoneNumber, reset.profile.phoneExtension, reset.profile.displayName], [undefined, undefined, 'Desk']);
  });

  it('given nothing to clear, when reset again, then nothing is recorded; an unknown user is not_found', () => {
    spec.given([userRegistered(testUser({ profile: { displayName: 'No Methods' } }))]).when({ type: 'ResetMfa', data: { userId: helga.userId } }, now).thenNothing();
    spec.given([]).when({ type: 'ResetMfa', data: { userId: helga.userId } }, now).thenThrows('not_found');
  });

  it('given push activation codes issued before a reset or a new registration, when one activates, then not_found; later ones activate', () => {
    const device = (codeIssuedAtMs: number) =>
      ({ type: 'ActivatePushDevice', data: { deviceId: 'd1', name: 'phone', platform: 'ios', algorithm: 'ES256', publicKey: 'k' }, codeIssuedAtMs }) as const;
    const resetAt = minutesAgo(2);
    const reset = { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: resetAt } as UserEvent;
    spec.given([registered(), reset]).when(device(Date.parse(resetAt) - 1), now).thenThrows('not_found');
    assert.equal(userDecider.decide(device(Date.parse(resetAt)), [registered(), reset].reduce((st, e) => evolveUser(st, e as UserEvent), initialUserState()), now).length, 1);
    // Erased, then the same id registered again: a new user, whose codes start at the registration.
    const again = userRegistered(helga, { occurredAt: minutesAgo(1) });
    spec.given([registered(minutesAgo(5)), userErased(helga, 1, minutesAgo(2)), again]).when(device(Date.parse(minutesAgo(3))), now).thenThrows('not_found');
    // Registered again without an erasure (a profile sync): the codes stay good.
    spec.given([registered(minutesAgo(5)), userRegistered(helga, { occurredAt: minutesAgo(1) })]).when(device(Date.parse(minutesAgo(3))), now).then([
      { type: 'PushDeviceActivated', data: { deviceId: 'd1', name: 'phone', platform: 'ios', algorithm: 'ES256', publicKey: 'k' }, occurredAt: now.toISOString() },
    ]);
  });

  it('given nothing to clear but push activation codes that may still be good, when reset, then the reset is recorded (it revokes them)', () => {
    spec.given([userRegistered(testUser({ profile: { displayName: 'No Methods' } }))]).when({ type: 'ResetMfa', data: { userId: helga.userId }, codesOutstanding: true }, now).then([
      { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: now.toISOString() },
    ]);
  });

  it('given a token, when deleted, then it is gone; an unknown token is not_found', () => {
    spec.given([registered(), enrolled('a'), enrolled('b')]).when({ type: 'DeleteTotpToken', data: { tokenId: 'a' } }, now).then([
      { type: 'TotpTokenDeleted', data: { tokenId: 'a' }, occurredAt: now.toISOString() },
    ]);
    spec.given([registered()]).when({ type: 'DeleteTotpToken', data: { tokenId: 'nope' } }, now).thenThrows('not_found', /unknown token/);
  });
});

describe('user decider: default method', () => {
  const state = (events: Parameters<typeof evolveUser>[1][]) => events.reduce((s, e) => evolveUser(s, e), initialUserState());
  it('given a user with a token and a phone, when sms is chosen, then sms is the default until the phone goes', () => {
    const given = [registered(), enrolled('a'), activated('a')] as UserEvent[];
    assert.equal(defaultMethodOf(state(given)), 'totp');
    spec.given(given).when({ type: 'ChooseDefaultMethod', data: { method: 'sms' } }, now).then([
      { type: 'DefaultMethodChosen', data: { method: 'sms' }, occurredAt: now.toISOString() },
    ]);
    const chosen = [...given, { type: 'DefaultMethodChosen', data: { method: 'sms' }, occurredAt: now.toISOString() }] as UserEvent[];
    assert.equal(defaultMethodOf(state(chosen)), 'sms');
    spec.given(chosen).when({ type: 'ChooseDefaultMethod', data: { method: 'sms' } }, now).thenNothing();
    assert.equal(defaultMethodOf(state([...chosen, { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: now.toISOString() }])), undefined);
  });

  it('given a method the user has not registered, when chosen, then conflict', () => {
    spec.given([registered()]).when({ type: 'ChooseDefaultMethod', data: { method: 'totp' } }, now).thenThrows('conflict', /not registered totp/);
  });
});

describe('user decider: app passwords', () => {
  const created = (appPasswordId: string) => ({ type: 'AppPasswordCreated', data: { appPasswordId, hash: `scrypt$h-${appPasswordId}` }, occurredAt: now.toISOString() }) as UserEvent;
  it('given a user, when an app password is created, then its hash is recorded; a reset clears them all', () => {
    spec.given([registered()]).when({ type: 'CreateAppPassword', data: { appPasswordId: 'p1', name: 'mail', hash: 'scrypt$x' } }, now).then([
      { type: 'AppPasswordCreated', data: { appPasswordId: 'p1', name: 'mail', hash: 'scrypt$x' }, occurredAt: now.toISOString() },
    ]);
    const state = [registered(), created('p1'), { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: now.toISOString() } as UserEvent].reduce((s, e) => evolveUser(s, e), initialUserState());
    assert.deepEqual(state.appPasswords, []);
  });

  it('given app passwords, when one is deleted, then it is gone; when all are, then all; an unknown one is not_found; none left, nothing recorded', () => {
    spec.given([registered(), created('p1'), created('p2')]).when({ type: 'DeleteAppPasswords', data: { appPasswordId: 'p1' } }, now).then([
      { type: 'AppPasswordDeleted', data: { appPasswordId: 'p1' }, occurredAt: now.toISOString() },
    ]);
    spec.given([registered(), created('p1')]).when({ type: 'DeleteAppPasswords', data: {} }, now).then([{ type: 'AppPasswordDeleted', data: {}, occurredAt: now.toISOString() }]);
    spec.given([registered(), created('p1')]).when({ type: 'DeleteAppPasswords', data: { appPasswordId: 'nope' } }, now).thenThrows('not_found');
    spec.given([registered()]).when({ type: 'DeleteAppPasswords', data: {} }, now).thenNothing();
  });

  it('given 10 app passwords, when an 11th is created, then conflict', () => {
    spec.given([registered(), ...Array.from({ length: 10 }, (_, n) => created(`p${n}`))]).when({ type: 'CreateAppPassword', data: { appPasswordId: 'p11', hash: 'scrypt$x' } }, now).thenThrows('conflict');
  });

  const used = (appPasswordId: string) => ({ type: 'AppPasswordUsed', data: { appPasswordId }, occurredAt: now.toISOString() }) as UserEvent;
  it('given an app password, when it is used the first time, then AppPasswordUsed; later uses and unknown ids record nothing', () => {
    spec.given([registered(), created('p1')]).when({ type: 'RecordAppPasswordUse', data: { appPasswordId: 'p1' } }, now).then([used('p1')]);
    spec.given([registered(), created('p1'), created('p2'), used('p1')]).when({ type: 'RecordAppPasswordUse', data: { appPasswordId: 'p2' } }, now).thenNothing();
    spec.given([registered(), created('p1')]).when({ type: 'RecordAppPasswordUse', data: { appPasswordId: 'gone' } }, now).thenNothing();
  });

  it('app passwords are required for legacy clients while the user has one, and once used, even with none left; a reset ends it', () => {
    const fold = (events: UserEvent[]) => events.reduce(evolveUser, initialUserState());
    assert.equal(appPasswordRequired(fold([registered()])), false);
    assert.equal(appPasswordRequired(fold([registered(), created('p1')])), true);
    assert.equal(appPasswordRequired(fold([registered(), created('p1'), { type: 'AppPasswordDeleted', data: {}, occurredAt: now.toISOString() } as UserEvent])), false);
    const usedThenDeleted = fold([registered(), created('p1'), used('p1'), { type: 'AppPasswordDeleted', data: {}, occurredAt: now.toISOString() } as UserEvent]);
    assert.equal(appPasswordRequired(usedThenDeleted), true);
    // A reset has something to clear (the requirement) and clears it.
    spec.given([registered(), created('p1'), used('p1'), { type: 'AppPasswordDeleted', data: {}, occurredAt: now.toISOString() } as UserEvent])
      .when({ type: 'ResetMfa', data: { userId: usedThenDeleted.userId! } }, now)
      .then([{ type: 'UserMfaReset', data: { userId: usedThenDeleted.userId! }, occurredAt: now.toISOString() }]);
    assert.equal(appPasswordRequired(evolveUser(usedThenDeleted, { type: 'UserMfaReset', data: { userId: usedThenDeleted.userId! }, occurredAt: now.toISOString() } as UserEvent)), false);
  });
});

describe('user decider: secrets sealed again (master key rotation)', () => {
  const at = minutesAgo(1);
  const history: UserEvent[] = [
    registered(),
    enrolled('t1'),
    enrolled('t2'),
    { type: 'TotpTokenDeleted', data: { tokenId: 't2' }, occurredAt: at },
    { type: 'UserPinSet', data: { sealedHash: sealed('pin') }, occurredAt: at },
    { type: 'PushDeviceActivated', data: { deviceId: 'd1', name: 'phone', platform: 'ios', algorithm: 'ES256', publicKey: 'k', sealedPushToken: sealed('push') }, occurredAt: at },
  ];
  const reseal = {
    type: 'ResealSecrets',
    data: {
      tokens: [
        { tokenId: 't1', from: sealed('t1'), sealedSecret: sealed('t1-new') },
        { tokenId: 't2', from: sealed('t2'), sealedSecret: sealed('t2-new') },
      ],
      pinHash: { from: sealed('pin'), sealedHash: sealed('pin-new') },
      devices: [{ deviceId: 'd1', from: sealed('push'), sealedPushToken: sealed('push-new') }],
    },
  } as const;

  it('given secrets in use, when sealed again, then SecretsResealed carries the new values of what is still there, and the state holds them', () => {
    spec.given(history).when(reseal, now).then([
      { type: 'SecretsResealed', data: { tokens: [{ tokenId: 't1', sealedSecret: sealed('t1-new') }], sealedPinHash: sealed('pin-new'), devices: [{ deviceId: 'd1', sealedPushToken: sealed('push-new') }] }, occurredAt: now.toISOString() },
    ]);
    const state = [...history, ...userDecider.decide(reseal, history.reduce(evolveUser, initialUserState()), now)].reduce(evolveUser, initialUserState());
    assert.deepEqual([state.tokens.map((t) => t.sealedSecret), state.sealedPinHash, state.devices?.map((d) => d.sealedPushToken)], [[sealed('t1-new')], sealed('pin-new'), [sealed('push-new')]]);
    assert.equal(state.tokens[0]?.label, 'phone', 'nothing else of the token changes');
  });

  it('given values changed since they were read (set or enrolled again), when sealed again, then they keep theirs; nothing left, nothing recorded', () => {
    const changed: UserEvent[] = [...history, { type: 'UserPinSet', data: { sealedHash: sealed('pin-2') }, occurredAt: at }];
    const [event] = userDecider.decide(reseal, changed.reduce(evolveUser, initialUserState()), now);
    assert.ok(event?.type === 'SecretsResealed' && event.data.sealedPinHash === undefined && event.data.tokens?.length === 1);
    spec.given([...changed, { type: 'UserMfaReset', data: { userId: helga.userId }, occurredAt: at }]).when(reseal, now).thenNothing();
    spec.given([]).when(reseal, now).thenNothing();
  });
});
