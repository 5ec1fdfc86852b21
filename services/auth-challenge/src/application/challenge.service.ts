import { Inject, Injectable, Optional } from '@nestjs/common';
import {
  compileRanges,
  defaultTenantSettings,
  notFound,
  unavailable,
  type RangeSet,
  type AnyEvent,
  type TenantSettings,
  type ChallengeResendReply,
  type ChallengeResendRequest,
  type ChallengeStartReply,
  type ChallengeStartRequest,
  type ChallengeStatusReply,
  type ChallengeStatusRequest,
  type ChallengeVerifyReply,
  type VoiceOutcomeReply,
  type VoiceOutcomeRequest,
  type ChallengeVerifyRequest,
} from '@mfa/contracts';
import {
  hashCode,
  parseWrappedDataKey,
  projectionUserKey,
  randomToken,
  rememberTokenId,
  seal,
  SealContext,
  SealError,
  unmaskSecret,
  unwrapDataKey,
  userTag,
  type DataKey,
  type Keyring,
} from '@mfa/crypto';
import { createEvent, eventIdOf, EventPublisher } from '@mfa/messaging';
import { challengeId as formatChallengeId, hashSlotOf, parseChallengeId } from '@mfa/projection';
import { LOGGER, sealPersonalData } from '@mfa/service-kit';
import { counter, type Logger } from '@mfa/telemetry';
import { ChallengeStore, type LockoutPolicy } from '../adapters/challenge.store.js';
import {
  decisionName,
  decisionNameOfReply,
  Outbox,
  type DecisionContext,
  type DecisionRecord,
  type ResendDecisionContext,
  type StartDecisionContext,
  type VerifyDecisionContext,
} from '../adapters/outbox.js';
import { maskedTokensOf, parseResendVerdict, parseStartVerdict, parseVerifyVerdict } from '../adapters/script-replies.js';
import type { PushLimits } from '../adapters/challenge.store.js';
import { IpLocks } from '../adapters/ip-locks.js';
import { TenantSettingsCache } from '../adapters/tenant-settings.cache.js';
import type { AuthChallengeConfig } from '../config.js';
import { matchTotpCode, type TotpMatch } from '../domain/totp-match.js';
import {
  decideResend,
  decideStart,
  decideStatus,
  decideVerify,
  phoneCountryAllowed,
  subjectOf,
  type TotpTokens,
  type PendingEvent,
  type StartVerdict,
  type VerifyVerdict,
} from '../domain/verdicts.js';
import { CODE_GENERATOR, CONFIG, PROJECTION_SIGNAL, SERVER_IDENTITY } from '../tokens.js';
import type { CodeGenerator } from './code-generator.js';
import { TotpTokenCache } from './totp-token.cache.js';

const outcomes = counter('mfa_challenge_outcomes_total', 'Challenge decisions by kind and method', ['kind', 'method']);
/** Requests that came too close to their deadline to decide in time (see DECISION_MIN_MS). */
const declinedLate = counter(
  'mfa_challenge_declined_late_total',
  'Requests not decided because their Mfa-Deadline was too close (nothing changed; answered unavailable if still in time)',
);
/** MFA fatigue: pushes refused at start (one still pending or too many lately), suspensions, and the users' refusals. */
const pushFatigue = counter(
  'mfa_push_fatigue_total',
  'Push MFA-fatigue events: refused_pending_or_rate, suspended (push suspended for a user now), refused_suspended (a push start refused while suspended), denied_by_user, wrong_number',
  ['event'],
);
/** Starts and resends refused by a throttle, by scope: what the phone-number alert counts (auth-challenge refuses most of them before dispatch sees them). */
const throttled = counter('mfa_challenge_throttled_total', 'Starts and resends refused by a throttle: user, phone (the number across users), ip, push, interval (resend)', ['scope']);
// Every series the alerts read exists from the start: increase() misses the first event of a series born after a restart.
for (const event of ['suspended', 'refused_suspended', 'refused_pending_or_rate', 'denied_by_user', 'wrong_number']) pushFatigue.inc({ event }, 0);
for (const scope of ['user', 'phone', 'ip', 'push', 'interval']) throttled.inc({ scope }, 0);
const deferred = counter(
  'mfa_outbox_deferred_total',
  'Decisions answered whose event JetStream did not acknowledge before the caller\'s deadline: left in the outbox for the relay',
);

/**
 * TOTP verifies by how their code was checked: `one_call` with the tokens its start answered on
 * this instance; `two_calls` with tokens read by a first call (the start ran on another instance,
 * or long ago); `tokens_changed`, two calls because the tokens changed since the start.
 */
const totpChecks = counter('mfa_challenge_totp_checks_total', 'TOTP verifies by how the code was checked: one_call, two_calls, tokens_changed', ['path']);

