import { randomBytes, randomUUID } from 'node:crypto';
import {
  DEFAULT_CODE_LIFETIME_SECONDS,
  DEFAULT_MAX_ATTEMPTS,
  defaultTenantSettings,
  type EventOf,
  type EventType,
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

type Profile = EventOf<'UserProfileChanged'>['data'];
type Server = EventOf<'ChallengeStarted'>['data']['server'];

/** Envelope fields to replace, and data fields to replace one by one (a shallow merge). */
type EventOverrides<T extends EventType> = Partial<Omit<EventOf<T>, 'type' | 'version' | 'data'>> & {
  data?: Partial<EventOf<T>['data']>;
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

type Data<T extends EventType> = EventOf<T>['data'];

/** Where an event belongs: its tenant, its aggregate and, by default, when it happened. */
interface Origin {
  tenantId: string;
  aggregateId: string;
  occurredAt: string;
}

/**
 * An envelope as createEvent builds one, then the overrides. `data` is checked against the
 * event's schema type at every call; all event types are at version 1 (factories.unit.spec.ts
 * parses each built event, so a version bump shows up there).
 */
function envelope<T extends EventType>(type: T, origin: Origin, data: Data<T>, overrides: EventOverrides<T>): EventOf<T> {
  const { data: changes, ...fields } = overrides;
  const event = { id: randomUUID(), type, version: 1, ...origin, metadata: {}, ...fields, data: { ...data, ...changes } };
  return event as EventOf<T>;
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

export function tenantCreated(tenant = testTenant(), overrides: EventOverrides<'TenantCreated'> = {}): EventOf<'TenantCreated'> {
  return envelope('TenantCreated', ofTenant(tenant), { settings: tenant.settings }, overrides);
}

export function tenantSettingsChanged(
  tenant = testTenant(),
  overrides: EventOverrides<'TenantSettingsChanged'> = {},
): EventOf<'TenantSettingsChanged'> {
  return envelope('TenantSettingsChanged', ofTenant(tenant), { settings: tenant.settings }, overrides);
}

export function userRegistered(user = testUser(), overrides: EventOverrides<'UserRegistered'> = {}): EventOf<'UserRegistered'> {
  return envelope('UserRegistered', ofUser(user), { userId: user.userId, ...user.profile }, overrides);
}

/**
 * A change lists only the fields that changed, so a given `data` is the whole change (not merged
 * into the default, which sets the user's whole profile).
 */
export function userProfileChanged(
  user = testUser(),
  overrides: EventOverrides<'UserProfileChanged'> = {},
): EventOf<'UserProfileChanged'> {
  const { data = { ...user.profile }, ...fields } = overrides;
  return envelope('UserProfileChanged', ofUser(user), data, fields);
}

/** A new random token unless `data.tokenId` is given; its sealed secret is a placeholder. */
export function totpTokenEnrolled(
  user = testUser(),
  overrides: EventOverrides<'TotpTokenEnrolled'> = {},
): EventOf<'TotpTokenEnrolled'> {
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
): EventOf<'TotpTokenActivated'> {
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
  };
}

function outcome(c: TestChallenge) {
  return { challengeId: c.challengeId, userId: c.userId, method: c.method, server: c.server };
}

/** Like auth-challenge: an SMS challenge of a user with a phone number carries its delivery. */
export function challengeStarted(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeStarted'> = {},
): EventOf<'ChallengeStarted'> {
  const { phoneNumber: to, language } = c.profile;
  const data: Data<'ChallengeStarted'> = { ...context(c), method: c.method, expiresAt: c.expiresAt, maxAttempts: c.maxAttempts };
  if (c.method === 'sms' && to) {
    const sealedCode = fakeSealedSecret('314159');
    data.delivery = { channel: 'sms', to, sealedCode, ...(language !== undefined ? { language } : {}) };
  }
  return envelope('ChallengeStarted', ofChallenge(c), data, overrides);
}

/** By default the user has no method at all (and so none was chosen). */
export function challengeRegistrationRequired(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeRegistrationRequired'> = {},
): EventOf<'ChallengeRegistrationRequired'> {
  const data: Data<'ChallengeRegistrationRequired'> = { ...context(c), method: null, reason: 'no_method_registered' };
  return envelope('ChallengeRegistrationRequired', ofChallenge(c), data, overrides);
}

export function challengeApproved(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeApproved'> = {},
): EventOf<'ChallengeApproved'> {
  return envelope('ChallengeApproved', ofChallenge(c), outcome(c), overrides);
}

/** The first wrong code unless `data.attempt` says otherwise; attempts remaining follow from it. */
export function challengeCodeRejected(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeCodeRejected'> = {},
): EventOf<'ChallengeCodeRejected'> {
  const attempt = overrides.data?.attempt ?? 1;
  const attemptsRemaining = Math.max(0, c.maxAttempts - attempt);
  const data: Data<'ChallengeCodeRejected'> = { ...outcome(c), attempt, attemptsRemaining, cause: 'mismatch' };
  return envelope('ChallengeCodeRejected', ofChallenge(c), data, overrides);
}

export function challengeAttemptsExhausted(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeAttemptsExhausted'> = {},
): EventOf<'ChallengeAttemptsExhausted'> {
  const data: Data<'ChallengeAttemptsExhausted'> = { ...outcome(c), attempts: c.maxAttempts, lastCause: 'mismatch' };
  return envelope('ChallengeAttemptsExhausted', ofChallenge(c), data, overrides);
}

/** Happens at the challenge's expiry unless `occurredAt` says otherwise. */
export function challengeExpired(
  c = testChallenge(),
  overrides: EventOverrides<'ChallengeExpired'> = {},
): EventOf<'ChallengeExpired'> {
  return envelope('ChallengeExpired', ofChallenge(c, c.expiresAt), outcome(c), overrides);
}

// ---- dispatch ----------------------------------------------------------------------------------

/** Sent by Twilio on the first attempt, with a unique Twilio-style message SID. */
export function smsSent(c = testChallenge(), overrides: EventOverrides<'SmsSent'> = {}): EventOf<'SmsSent'> {
  const providerMessageId = `SM${randomUUID().replaceAll('-', '')}`;
  const data: Data<'SmsSent'> = { challengeId: c.challengeId, provider: 'twilio', providerMessageId, attempts: 1 };
  return envelope('SmsSent', ofChallenge(c), data, overrides);
}

/** One transient Twilio failure unless `data.failures` is given; attempts default to their count. */
export function smsDeliveryFailed(
  c = testChallenge(),
  overrides: EventOverrides<'SmsDeliveryFailed'> = {},
): EventOf<'SmsDeliveryFailed'> {
  const failures = overrides.data?.failures ?? [{ provider: 'twilio', error: 'twilio 503', transient: true }];
  const data: Data<'SmsDeliveryFailed'> = { challengeId: c.challengeId, attempts: Math.max(1, failures.length), failures };
  return envelope('SmsDeliveryFailed', ofChallenge(c), data, overrides);
}
