import type { Method } from './primitives.js';

/**
 * JetStream layout. Event subjects are internal (not part of the public API) and live under
 * `mfa.evt.`; the public request/reply API lives under `mfa.v1.`.
 *
 * Aggregates of user-settings get one subject each, which is what makes optimistic concurrency
 * (`expect.lastSubjectSequence`) and reading one aggregate back possible. Challenge events are
 * high-volume and never read back per challenge, so their subjects are per event type, not per
 * challenge (nats-server 2.9 loses publish throughput with very many distinct subjects).
 */

/** Ids are arbitrary strings (a UPN has dots); base64url makes them one subject token. */
export function subjectToken(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url');
}
export function fromSubjectToken(token: string): string {
  return Buffer.from(token, 'base64url').toString('utf8');
}

/** The two ids of `<prefix><b64url a>.<b64url b>` (a user's or a hardware token's subject), or undefined. */
export function subjectIds(prefix: string, subject: string): [string, string] | undefined {
  if (!subject.startsWith(prefix)) return undefined;
  const tokens = subject.slice(prefix.length).split('.');
  if (tokens.length !== 2 || !tokens[0] || !tokens[1]) return undefined;
  return [fromSubjectToken(tokens[0]), fromSubjectToken(tokens[1])];
}

export const EventSubjects = {
  tenant: (tenantId: string) => `mfa.evt.tenant.${subjectToken(tenantId)}`,
  allTenants: 'mfa.evt.tenant.>',
  user: (tenantId: string, userId: string) => `mfa.evt.user.${subjectToken(tenantId)}.${subjectToken(userId)}`,
  allUsers: 'mfa.evt.user.>',
  /** A hardware OATH token of the tenant's inventory, by serial number (its aggregate). */
  oathToken: (tenantId: string, serialNumber: string) => `mfa.evt.oath.${subjectToken(tenantId)}.${subjectToken(serialNumber)}`,
  allOathTokens: 'mfa.evt.oath.>',
  /** API clients have globally unique ids; one subject per client (its aggregate). */
  client: (clientId: string) => `mfa.evt.client.${clientId}`,
  allClients: 'mfa.evt.client.>',
  audit: (tenantId: string) => `mfa.evt.audit.${subjectToken(tenantId)}`,
  allAudit: 'mfa.evt.audit.>',
  challengeStarted: (method: Method) => `mfa.evt.challenge.started.${method}`,
  smsRequested: 'mfa.evt.challenge.started.sms',
  challengeRegistrationRequired: 'mfa.evt.challenge.registration_required',
  challengeApproved: 'mfa.evt.challenge.approved',
  challengeCodeRejected: 'mfa.evt.challenge.code_rejected',
  challengeAttemptsExhausted: 'mfa.evt.challenge.attempts_exhausted',
  challengeExpired: 'mfa.evt.challenge.expired',
  challengeDenied: 'mfa.evt.challenge.denied',
  /** A push the user denied in the app. */
  challengeDeniedByUser: 'mfa.evt.challenge.denied_by_user',
  /** A pending challenge of a user blocked since it started, denied at its next answer. */
  challengeUserBlocked: 'mfa.evt.challenge.user_blocked',
  /** A pending challenge of a user reset or erased since it started, denied at its next answer. */
  challengeVoided: 'mfa.evt.challenge.voided',
  challengeBypassed: 'mfa.evt.challenge.bypassed',
  challengeFraudReported: 'mfa.evt.challenge.fraud_reported',
  challengeResendRequested: 'mfa.evt.challenge.resend_requested',
  allChallenges: 'mfa.evt.challenge.>',
  /** The fraud service's aggregate of one user: blocks and unblocks (one subject per user). */
  fraudUser: (tenantId: string, userId: string) => `mfa.evt.fraud.user.${subjectToken(tenantId)}.${subjectToken(userId)}`,
  allFraudUsers: 'mfa.evt.fraud.user.>',
  /** Fraud alerts about one user (FraudReported), apart from the block aggregate. */
  fraudAlert: (tenantId: string, userId: string) => `mfa.evt.fraud.alert.${subjectToken(tenantId)}.${subjectToken(userId)}`,
  allFraudAlerts: 'mfa.evt.fraud.alert.>',
  /** Per-IP lockout: one subject per tenant and address (its lock key, see ipLockKey). */
  fraudIp: (tenantId: string, ipKey: string) => `mfa.evt.fraud.ip.${subjectToken(tenantId)}.${subjectToken(ipKey)}`,
  fraudIpsOfTenant: (tenantId: string) => `mfa.evt.fraud.ip.${subjectToken(tenantId)}.>`,
  allFraudIps: 'mfa.evt.fraud.ip.>',
  /** Per-IP throttling of starts that send something (MFA_THROTTLES): one subject per tenant and address (its lock key). */
  ipThrottle: (tenantId: string, ipKey: string) => `mfa.evt.throttle.ip.${subjectToken(tenantId)}.${subjectToken(ipKey)}`,
  allIpThrottles: 'mfa.evt.throttle.ip.>',
  /** The outcomes of fraud alerts' e-mails, per tenant. */
  fraudMail: (tenantId: string) => `mfa.evt.fraud.mail.${subjectToken(tenantId)}`,
  allFraudMail: 'mfa.evt.fraud.mail.>',
  smsSent: 'mfa.evt.dispatch.sms.sent',
  smsFailed: 'mfa.evt.dispatch.sms.failed',
  smsReceipt: 'mfa.evt.dispatch.sms.receipt',
  voicePlaced: 'mfa.evt.dispatch.voice.placed',
  voiceFailed: 'mfa.evt.dispatch.voice.failed',
  pushSent: 'mfa.evt.dispatch.push.sent',
  pushFailed: 'mfa.evt.dispatch.push.failed',
  allDispatch: 'mfa.evt.dispatch.>',
  deadLetter: (consumer: string) => `mfa.dlq.${consumer}`,
  /** MFA_STATE: when an API client was last used (coalesced, written about once a minute). */
  clientLastUsed: (clientId: string) => `mfa.state.client-used.${clientId}`,
  /** MFA_STATE: the latest snapshot of an aggregate, by the subject of its events. */
  snapshot: (aggregateSubject: string) => `mfa.state.snapshot.${aggregateSubject.replace(/^mfa\.evt\./, '')}`,
  /** MFA_STATE: what a deleted tenant's offboarding counted of the things it purges, before purging them. */
  offboardingCensus: (tenantId: string) => `mfa.state.offboarding.${subjectToken(tenantId)}`,
  /**
   * MFA_USER_KEYS: the user's data key (wrapped) or, once erased, its tombstone. Named by the
   * user's keyed hash tag (@mfa/crypto userTag), so the subject tells nothing about the user.
   */
  userDataKey: (userTag: string) => `mfa.key.user.${userTag}`,
} as const;