const DAY_MS = 86_400_000;
/**
 * The settings of a tenant this instance could not read (their lookup went over its budget, or the
 * log did not answer): the defaults, so that whatever reads them works, and a start knows by this
 * very object to decide nothing (tenant_unread). A verify, an answer from a phone and a resend
 * answer `unavailable` (decidedBy): the lockout, remembering and fallback methods of a decision are
 * the tenant's own, never the defaults in their place.
 */
const UNREAD_TENANT = defaultTenantSettings();
const UNREAD_MESSAGE = "the tenant's settings could not be read; try again in a few seconds";

/** Settings a decision may use: a tenant read from the log (see UNREAD_TENANT). */
function decidedBy(settings: TenantSettings): TenantSettings {
  if (settings === UNREAD_TENANT) throw unavailable(UNREAD_MESSAGE);
  return settings;
}
/** The code hash a verify sends when the challenge is known to be TOTP (never compared). */
const NO_CODE_HASH = Buffer.alloc(0);
/** When the caller sent no Mfa-Deadline: how long an IdP waits at most (docs/api.md). */
const DEFAULT_DEADLINE_MS = 5_000;
/** Kept for the reply itself: the publish retries stop this long before the caller's deadline. */
const REPLY_MARGIN_MS = 100;
/**
 * A decision is taken only with this much time left before the caller's deadline: enough for the
 * script, the event and the reply on a loaded instance. With less, nothing is checked or changed
 * (the IdP is about to give up, and a decision it never sees would still be reported).
 */
const DECISION_MIN_MS = 250;
/** One publish attempt waits at most this long for its ack. */
const PUBLISH_TIMEOUT_MS = 2_000;

/** Unwrapped data keys kept for repeat sign-ins (an unwrap costs about as much as the sealing itself). */
const DATA_KEY_CACHE_SIZE = 10_000;
const DATA_KEY_CACHE_MS = 5 * 60_000;

/** Where a decision was taken, for the report (server name and IP). */
interface ServerIdentity {
  name: string;
  ip: string;
}

/**
 * The challenge use cases. Each request costs one Redis round trip (a script; two for a TOTP
 * verify on an instance that did not start the challenge) and, when something happened, one JetStream publish
 * awaited for its ack: start draws the code, keeps only its keyed hash in Redis and seals it for
 * dispatch; the scripts decide atomically; the pure domain says what to answer and which event
 * records it. A TOTP code is checked here, never in Redis: Redis gets neither the code, nor the
 * secret, nor the key that unmasks the secret.
 */
@Injectable()
export class ChallengeService {
  private readonly keyring: Keyring;
  /** By tenant, user and wrapped key: a user erased or registered anew has another (or no) wrapped key. */
  private readonly dataKeys = new Map<string, { dataKey: DataKey; expiresAt: number }>();
  /** Each tenant's lockout policy, built once per settings object (settings are replaced, never changed). */
  private readonly lockouts = new WeakMap<TenantSettings, LockoutPolicy>();
  /** Each tenant's usable methods: `enabledMethods`, only push and totp of them under `securityDefaults`. */
  private readonly usable = new WeakMap<TenantSettings, readonly string[]>();
  /** Each tenant's trusted ranges (trustedIps and trusted named locations), compiled once. */
  private readonly trusted = new WeakMap<TenantSettings, RangeSet>();
  /** The tokens of the TOTP challenges started here, for their verify's one call. */
  private readonly totpTokens = new TotpTokenCache();

  constructor(
    private readonly store: ChallengeStore,
    private readonly outbox: Outbox,
    private readonly tenants: TenantSettingsCache,
    private readonly ipLocks: IpLocks,
    private readonly publisher: EventPublisher,
    @Inject(CODE_GENERATOR) private readonly codes: CodeGenerator,
    @Inject(CONFIG) private readonly config: AuthChallengeConfig,
    @Inject(SERVER_IDENTITY) private readonly server: ServerIdentity,
    @Inject(LOGGER) private readonly log: Logger,
    /** Asks user-settings to project a user missing from an incomplete projection first. */
    @Optional() @Inject(PROJECTION_SIGNAL) private readonly projectionMissing?: (tenantId: string, userId: string) => void,
  ) {
    this.keyring = config.keyring;
    this.pushLimits = {
      maxPerWindow: config.PUSH_MAX_PER_WINDOW,
      windowSeconds: config.PUSH_WINDOW_SECONDS,
      refusalsToSuspend: config.PUSH_REFUSALS_TO_SUSPEND,
      suspendSeconds: config.PUSH_SUSPEND_SECONDS,
    };
  }

  /** The MFA-fatigue limits of push (PUSH_* settings). */
  private readonly pushLimits: PushLimits;

