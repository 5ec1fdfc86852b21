import { randomBytes, randomUUID } from 'node:crypto';
import {
  DEFAULT_CODE_LIFETIME_SECONDS,
  DEFAULT_MAX_ATTEMPTS,
  defaultTenantSettings,
  type EventType,
  type EventVersion,
  type Method,
  type TenantSettings,
} from '@mfa/contracts';
import { challengeId as joinChallengeId } from '@mfa/projection';

/**
 * Test data built on the contract types, so the compiler checks every fixture against the event
 * schemas. Defaults are fixed values (readable in assertions); ids that must not collide (event,
 * challenge, token and provider message ids) are random. Envelopes are shaped like createEvent's
 * in @mfa/messaging, which is not imported: it would load NATS and telemetry into unit tests.
 */

/** When default events happen; a time, not the clock, so expectations can be written down. */
const DEFAULT_OCCURRED_AT = '2025-06-01T12:00:00.000Z';

/**
 * Every fixture is version 1 unless its name says otherwise: types stored in two versions
 * (personal data in clear in v1, sealed under the user's data key in v2) get a `…V2` builder
 * that takes the sealed `pii`, which only a real data key can produce.
 */
type V1<T extends EventType> = EventVersion<T, 1>;

type Profile = V1<'UserProfileChanged'>['data'];
type Server = V1<'ChallengeStarted'>['data']['server'];

/** Envelope fields to replace, and data fields to replace one by one (a shallow merge). */
type EventOverrides<T extends EventType> = Partial<Omit<V1<T>, 'type' | 'version' | 'data'>> & {
  data?: Partial<V1<T>['data']>;
};

interface TestTenant {
  tenantId: string;
  settings: TenantSettings;
}

interface TestUser {
  tenantId: string;
  userId: string;
  profile: Profile;
}

/** One sign-in: what all events of one challenge share. */
export interface TestChallenge {
  tenantId: string;
  challengeId: string;
  userId: string;
  profile: Profile;
  method: Method;
  server: Server;
  /** `radius`: started by the RADIUS front (its start events say so); absent: over NATS. */
  via?: 'radius';
  clientIp?: string;
  application?: string;
  requestId?: string;
  startedAt: string;
  expiresAt: string;
  maxAttempts: number;
}

export function testTenant(overrides: Partial<TestTenant> = {}): TestTenant {
  return { tenantId: 'contoso', settings: defaultTenantSettings(), ...overrides };
}

export function testUser(overrides: Partial<TestUser> = {}): TestUser {
  return {
    tenantId: 'contoso',
    userId: 'helga@contoso.com',
    profile: { displayName: 'Helga Nordin', email: 'helga.nordin@contoso.com', phoneNumber: '+14155550123', language: 'sv-SE' },
    ...overrides,
  };
}

/** A fresh id in the real `<tag>.<nonce>` form; the tag is random, not the user's keyed hash. */
export function testChallengeId(): string {
  return joinChallengeId(randomBytes(16).toString('base64url'), randomBytes(16).toString('base64url'));
}

/** A challenge of `user`, started at DEFAULT_OCCURRED_AT with the default lifetime and attempts. */
export function testChallenge(user: TestUser = testUser(), overrides: Partial<TestChallenge> = {}): TestChallenge {
  const startedAt = overrides.startedAt ?? DEFAULT_OCCURRED_AT;
  return {
    tenantId: user.tenantId,
    challengeId: testChallengeId(),
    userId: user.userId,
    profile: user.profile,
    method: 'sms',
    server: { name: 'mfa-1', ip: '10.0.0.5' },
    clientIp: '203.0.113.7',
    application: 'VPN',
    requestId: 'req-1',
    startedAt,
    expiresAt: new Date(Date.parse(startedAt) + DEFAULT_CODE_LIFETIME_SECONDS * 1000).toISOString(),
    maxAttempts: DEFAULT_MAX_ATTEMPTS,
    ...overrides,
  };
}