export interface StreamDefinition {
  name: string;
  subjects: string[];
  /** Seconds; 0 keeps events forever. */
  maxAgeSeconds: number;
  /** De-duplication window for Nats-Msg-Id, seconds. */
  duplicateWindowSeconds: number;
  /** Messages kept per subject (1: a subject holds its latest value, like a KV key); unlimited when absent. */
  maxMsgsPerSubject?: number;
  description: string;
}

const DAY = 24 * 60 * 60;

export const Streams = {
  userSettings: {
    name: 'MFA_USER_SETTINGS',
    subjects: ['mfa.evt.tenant.>', 'mfa.evt.user.>', 'mfa.evt.client.>', 'mfa.evt.oath.>'],
    maxAgeSeconds: 0,
    duplicateWindowSeconds: 120,
    description: 'Event log of the tenant, user, API client and hardware token aggregates (user-settings). Kept forever.',
  },
  challenges: {
    name: 'MFA_CHALLENGES',
    subjects: ['mfa.evt.challenge.>'],
    maxAgeSeconds: 400 * DAY,
    duplicateWindowSeconds: 120,
    description: 'Every challenge started and every verification outcome (auth-challenge).',
  },
  dispatch: {
    name: 'MFA_DISPATCH',
    subjects: ['mfa.evt.dispatch.>'],
    maxAgeSeconds: 400 * DAY,
    duplicateWindowSeconds: 120,
    description: 'Delivery outcomes of SMS and calls (dispatch).',
  },
  fraud: {
    name: 'MFA_FRAUD',
    subjects: ['mfa.evt.fraud.>'],
    maxAgeSeconds: 0,
    duplicateWindowSeconds: 120,
    description: 'Blocks and unblocks of users, fraud alerts (fraud). Kept forever: the blocked-user history.',
  },
  audit: {
    name: 'MFA_AUDIT',
    subjects: ['mfa.evt.audit.>'],
    maxAgeSeconds: 0,
    duplicateWindowSeconds: 120,
    description: 'Admin audit trail: every admin-scope request, with the acting client (and operator). Kept forever.',
  },
  state: {
    name: 'MFA_STATE',
    subjects: ['mfa.state.>'],
    maxAgeSeconds: 0,
    duplicateWindowSeconds: 120,
    maxMsgsPerSubject: 1,
    description:
      'Latest value per subject, read with direct gets: aggregate snapshots, API client last use, the counts of a tenant offboarding under way. Derived or advisory data, never the only copy of a fact but those counts (kept until TenantErased holds them).',
  },
  userKeys: {
    name: 'MFA_USER_KEYS',
    subjects: ['mfa.key.user.>'],
    maxAgeSeconds: 0,
    duplicateWindowSeconds: 120,
    maxMsgsPerSubject: 1,
    description:
      "Per-user data keys, wrapped with the master key; an erased user's key is overwritten on disk and replaced by a tombstone. Kept forever.",
  },
  throttles: {
    name: 'MFA_THROTTLES',
    subjects: ['mfa.evt.throttle.>'],
    // A throttle lasts at most its window (a day at most): older events say nothing any more.
    maxAgeSeconds: DAY,
    duplicateWindowSeconds: 120,
    description: 'Throttles across users that auth-challenge holds in memory: per client IP (fraud). Short-lived state, kept a day.',
  },
  deadLetters: {
    name: 'MFA_DEAD_LETTERS',
    subjects: ['mfa.dlq.>'],
    maxAgeSeconds: 30 * DAY,
    duplicateWindowSeconds: 120,
    description: 'Poison messages a consumer could not process, with the reason in headers.',
  },
} as const satisfies Record<string, StreamDefinition>;