  /**
   * The tenant's settings. Never the defaults in place of a tenant's own: not before they are all
   * loaded, and a tenant not in memory yet (created a moment ago elsewhere) is read from the log
   * first. A tenant in memory costs no promise (the usual case, on every request).
   */
  private settingsOf(tenantId: string): TenantSettings | Promise<TenantSettings> {
    if (!this.tenants.ready) throw unavailable('starting up: tenant settings are still loading; try again');
    if (this.tenants.has(tenantId)) return this.tenants.get(tenantId);
    // A deleted tenant's users stay in Redis until its offboarding erases them: none of them may
    // start or answer a challenge meanwhile (the start script takes a tenant it does not know for a
    // new one when the user is there).
    if (this.tenants.isDeleted(tenantId)) throw notFound('unknown tenant');
    return this.tenants.lookup(tenantId).then((found) => {
      if (this.tenants.isDeleted(tenantId)) throw notFound('unknown tenant');
      return found === 'unread' ? UNREAD_TENANT : this.tenants.get(tenantId);
    });
  }

  /** The tenant's `lockout` settings, and the service-wide cap on consecutive wrong codes. */
  private lockoutOf(settings: TenantSettings): LockoutPolicy {
    let policy = this.lockouts.get(settings);
    if (!policy) {
      policy = {
        threshold: settings.lockout.threshold,
        windowSeconds: settings.lockout.counterResetMinutes * 60,
        lockoutSeconds: settings.lockout.autoUnblockMinutes * 60,
        maxConsecutiveFailures: this.config.MFA_MAX_CONSECUTIVE_FAILURES,
      };
      this.lockouts.set(settings, policy);
    }
    return policy;
  }

  /**
   * The bypass this sign-in gets from the tenant's settings, if any: a federated user inside the
   * corporate network (trustedIps.federatedBypass), or a client IP in a trusted range. Blocks and
   * locks still come first (the start script checks them before a bypass).
   */
  private bypassOf(settings: TenantSettings, req: ChallengeStartRequest): 'corporate_network' | 'trusted_ip' | undefined {
    if (settings.trustedIps.federatedBypass && req.context?.insideCorporateNetwork === true) return 'corporate_network';
    if (!req.clientIp) return undefined;
    let ranges = this.trusted.get(settings);
    if (!ranges) {
      ranges = compileRanges([...settings.trustedIps.ranges, ...settings.namedLocations.filter((l) => l.trusted).flatMap((l) => l.ranges)]);
      this.trusted.set(settings, ranges);
    }
    return ranges.size > 0 && ranges.has(req.clientIp) ? 'trusted_ip' : undefined;
  }

  /**
   * Remember MFA at start (the tenant's rememberMfa): the id of a presented remember token (bound
   * to this user's tag: another user's token finds nothing) and the time after which it must have
   * been remembered (the tenant's days as they are now), the time since which a legacy client's
   * user needs no MFA, and whether an approval should remember this browser.
   */
  private rememberOf(settings: TenantSettings, req: ChallengeStartRequest, tag: string, now: Date) {
    if (!settings.rememberMfa.enabled || !req.context) return {};
    const { rememberToken, legacyClient, rememberDevice } = req.context;
    return {
      ...(rememberToken ? { rememberId: rememberTokenId(this.keyring, tag, rememberToken), rememberedAfter: now.getTime() - settings.rememberMfa.days * DAY_MS } : {}),
      ...(legacyClient ? { legacySince: now.getTime() - settings.rememberMfa.days * DAY_MS } : {}),
      ...(rememberDevice ? { rememberDevice: true } : {}),
    };
  }

  /** The tenant's SMS country rules as the start script takes them (once per settings change). */
  private phoneCountriesOf(settings: TenantSettings): { allowed: string; blocked: string } {
    let rules = this.countryRules.get(settings);
    if (!rules) {
      rules = { allowed: settings.sms.allowedCountries === null ? '*' : settings.sms.allowedCountries.join(','), blocked: settings.sms.blockedCountries.join(',') };
      this.countryRules.set(settings, rules);
    }
    return rules;
  }
  private readonly countryRules = new WeakMap<TenantSettings, { allowed: string; blocked: string }>();

  private usableMethods(settings: TenantSettings): readonly string[] {
    let methods = this.usable.get(settings);
    if (!methods) {
      methods = settings.securityDefaults ? settings.enabledMethods.filter((m) => m === 'push' || m === 'totp') : settings.enabledMethods;
      this.usable.set(settings, methods);
    }
    return methods;
  }

  /**
   * What a challenge whose delivery failed may fall back to: the usable methods, less SMS and voice
   * when the tenant's country rules (as they are now) exclude the user's phone, as a start would.
   */
  private fallbackCandidates(settings: TenantSettings, phoneCountry: string): readonly string[] {
    const usable = this.usableMethods(settings);
    return phoneCountryAllowed(settings.sms, phoneCountry) ? usable : usable.filter((m) => m !== 'sms' && m !== 'voice');
  }