/** A string in the compact sealed form (it passes the contract) that opens under no key. */
export function fakeSealedSecret(payload = 'secret'): string {
  return `v1.test.${'A'.repeat(16)}.${Buffer.from(payload || '-').toString('base64url')}.${'A'.repeat(22)}`;
}

// ---- envelopes -------------------------------------------------------------------------------

type Data<T extends EventType> = V1<T>['data'];

/** Where an event belongs: its tenant, its aggregate and, by default, when it happened. */
interface Origin {
  tenantId: string;
  aggregateId: string;
  occurredAt: string;
}

/**
 * An envelope as createEvent builds one, then the overrides. `data` is checked against the
 * event's schema type at every call (factories.unit.spec.ts parses each built event).
 */
function envelope<T extends EventType>(type: T, origin: Origin, data: Data<T>, overrides: EventOverrides<T>): V1<T> {
  const { data: changes, ...fields } = overrides;
  const event = { id: randomUUID(), type, version: 1, ...origin, metadata: {}, ...fields, data: { ...data, ...changes } };
  return event as V1<T>;
}

/** A version-2 envelope of a type stored in two versions. */
function envelopeV2<T extends EventType>(type: T, origin: Origin, data: EventVersion<T, 2>['data']): EventVersion<T, 2> {
  return { id: randomUUID(), type, version: 2, ...origin, metadata: {}, data } as EventVersion<T, 2>;
}

const ofTenant = (t: TestTenant): Origin => ({ tenantId: t.tenantId, aggregateId: t.tenantId, occurredAt: DEFAULT_OCCURRED_AT });
const ofUser = (u: TestUser, occurredAt = DEFAULT_OCCURRED_AT): Origin => ({
  tenantId: u.tenantId,
  aggregateId: u.userId,
  occurredAt,
});
const ofChallenge = (c: TestChallenge, occurredAt = c.startedAt): Origin => ({
  tenantId: c.tenantId,
  aggregateId: c.challengeId,
  occurredAt,
});

// ---- tenant and user aggregates ----------------------------------------------------------------

export function tenantCreated(tenant = testTenant(), overrides: EventOverrides<'TenantCreated'> = {}): V1<'TenantCreated'> {
  return envelope('TenantCreated', ofTenant(tenant), { settings: tenant.settings }, overrides);
}

export function tenantDeleted(tenant = testTenant(), overrides: EventOverrides<'TenantDeleted'> = {}): V1<'TenantDeleted'> {
  return envelope('TenantDeleted', ofTenant(tenant), {}, overrides);
}

export function tenantErased(tenant = testTenant(), overrides: EventOverrides<'TenantErased'> = {}): V1<'TenantErased'> {
  return envelope('TenantErased', ofTenant(tenant), { deletedAt: DEFAULT_OCCURRED_AT, users: 0, hardwareTokens: 0, recordings: 0, clients: 0 }, overrides);
}

export function tenantSettingsChanged(
  tenant = testTenant(),
  overrides: EventOverrides<'TenantSettingsChanged'> = {},
): V1<'TenantSettingsChanged'> {
  return envelope('TenantSettingsChanged', ofTenant(tenant), { settings: tenant.settings }, overrides);
}

export function userRegistered(user = testUser(), overrides: EventOverrides<'UserRegistered'> = {}): V1<'UserRegistered'> {
  return envelope('UserRegistered', ofUser(user), { userId: user.userId, ...user.profile }, overrides);
}

/**
 * A change lists only the fields that changed, so a given `data` is the whole change (not merged
 * into the default, which sets the user's whole profile).
 */
export function userProfileChanged(
  user = testUser(),
  overrides: EventOverrides<'UserProfileChanged'> = {},
): V1<'UserProfileChanged'> {
  const { data = { ...user.profile }, ...fields } = overrides;
  return envelope('UserProfileChanged', ofUser(user), data, fields);
}