export interface ConsumerDefinition {
  stream: string;
  durable: string;
  filterSubject: string;
  /** Failures (other than dependency outages, which are retried without limit) before a message is dead-lettered. */
  maxDeliver: number;
  ackWaitSeconds: number;
  description: string;
}

function ipWatch(filterSubject: string, durable: string): ConsumerDefinition {
  return {
    stream: Streams.challenges.name,
    durable,
    filterSubject,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Counts denials per client IP across users for the per-IP lockout (fraud).',
  };
}

function ipStarts(method: 'sms' | 'voice' | 'push'): ConsumerDefinition {
  return {
    stream: Streams.challenges.name,
    durable: `fraud-ip-started-${method}`,
    filterSubject: EventSubjects.challengeStarted(method),
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Counts the starts that send something per client IP across users for per-IP throttling (fraud).',
  };
}

export const Consumers = {
  userProjector: {
    stream: Streams.userSettings.name,
    durable: 'user-settings-redis-projector',
    filterSubject: '>',
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Keeps the Redis user and tenant projections that auth-challenge reads.',
  },
  tenantOffboarding: {
    stream: Streams.userSettings.name,
    durable: 'user-settings-tenant-offboarding',
    filterSubject: EventSubjects.allTenants,
    maxDeliver: 20,
    // A tenant's offboarding runs for as long as erasing its users takes; its handler tells
    // JetStream it is still working well within this, and resumes where it stopped if redelivered.
    ackWaitSeconds: 60,
    description: "Offboards a deleted tenant (TenantDeleted): erases its users, deletes its hardware tokens, recordings and import files, then records TenantErased.",
  },
  fraudBlocks: {
    stream: Streams.fraud.name,
    durable: 'fraud-block-projector',
    filterSubject: EventSubjects.allFraudUsers,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: "Keeps the users' blocks in Redis (checked by the start script) and lifts lockouts on an unblock.",
  },
  // Per-IP lockout counts wrong codes and expired challenges; nats-server 2.9 takes one filter
  // subject per consumer, so one consumer per kind (low volume, unlike starts and approvals).
  fraudIpCodeRejected: ipWatch(EventSubjects.challengeCodeRejected, 'fraud-ip-code-rejected'),
  fraudIpAttemptsExhausted: ipWatch(EventSubjects.challengeAttemptsExhausted, 'fraud-ip-attempts-exhausted'),
  fraudIpExpired: ipWatch(EventSubjects.challengeExpired, 'fraud-ip-expired'),
  // Per-IP throttling counts the starts that send something (SMS, voice, push), one consumer per
  // method for the same reason; TOTP starts, the bulk of the traffic, are not read at all.
  fraudIpStartedSms: ipStarts('sms'),
  fraudIpStartedVoice: ipStarts('voice'),
  fraudIpStartedPush: ipStarts('push'),
  fraudAlerts: {
    stream: Streams.fraud.name,
    durable: 'fraud-alert-completion',
    filterSubject: EventSubjects.allFraudAlerts,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description:
      'Completes each fraud alert (FraudReported) whatever became of the report that recorded it: its challenge denied if it was still waiting, the auto-block once, ChallengeFraudReported once.',
  },
  fraudNotifier: {
    stream: Streams.fraud.name,
    durable: 'fraud-notifier',
    filterSubject: EventSubjects.allFraudAlerts,
    // The notifier gives up (and records it) after SMTP_MAX_ATTEMPTS itself; this only bounds a bug.
    maxDeliver: 50,
    // The notifier sends in-progress acks while it mails (and claims each address), so a slow
    // relay and many addresses never reach it; it bounds an instance that died mid-run.
    ackWaitSeconds: 120,
    description: "Sends each fraud alert's e-mail to the tenant's notificationEmails over SMTP.",
  },
  dispatchSms: {
    stream: Streams.challenges.name,
    durable: 'dispatch-sms',
    filterSubject: EventSubjects.smsRequested,
    maxDeliver: 10,
    ackWaitSeconds: 60,
    description: 'Sends SMS codes through the configured providers.',
  },
  dispatchSmsResend: {
    stream: Streams.challenges.name,
    durable: 'dispatch-sms-resend',
    filterSubject: EventSubjects.challengeResendRequested,
    maxDeliver: 10,
    ackWaitSeconds: 60,
    description: 'Sends the code of a pending SMS challenge again (challenge.resend) through the next healthy provider.',
  },
  dispatchVoice: {
    stream: Streams.challenges.name,
    durable: 'dispatch-voice',
    filterSubject: 'mfa.evt.challenge.started.voice',
    maxDeliver: 10,
    ackWaitSeconds: 60,
    description: 'Places the calls of voice challenges through Twilio Programmable Voice.',
  },
  dispatchPush: {
    stream: Streams.challenges.name,
    durable: 'dispatch-push',
    filterSubject: 'mfa.evt.challenge.started.push',
    maxDeliver: 10,
    ackWaitSeconds: 60,
    description: "Sends the push notifications of push challenges to the user's devices (FCM, APNs).",
  },
  reportingChallenges: {
    stream: Streams.challenges.name,
    durable: 'reporting-challenges',
    filterSubject: EventSubjects.allChallenges,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Projects challenge events into the sign-in report.',
  },
  reportingDispatch: {
    stream: Streams.dispatch.name,
    durable: 'reporting-dispatch',
    filterSubject: EventSubjects.allDispatch,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Projects delivery outcomes into the sign-in report.',
  },
  reportingFraud: {
    stream: Streams.fraud.name,
    durable: 'reporting-fraud',
    filterSubject: 'mfa.evt.fraud.>',
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Projects fraud alerts, their e-mails, blocks and IP locks into Postgres (reports.fraud.query, reports.blocked.query).',
  },
  reportingUsers: {
    stream: Streams.userSettings.name,
    durable: 'reporting-users',
    filterSubject: EventSubjects.allUsers,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Projects when each user was registered and erased, for the enabled-users figure of reports.usage.query.',
  },
  reportingAudit: {
    stream: Streams.audit.name,
    durable: 'reporting-audit',
    filterSubject: EventSubjects.allAudit,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Projects the admin audit trail into Postgres for reports.audit.query.',
  },
  reportingErasures: {
    stream: Streams.userSettings.name,
    durable: 'reporting-erasures',
    filterSubject: EventSubjects.allUsers,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: "Acts on UserErased: the user's report rows keep only a pseudonymous id.",
  },
  reportingTenants: {
    stream: Streams.userSettings.name,
    durable: 'reporting-tenants',
    filterSubject: EventSubjects.allTenants,
    maxDeliver: 20,
    ackWaitSeconds: 30,
    description: 'Projects known tenants, so report queries can tell an unknown tenant.',
  },
} as const satisfies Record<string, ConsumerDefinition>;

/** Header names on events, besides Nats-Msg-Id. */
export const Headers = {
  eventType: 'Mfa-Event-Type',
  eventVersion: 'Mfa-Event-Version',
  tenant: 'Mfa-Tenant',
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  /** Unix time in ms after which the caller no longer waits for the reply (docs/api.md, "Transport"). */
  deadline: 'Mfa-Deadline',
  /** On admin requests sent with the platform key (the console): the operator, JSON {sub, email?, name?}. */
  operator: 'Mfa-Operator',
  /** On the services' requests to one another (`mfa.int.`): their signature, `<kid>.<ms>.<HMAC>` (libs/crypto internal-requests.ts). */
  internal: 'Mfa-Internal',
  deadLetterReason: 'Mfa-Dead-Letter-Reason',
  deadLetterStream: 'Mfa-Dead-Letter-Stream',
  deadLetterSequence: 'Mfa-Dead-Letter-Sequence',
  deadLetterSubject: 'Mfa-Dead-Letter-Subject',
  deadLetterDeliveries: 'Mfa-Dead-Letter-Deliveries',
} as const;

export function methodOf(value: string): Method | undefined {
  return (['sms', 'voice', 'push', 'totp'] as const).find((m) => m === value);
}