  /** The usable methods but SMS, for a RADIUS client in OTP password mode (once per settings change). */
  private usableMethodsWithoutSms(settings: TenantSettings): readonly string[] {
    let methods = this.usableButSms.get(settings);
    if (!methods) {
      methods = this.usableMethods(settings).filter((m) => m !== 'sms');
      this.usableButSms.set(settings, methods);
    }
    return methods;
  }
  private readonly usableButSms = new WeakMap<TenantSettings, readonly string[]>();

  /**
   * `deadline`: when the caller stops waiting (Mfa-Deadline, ms); the event's publish is retried
   * until shortly before it. A decision is answered even when its event could not be published by
   * then: the script kept it in the outbox, and the relay publishes it (no decision without its event).
   */
  async start(req: ChallengeStartRequest, now: Date, deadline?: number): Promise<ChallengeStartReply> {
    const known = this.settingsOf(req.tenantId);
    const settings = known instanceof Promise ? await known : known;
    const tag = userTag(this.keyring, req.tenantId, req.userId);
    const nonce = this.codes.challengeNonce();
    const challengeId = formatChallengeId(tag, nonce);
    const slot = hashSlotOf(tag);
    const radius = req.context?.radius;
    // A RADIUS client that sends the code as the password cannot answer an Access-Challenge: no SMS.
    const noSms = radius?.passwordMode === 'otp';
    // A code is drawn only if the challenge may become an SMS one: the script never picks another
    // method than the one requested. It is sealed now, for the outbox record: Redis keeps only its
    // keyed hash and the sealed code (whose key it never sees).
    const code = !noSms && (req.method === undefined || req.method === 'sms') ? this.codes.smsCode() : undefined;
    // Likewise the number of a push: Redis keeps its keyed hash; the IdP's sign-in page shows it.
    // A RADIUS sign-in has no page to show it on: its push is approved or denied without one.
    const number = (req.method === undefined || req.method === 'push') && !radius ? this.codes.numberMatch() : undefined;
    const expiresAt = new Date(now.getTime() + settings.codeLifetimeSeconds * 1000);
    const context: StartDecisionContext = {
      k: 'start',
      t: req.tenantId,
      u: req.userId,
      id: challengeId,
      n: now.getTime(),
      e: expiresAt.getTime(),
      m: settings.maxAttempts,
      // A RADIUS sign-in is recorded as decided by its RADIUS client (and NAS), not by this instance.
      s: radius ? { name: radius.serverName, ip: radius.serverIp } : this.server,
    };
    if (radius) context.v = 'radius';
    if (req.clientIp) context.ip = req.clientIp;
    if (req.application) context.app = req.application;
    if (req.requestId) context.rq = req.requestId;
    const omitted = (settings.reportFields.displayName ? '' : 'd') + (settings.reportFields.email ? '' : 'e');
    if (omitted) context.om = omitted;
    if (settings.enabledMethods.includes('voice')) {
      context.vo = [settings.voice.callerId, settings.voice.pinMode ? 1 : 0, settings.fraudAlert.enabled ? settings.fraudAlert.code : ''];
    }
    if (code !== undefined) context.code = seal(this.keyring, Buffer.from(code, 'utf8'), SealContext.smsCode(req.tenantId, challengeId));
    this.decideInTime(deadline);
    const verdict = await this.store.startChallenge({
      tag,
      nonce,
      tenantId: req.tenantId,
      userId: req.userId,
      requestedMethod: req.method,
      enabledMethods: noSms ? this.usableMethodsWithoutSms(settings) : this.usableMethods(settings),
      now,
      expiresAt,
      maxAttempts: settings.maxAttempts,
      codeHash: code === undefined ? undefined : hashCode(this.keyring, challengeId, code),
      numberHash: number === undefined ? undefined : hashCode(this.keyring, challengeId, number),
      push: this.pushLimits,
      ttlSeconds: settings.codeLifetimeSeconds + this.config.CHALLENGE_RETENTION_SECONDS,
      smsMaxSends: this.config.SMS_MAX_SENDS_PER_WINDOW,
      smsWindowSeconds: this.config.SMS_SEND_WINDOW_SECONDS,
      tenantKnown: this.tenants.has(req.tenantId),
      tenantUnread: settings === UNREAD_TENANT,
      lockout: this.lockoutOf(settings),
      challengeId,
      context: JSON.stringify(context),
      slot,
      clientIp: req.clientIp,
      application: req.application,
      ipLocked: this.ipLocks.locked(req.tenantId, settings, req.clientIp, now.getTime()),
      ipThrottledUntil: this.ipLocks.throttledUntil(req.tenantId, settings, req.clientIp, now.getTime()),
      // A legacy client of a tenant with app passwords: its user's app passwords, if any, come first.
      legacyAppPasswords: settings.appPasswords.allowed && req.context?.legacyClient === true,
      phoneCountries: this.phoneCountriesOf(settings),
      bypass: this.bypassOf(settings, req),
      ...this.rememberOf(settings, req, tag, now),
    });
    if (verdict.kind === 'projection_missing') this.projectionMissing?.(req.tenantId, req.userId);
    if (verdict.kind === 'rate_limited') {
      throttled.inc({ scope: verdict.scope });
      if (verdict.scope === 'push') pushFatigue.inc({ event: 'refused_pending_or_rate' });
      if (verdict.pushSuspendedNow) pushFatigue.inc({ event: 'suspended' });
    }
    if (verdict.kind === 'blocked' && verdict.reason === 'push_suspended') pushFatigue.inc({ event: verdict.suspendedNow ? 'suspended' : 'refused_suspended' });
    if (verdict.kind === 'pending' && verdict.pushSuspendedNow) pushFatigue.inc({ event: 'suspended' });
    if (verdict.kind === 'pending' && verdict.totp) this.totpTokens.set(challengeId, verdict.totp, expiresAt.getTime(), now.getTime());
    const outcome = this.decideStart(context, verdict);
    outcomes.inc({ kind: outcome.reply.status, method: outcome.reply.method ?? 'none' });
    if (outcome.event) await this.record(slot, decisionName(challengeId, verdict.kind), context, outcome.event, deadline ?? now.getTime() + DEFAULT_DEADLINE_MS);
    if (outcome.reply.status === 'pending' && outcome.reply.method === 'push' && number !== undefined) return { ...outcome.reply, numberMatch: number };
    return outcome.reply;
  }