/** v2: the personal data sealed in `pii` (under the user's data key), the language in clear. */
export function userRegisteredV2(user = testUser(), pii?: string): EventVersion<'UserRegistered', 2> {
  const { language } = user.profile;
  return envelopeV2('UserRegistered', ofUser(user), {
    userId: user.userId,
    ...(language !== undefined ? { language } : {}),
    ...(pii !== undefined ? { pii } : {}),
  });
}

export function userErased(user = testUser(), gen = 1, occurredAt = DEFAULT_OCCURRED_AT): V1<'UserErased'> {
  return envelope('UserErased', ofUser(user, occurredAt), { userId: user.userId, gen }, {});
}

/** A new random token unless `data.tokenId` is given; its sealed secret is a placeholder. */
export function totpTokenEnrolled(
  user = testUser(),
  overrides: EventOverrides<'TotpTokenEnrolled'> = {},
): V1<'TotpTokenEnrolled'> {
  const tokenId = overrides.data?.tokenId ?? randomUUID();
  const data: Data<'TotpTokenEnrolled'> = {
    tokenId,
    label: 'phone',
    sealedSecret: fakeSealedSecret(tokenId),
    digits: 6,
    period: 30,
    algorithm: 'SHA1',
  };
  return envelope('TotpTokenEnrolled', ofUser(user), data, overrides);
}

/** Name the token with `data.tokenId`; the step defaults to the 30-second step of `occurredAt`. */
export function totpTokenActivated(
  user = testUser(),
  overrides: EventOverrides<'TotpTokenActivated'> = {},
): V1<'TotpTokenActivated'> {
  const origin = ofUser(user, overrides.occurredAt);
  const step = Math.floor(Date.parse(origin.occurredAt) / 30_000);
  return envelope('TotpTokenActivated', origin, { tokenId: randomUUID(), step }, overrides);
}

// ---- challenges: the context of a start, the outcome fields of everything after ----------------

function context(c: TestChallenge) {
  return {
    challengeId: c.challengeId,
    userId: c.userId,
    ...(c.clientIp !== undefined ? { clientIp: c.clientIp } : {}),
    ...(c.application !== undefined ? { application: c.application } : {}),
    ...(c.requestId !== undefined ? { requestId: c.requestId } : {}),
    profile: c.profile,
    server: c.server,
    ...(c.via !== undefined ? { via: c.via } : {}),
  };
}

function outcome(c: TestChallenge) {
  return { challengeId: c.challengeId, userId: c.userId, method: c.method, server: c.server };
}

/** Like auth-challenge: an SMS challenge of a user with a phone number carries its delivery. */
export function challengeStarted(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeStarted'> = {},
): V1<'ChallengeStarted'> {
  const { phoneNumber: to, language } = c.profile;
  const data: Data<'ChallengeStarted'> = { ...context(c), method: c.method, expiresAt: c.expiresAt, maxAttempts: c.maxAttempts };
  if (c.method === 'sms' && to) {
    const sealedCode = fakeSealedSecret('314159');
    data.delivery = { channel: 'sms', to, sealedCode, ...(language !== undefined ? { language } : {}) };
  }
  return envelope('ChallengeStarted', ofChallenge(c), data, overrides);
}

/** v2 of challengeStarted: the profile sealed in `pii`, the phone of an SMS delivery only there. */
export function challengeStartedV2(c = testChallenge(), pii?: string): EventVersion<'ChallengeStarted', 2> {
  const { profile: _inClear, ...common } = context(c);
  const data: EventVersion<'ChallengeStarted', 2>['data'] = {
    ...common,
    ...(pii !== undefined ? { pii } : {}),
    method: c.method,
    expiresAt: c.expiresAt,
    maxAttempts: c.maxAttempts,
  };
  if (c.method === 'sms') {
    const { language } = c.profile;
    data.delivery = { channel: 'sms', sealedCode: fakeSealedSecret('314159'), ...(language !== undefined ? { language } : {}) };
  }
  return envelopeV2('ChallengeStarted', ofChallenge(c), data);
}