  /**
   * A device's answer to a push challenge (the device API checked its signatures): approve with
   * the number the user typed, or deny. Recorded like a verify: a wrong number counts like a wrong
   * code and ends the push (one attempt); a denial ends it as denied_by_user. Both count towards
   * push fatigue.
   */
  async pushAnswer(
    req: { tenantId: string; challengeId: string; deviceId: string; deviceNonce: string; decision: 'approve' | 'deny'; number?: string | undefined },
    now: Date,
  ): Promise<{ verdict: VerifyVerdict; reply: ChallengeVerifyReply }> {
    const { verdict, reply } = await this.answeredElsewhere('push', req, now, undefined, (where) =>
      this.store.recordPushAnswer({
        ...where,
        numberHash: req.decision !== 'approve' ? undefined : req.number !== undefined ? hashCode(this.keyring, req.challengeId, req.number) : 'none',
        fatigueWindowSeconds: this.pushLimits.windowSeconds,
        deviceNonce: req.deviceNonce,
      }),
    );
    if (verdict.kind === 'denied_by_user') pushFatigue.inc({ event: 'denied_by_user' });
    if ((verdict.kind === 'exhausted' || verdict.kind === 'locked_out') && verdict.cause === 'mismatch') pushFatigue.inc({ event: 'wrong_number' });
    return { verdict, reply };
  }

  /**
   * A challenge answered outside verify (a call's keys, a device's answer): its script, then the
   * same decision, events and counters as a verify.
   */
  private async answeredElsewhere(
    method: 'voice' | 'push',
    req: { tenantId: string; challengeId: string; deviceId?: string },
    now: Date,
    deadline: number | undefined,
    script: (where: Omit<Parameters<ChallengeStore['recordVoiceOutcome']>[0], 'approved' | 'answerId'>) => Promise<VerifyVerdict>,
  ): Promise<{ verdict: VerifyVerdict; reply: ChallengeVerifyReply }> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const known = this.settingsOf(req.tenantId);
    const settings = decidedBy(known instanceof Promise ? await known : known);
    // A device's answer names the device in its events (dv), also when the relay rebuilds them.
    const context: VerifyDecisionContext = { k: 'verify', t: req.tenantId, id: req.challengeId, n: now.getTime(), s: this.server, ...(req.deviceId ? { dv: req.deviceId } : {}) };
    const slot = hashSlotOf(id.tag);
    this.decideInTime(deadline);
    // A tenant that remembers: the approval is the user's last MFA for legacy clients (no browser
    // token: nothing carries one back to the browser from a phone's answer).
    const remember = settings.rememberMfa.enabled ? { id: '', until: now.getTime() + settings.rememberMfa.days * DAY_MS } : undefined;
    const verdict = await script({ tag: id.tag, nonce: id.nonce, tenantId: req.tenantId, now, lockout: this.lockoutOf(settings), challengeId: req.challengeId, slot, context: JSON.stringify(context), remember });
    const outcome = decideVerify(verdict, { challengeId: req.challengeId, server: this.server, deviceId: req.deviceId });
    outcomes.inc({ kind: verdict.kind, method });
    if (outcome.event) {
      const name = decisionName(req.challengeId, verdict.kind, verdict.kind === 'rejected' ? verdict.attempts : undefined);
      await this.record(slot, name, context, outcome.event, deadline ?? now.getTime() + DEFAULT_DEADLINE_MS);
    }
    return { verdict, reply: outcome.reply };
  }

  async verify(req: ChallengeVerifyRequest, now: Date, deadline?: number): Promise<ChallengeVerifyReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const known = this.settingsOf(req.tenantId);
    const settings = decidedBy(known instanceof Promise ? await known : known);
    const lockout = this.lockoutOf(settings);
    const context: VerifyDecisionContext = { k: 'verify', t: req.tenantId, id: req.challengeId, n: now.getTime(), s: this.server };
    const slot = hashSlotOf(id.tag);
    // A remember token is drawn before the script, kept (as its id) only if the verify approves a
    // challenge whose start asked for it: no round trip of its own.
    const token = settings.rememberMfa.enabled ? `mfar.${randomToken(32)}` : undefined;
    const remember = token ? { id: rememberTokenId(this.keyring, id.tag, token), until: now.getTime() + settings.rememberMfa.days * DAY_MS } : undefined;
    const where = { tag: id.tag, nonce: id.nonce, tenantId: req.tenantId, now, lockout, challengeId: req.challengeId, slot, remember };
    this.decideInTime(deadline);
    // A TOTP challenge this instance started: the code is checked against the tokens its start
    // answered, and the script decides in the same call if they are still the user's.
    const cached = this.totpTokens.get(req.challengeId, now.getTime());
    const presumed = cached && { match: this.matchTotp(id.tag, cached, req.code, now), tokens: cached };
    let match = presumed?.match;
    // The step goes into ChallengeApproved: a rebuild of Redis restores the replay guard from it.
    if (match?.matched) context.st = match.step;
    const check = await this.store.checkCode({
      ...where,
      context: JSON.stringify(context),
      // Only an SMS challenge compares the code's keyed hash; a challenge with tokens kept is TOTP.
      codeHash: presumed ? NO_CODE_HASH : hashCode(this.keyring, req.challengeId, req.code),
      totp: presumed,
    });
    if (cached) totpChecks.inc({ path: check.kind === 'totp_check' ? 'tokens_changed' : 'one_call' });
    else if (check.kind === 'totp_check') totpChecks.inc({ path: 'two_calls' });
    let verdict: VerifyVerdict;
    if (check.kind === 'totp_check') {
      // Not started here, or the tokens changed since: checked with the current ones, and recorded.
      this.totpTokens.set(req.challengeId, check.tokens, now.getTime() + settings.codeLifetimeSeconds * 1000, now.getTime());
      match = this.matchTotp(id.tag, check.tokens, req.code, now);
      delete context.st;
      if (match.matched) context.st = match.step;
      this.decideInTime(deadline);
      verdict = await this.store.recordTotpCheck({ ...where, context: JSON.stringify(context), match });
    } else {
      verdict = check;
    }
    if (verdict.kind === 'approved' && match?.matched) verdict = { ...verdict, step: match.step };
    // Another code may follow only a wrong one. A challenge not found (another tenant's, named by
    // its id) is left as it is: no request of another tenant costs its verify a second call.
    if (verdict.kind !== 'rejected' && verdict.kind !== 'not_found') this.totpTokens.delete(req.challengeId);
    const outcome = decideVerify(verdict, { challengeId: req.challengeId, server: this.server });
    if (verdict.kind === 'approved' && verdict.remembered && token && remember) {
      outcome.reply = { ...outcome.reply, rememberToken: token, rememberUntil: new Date(remember.until).toISOString() };
    }
    outcomes.inc({ kind: verdict.kind, method: 'method' in verdict ? verdict.method : 'none' });
    if (outcome.event) {
      const name = decisionName(req.challengeId, verdict.kind, verdict.kind === 'rejected' ? verdict.attempts : undefined);
      await this.record(slot, name, context, outcome.event, deadline ?? now.getTime() + DEFAULT_DEADLINE_MS);
    }
    return outcome.reply;
  }

  /**
   * The answer of a voice challenge's call, from dispatch: approved (# pressed, or the PIN right),
   * or a wrong PIN, which counts like a wrong code (the challenge's attempts, the user's lockout).
   * Recorded like a verify: the same script outcome, the same events (method voice). An answer
   * with an id is recorded once: sent again (its reply lost), it gets the same reply and the same
   * event (its name and id come from the decision), counted once; the reply names the id, so
   * dispatch knows it may send answers again.
   */
  async voiceOutcome(req: VoiceOutcomeRequest, now: Date, deadline?: number): Promise<VoiceOutcomeReply> {
    const { reply } = await this.answeredElsewhere('voice', req, now, deadline, (where) => this.store.recordVoiceOutcome({ ...where, approved: req.approved, answerId: req.answerId }));
    const { status, reason } = reply;
    return { status, ...(reason ? { reason } : {}), ...(req.answerId ? { answerId: req.answerId } : {}) };
  }

  /**
   * challenge.resend: one script checks the challenge (this tenant's, SMS, pending, unexpired), the
   * user's lockouts and the send limits, counts the send and keeps the decision; its event has
   * dispatch send the start's code again. No code is drawn: the user gets the one they may be
   * typing already.
   */
  async resend(req: ChallengeResendRequest, now: Date, deadline?: number): Promise<ChallengeResendReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const known = this.settingsOf(req.tenantId);
    const settings = known instanceof Promise ? await known : known;
    // What a resend may send depends on the tenant's settings as they are now: unread, nothing is sent.
    decidedBy(settings);
    const context: ResendDecisionContext = { k: 'resend', t: req.tenantId, id: req.challengeId, n: now.getTime(), s: this.server };
    const slot = hashSlotOf(id.tag);
    this.decideInTime(deadline);
    const verdict = await this.store.resend({
      tag: id.tag,
      nonce: id.nonce,
      tenantId: req.tenantId,
      now,
      lockout: this.lockoutOf(settings),
      maxSends: this.config.SMS_MAX_SENDS_PER_CHALLENGE,
      minIntervalSeconds: this.config.SMS_RESEND_MIN_INTERVAL_SECONDS,
      smsMaxSends: this.config.SMS_MAX_SENDS_PER_WINDOW,
      smsWindowSeconds: this.config.SMS_SEND_WINDOW_SECONDS,
      challengeId: req.challengeId,
      context: JSON.stringify(context),
      slot,
      smsAllowed: this.usableMethods(settings).includes('sms'),
      phoneCountries: this.phoneCountriesOf(settings),
    });
    const outcome = this.decideResend(context, verdict);
    outcomes.inc({ kind: verdict.kind, method: 'sms' });
    if (verdict.kind === 'rate_limited') throttled.inc({ scope: verdict.scope });
    if (outcome.event && verdict.kind === 'resent') {
      await this.record(slot, decisionName(req.challengeId, 'resent', verdict.resend), context, outcome.event, deadline ?? now.getTime() + DEFAULT_DEADLINE_MS);
    }
    return outcome.reply;
  }

  private decideResend(c: ResendDecisionContext, verdict: ReturnType<typeof parseResendVerdict>) {
    return decideResend(verdict, { challengeId: c.id, server: c.s, minIntervalSeconds: this.config.SMS_RESEND_MIN_INTERVAL_SECONDS });
  }

  /**
   * The event of a decision the outbox kept (the relay's side): the same pure decision as the
   * request's own path, from the same context and script reply, so the same event and id.
   */
  eventOfRecord(record: DecisionRecord): { subject: string; event: AnyEvent } | undefined {
    const c = record.c;
    let pending: PendingEvent | undefined;
    if (c.k === 'start') {
      pending = this.decideStart(c, parseStartVerdict(record.r)).event;
    } else if (c.k === 'resend') {
      pending = this.decideResend(c, parseResendVerdict(record.r)).event;
    } else {
      let verdict = parseVerifyVerdict(record.r);
      if (verdict.kind === 'approved' && c.st !== undefined) verdict = { ...verdict, step: c.st };
      pending = decideVerify(verdict, { challengeId: c.id, server: c.s, deviceId: c.dv }).event;
    }
    if (!pending) return undefined;
    return { subject: subjectOf(pending), event: this.envelope(decisionNameOfReply(c.id, record.r), c, pending) };
  }

  private decideStart(c: StartDecisionContext, verdict: StartVerdict) {
    return decideStart(verdict, {
      challengeId: c.id,
      userId: c.u,
      expiresAt: new Date(c.e),
      maxAttempts: c.m,
      server: c.s,
      via: c.v,
      clientIp: c.ip,
      application: c.app,
      requestId: c.rq,
      sealedSmsCode: () => {
        if (c.code === undefined) throw new SealError(`an SMS challenge was started without a sealed code (${c.id})`);
        return c.code;
      },
      sealedPersonalData: (profile, dataKey) => this.sealPersonalData(c.t, c.u, profile, dataKey),
      ...(c.vo ? { voice: { callerId: c.vo[0], pinMode: c.vo[1] === 1, fraudCode: c.vo[2] === '' ? null : c.vo[2] } } : {}),
      ...(c.om ? { omitted: { displayName: c.om.includes('d'), email: c.om.includes('e') } } : {}),
    });
  }

  private envelope(name: string, c: DecisionContext, pending: PendingEvent): AnyEvent {
    const version = 'version' in pending ? pending.version : 1;
    return createEvent(pending.type, version, { tenantId: c.t, aggregateId: c.id, now: new Date(c.n), data: pending.data as never, id: eventIdOf(name) });
  }

  /** Throws `unavailable` (nothing changed) when the caller's deadline is too close to decide in time. */
  private decideInTime(deadline: number | undefined): void {
    if (deadline === undefined || deadline - Date.now() >= DECISION_MIN_MS) return;
    declinedLate.inc();
    throw unavailable('too close to the request’s deadline to decide in time; nothing was changed, try again');
  }

  /** Unmasks the user's TOTP secrets only for the comparison, then zeroes them. */
  private matchTotp(tag: string, answered: TotpTokens, code: string, now: Date): TotpMatch {
    const userKey = projectionUserKey(this.keyring, tag);
    const tokens = maskedTokensOf(answered).map(({ nonce, masked: secret, ...token }) => ({ ...token, secret: unmaskSecret(userKey, nonce, secret) }));
    try {
      return matchTotpCode(tokens, code, now.getTime());
    } finally {
      userKey.fill(0);
      for (const token of tokens) token.secret.fill(0);
    }
  }

  async status(req: ChallengeStatusRequest, now: Date): Promise<ChallengeStatusReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    if (this.tenants.isDeleted(req.tenantId)) throw notFound('unknown tenant');
    const record = await this.store.readChallenge(id.tag, id.nonce);
    if (!record || record.tenantId !== req.tenantId) throw notFound('unknown challenge');
    // The methods to fall back on are those the tenant enables, never the defaults' in their place.
    const usable = record.deliveryFailed ? this.fallbackCandidates(decidedBy(await this.settingsOf(req.tenantId)), record.phoneCountry) : [];
    return decideStatus(req.challengeId, record, now, usable);
  }

  /**
   * The personal data of a challenge event, sealed under the user's data key, which the start
   * script read (still wrapped with the master keyring) from the user's projection: no round trip.
   */
  private sealPersonalData(tenantId: string, userId: string, profile: Parameters<typeof sealPersonalData>[2], field: string): string | undefined {
    return sealPersonalData(this.dataKeyOf(tenantId, userId, field), { tenantId, userId, purpose: 'challenge' }, profile);
  }

  private dataKeyOf(tenantId: string, userId: string, field: string): DataKey {
    const id = `${tenantId}\u0000${userId}\u0000${field}`;
    const now = Date.now();
    const hit = this.dataKeys.get(id);
    if (hit && hit.expiresAt > now) return hit.dataKey;
    const wrapped = parseWrappedDataKey(field);
    if (!wrapped) throw new SealError('the user projection holds no readable data key');
    const dataKey = unwrapDataKey(this.keyring, tenantId, userId, wrapped.gen, wrapped.wrapped);
    this.dataKeys.delete(id);
    this.dataKeys.set(id, { dataKey, expiresAt: now + DATA_KEY_CACHE_MS });
    if (this.dataKeys.size > DATA_KEY_CACHE_SIZE) this.dataKeys.delete(this.dataKeys.keys().next().value!);
    return dataKey;
  }

  /**
   * Appends the decision's event, trying again until shortly before the caller's deadline (its
   * id, derived from the decision's name, makes a repeat harmless). Once stored, the decision
   * leaves the outbox; if the deadline comes first, the relay publishes it from there.
   */
  private async record(slot: number, name: string, c: DecisionContext, pending: PendingEvent, deadline: number): Promise<void> {
    const event = this.envelope(name, c, pending);
    const subject = subjectOf(pending);
    for (let attempt = 1; ; attempt++) {
      const left = deadline - REPLY_MARGIN_MS - Date.now();
      if (left <= 0) break;
      try {
        await this.publisher.publish(subject, event, { timeoutMs: Math.min(PUBLISH_TIMEOUT_MS, left) });
        this.outbox.remove(slot, name);
        return;
      } catch (error) {
        if (attempt === 1) this.log.warn('could not record a challenge event; retrying until the deadline', { eventType: event.type, challengeId: c.id, error });
        await new Promise((resolve) => setTimeout(resolve, Math.min(50 * attempt, Math.max(0, deadline - REPLY_MARGIN_MS - Date.now()))));
      }
    }
    deferred.inc();
    this.outbox.defer(slot, name);
    this.log.error('a challenge event was not acknowledged before the deadline: left to the outbox relay', { eventType: event.type, challengeId: c.id });
  }
}