/** By default the user has no method at all (and so none was chosen). */
export function challengeRegistrationRequired(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeRegistrationRequired'> = {},
): V1<'ChallengeRegistrationRequired'> {
  const data: Data<'ChallengeRegistrationRequired'> = { ...context(c), method: null, reason: 'no_method_registered' };
  return envelope('ChallengeRegistrationRequired', ofChallenge(c), data, overrides);
}

export function challengeApproved(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeApproved'> = {},
): V1<'ChallengeApproved'> {
  return envelope('ChallengeApproved', ofChallenge(c), outcome(c), overrides);
}

/** The first wrong code unless `data.attempt` says otherwise; attempts remaining follow from it. */
export function challengeCodeRejected(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeCodeRejected'> = {},
): V1<'ChallengeCodeRejected'> {
  const attempt = overrides.data?.attempt ?? 1;
  const attemptsRemaining = Math.max(0, c.maxAttempts - attempt);
  const data: Data<'ChallengeCodeRejected'> = { ...outcome(c), attempt, attemptsRemaining, cause: 'mismatch' };
  return envelope('ChallengeCodeRejected', ofChallenge(c), data, overrides);
}

export function challengeAttemptsExhausted(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeAttemptsExhausted'> = {},
): V1<'ChallengeAttemptsExhausted'> {
  const data: Data<'ChallengeAttemptsExhausted'> = { ...outcome(c), attempts: c.maxAttempts, lastCause: 'mismatch' };
  return envelope('ChallengeAttemptsExhausted', ofChallenge(c), data, overrides);
}

/** Happens at the challenge's expiry unless `occurredAt` says otherwise. */
export function challengeUserBlocked(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeUserBlocked'> = {},
): V1<'ChallengeUserBlocked'> {
  return envelope('ChallengeUserBlocked', ofChallenge(c), outcome(c), overrides);
}

export function challengeVoided(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeVoided'> = {},
): V1<'ChallengeVoided'> {
  return envelope('ChallengeVoided', ofChallenge(c), outcome(c), overrides);
}

export function challengeExpired(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeExpired'> = {},
): V1<'ChallengeExpired'> {
  return envelope('ChallengeExpired', ofChallenge(c, c.expiresAt), outcome(c), overrides);
}

/** The first resend of the challenge's code unless `data.resend` says otherwise. */
export function challengeResendRequested(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeResendRequested'> = {},
): V1<'ChallengeResendRequested'> {
  const data: Data<'ChallengeResendRequested'> = { challengeId: c.challengeId, userId: c.userId, method: 'sms', server: c.server, resend: 1, expiresAt: c.expiresAt };
  return envelope('ChallengeResendRequested', ofChallenge(c), data, overrides);
}

// ---- dispatch ----------------------------------------------------------------------------------

/** Sent by Twilio on the first attempt, with a unique Twilio-style message SID. */
export function smsSent(c = testChallenge(), overrides: EventOverrides<'SmsSent'> = {}): V1<'SmsSent'> {
  const providerMessageId = `SM${randomUUID().replaceAll('-', '')}`;
  const data: Data<'SmsSent'> = { challengeId: c.challengeId, provider: 'twilio', providerMessageId, attempts: 1 };
  return envelope('SmsSent', ofChallenge(c), data, overrides);
}

/** One transient Twilio failure unless `data.failures` is given; attempts default to their count. */
export function smsDeliveryFailed(
  c = testChallenge(),
  overrides: EventOverrides<'SmsDeliveryFailed'> = {},
): V1<'SmsDeliveryFailed'> {
  const failures = overrides.data?.failures ?? [{ provider: 'twilio', error: 'twilio 503', transient: true }];
  const data: Data<'SmsDeliveryFailed'> = { challengeId: c.challengeId, attempts: Math.max(1, failures.length), failures };
  return envelope('SmsDeliveryFailed', ofChallenge(c), data, overrides);
}
