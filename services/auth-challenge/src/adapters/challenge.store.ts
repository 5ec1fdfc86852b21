import { Inject, Injectable, Optional } from '@nestjs/common';
import { ReplyError } from 'ioredis';
import { unavailable } from '@mfa/contracts';
import { isTransientDependencyError } from '@mfa/messaging';
import { RedisKeys, slotMarkerKey, slotOutboxKey, type RedisClient } from '@mfa/projection';
import { REDIS, ReplicatedWrites } from '@mfa/service-kit';
import { counter, histogram } from '@mfa/telemetry';
import type { TotpMatch } from '../domain/totp-match.js';
import type { CodeCheck, ResendVerdict, StartVerdict, TotpTokens, VerifyVerdict } from '../domain/verdicts.js';
import { OUTBOX_MAX_PER_SLOT } from '../tokens.js';
import { DEFAULT_OUTBOX_MAX_PER_SLOT, pushAnswerScript, resendScript, startScript, STATUS_SCRIPT, verifyScript, verifyTotpScript, voiceOutcomeScript } from './scripts.js';
import { parseCodeCheck, parseResendVerdict, parseStartVerdict, parseVerifyVerdict, tokenSpecsOf } from './script-replies.js';

const redisDuration = histogram('mfa_redis_duration_seconds', 'Redis round trips of the challenge store, by operation', ['op']);
const outboxFull = counter(
  'mfa_outbox_full_total',
  'Requests refused (unavailable, nothing decided) because their slot outbox held OUTBOX_MAX_PER_SLOT decisions JetStream had not acknowledged',
  ['op'],
);

type ScriptFn = (...args: Array<string | number | Buffer>) => Promise<string[]>;

interface StartInput {
  tag: string;
  nonce: string;
  tenantId: string;
  userId: string;
  requestedMethod: string | undefined;
  enabledMethods: readonly string[];
  now: Date;
  expiresAt: Date;
  maxAttempts: number;
  /** Keyed hash of the SMS code; undefined when the request asks for another method. */
  codeHash: Buffer | undefined;
  ttlSeconds: number;
  smsMaxSends: number;
  smsWindowSeconds: number;
  tenantKnown: boolean;
  /** The tenant's settings could not be read (their lookup failed): the start decides nothing. */
  tenantUnread?: boolean;
  lockout: LockoutPolicy;
  challengeId: string;
  /** The request's context (JSON) the outbox keeps with the decision (see outbox.ts). */
  context: string;
  /** The hash slot of the user's keys (hashSlotOf(tag)): where the slot's marker and outbox are. */
  slot: number;
  clientIp?: string | undefined;
  application?: string | undefined;
  /** The client IP is locked by the tenant's per-IP lockout (IpLocks): the start is denied. */
  ipLocked?: boolean;
  /** A bypass the tenant's settings grant this sign-in: a known user is approved at once. */
  bypass?: 'trusted_ip' | 'corporate_network' | 'remembered_device' | undefined;
  /** The id of the remember token the browser presented (rememberTokenId), if the tenant remembers browsers. */
  rememberId?: string | undefined;
  /** A legacy client of a tenant that remembers: its user needs no MFA if they completed one since (ms). */
  legacySince?: number | undefined;
  /** With rememberId: a browser remembered at or before this time (ms) no longer counts (rememberMfa.days as they are now). */
  rememberedAfter?: number | undefined;
  /** An approval of this challenge remembers the browser (the start asked, the tenant allows). */
  rememberDevice?: boolean;
  /** The client IP's starts that send something are throttled until then (ms; IpLocks' copy of fraud's IpThrottled). */
  ipThrottledUntil?: number | undefined;
  /** A legacy client, and the tenant allows app passwords: a user who has (or once used) one is denied app_password_required. */
  legacyAppPasswords?: boolean;
  /** The tenant's SMS country rules for phone methods: allowed ('*' = all, else a csv) and blocked (a csv). */
  phoneCountries?: { allowed: string; blocked: string } | undefined;
  /** Keyed hash of the push's number; undefined when the request asks for another method. */
  numberHash?: Buffer | undefined;
  /** Default: the PUSH_* settings' defaults. */
  push?: PushLimits;
}

export const DEFAULT_PUSH_LIMITS: PushLimits = { maxPerWindow: 5, windowSeconds: 900, refusalsToSuspend: 3, suspendSeconds: 3600 };

/** MFA-fatigue limits of push, per user (PUSH_* settings). */
export interface PushLimits {
  maxPerWindow: number;
  windowSeconds: number;
  refusalsToSuspend: number;
  suspendSeconds: number;
}

/**
 * Brute-force limits, per user across challenges. Passed with every call rather than written
 * into the scripts, so that they can become tenant settings.
 */
export interface LockoutPolicy {
  /** Wrong codes within the window that lock the user out for `lockoutSeconds`. */
  threshold: number;
  windowSeconds: number;
  lockoutSeconds: number;
  /** Wrong codes in a row (any window) after which only an administrator can unlock the user. */
  maxConsecutiveFailures: number;
}

interface VerifyInput {
  tag: string;
  nonce: string;
  tenantId: string;
  now: Date;
  lockout: LockoutPolicy;
  challengeId: string;
  /** The request's context (JSON) the outbox keeps with the decision (see outbox.ts). */
  context: string;
  /** The hash slot of the user's keys (hashSlotOf(tag)): where the slot's marker and outbox are. */
  slot: number;
  /** A new remember token's id and end (ms), kept if this verify approves a challenge that asked for it. */
  remember?: { id: string; until: number } | undefined;
}

interface ResendInput {
  tag: string;
  nonce: string;
  tenantId: string;
  now: Date;
  lockout: LockoutPolicy;
  /** Sends one challenge may have in all, the start's included (SMS_MAX_SENDS_PER_CHALLENGE). */
  maxSends: number;
  /** The least time between two sends of one challenge (SMS_RESEND_MIN_INTERVAL_SECONDS). */
  minIntervalSeconds: number;
  /** The user's sliding window of SMS and voice sends, as start counts them. */
  smsMaxSends: number;
  smsWindowSeconds: number;
  challengeId: string;
  /** The request's context (JSON) the outbox keeps with the decision (see outbox.ts). */
  context: string;
  slot: number;
  /** SMS among the tenant's usable methods now (enabledMethods, security defaults). */
  smsAllowed: boolean;
  /** The tenant's SMS country rules now, as at start. */
  phoneCountries: { allowed: string; blocked: string };
}

/**
 * A Redis that cannot be reached, or that answers about its own state (a failover: MOVED to a dead
 * master, CLUSTERDOWN, READONLY…), is `unavailable` to the caller (try again); any other error
 * Redis answered with (a script bug) stays an internal error.
 */
async function reach<T>(op: string, call: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await call();
  } catch (error) {
    if (error instanceof ReplyError && !isTransientDependencyError(error)) throw error;
    throw unavailable('challenge store unavailable; try again', error);
  } finally {
    redisDuration.observe({ op }, (performance.now() - started) / 1000);
  }
}

/**
 * A script's reply, unless it is {'outbox_full'}: the user's slot outbox holds OUTBOX_MAX_PER_SLOT
 * decisions whose events JetStream has not taken, and the script decided nothing (see KEEP in
 * scripts.ts). Answered `unavailable`: the caller may try again once JetStream takes events.
 */
function roomy(op: string, raw: string[]): string[] {
  if (raw[0] !== 'outbox_full') return raw;
  outboxFull.inc({ op });
  throw unavailable('decisions cannot be recorded now (the event log has not taken the last ones); try again later');
}

/**
 * A push answer from a device the user no longer has: deleted between the device API's admission
 * of the request and the answer's script, which changed nothing (PUSH_ANSWER_SCRIPT: neither the
 * decision nor the device's use). The device API answers it as any request of a deleted app, 403
 * not_activated.
 */
export class PushDeviceRemoved extends Error {
  override name = 'PushDeviceRemoved';
  constructor() {
    super('the device answering the push is no longer the user’s');
  }
}

/** A TOTP outcome as the verify scripts take it: the token's id ('' = none), its step, the cause when none. */
const matchArgs = (m: TotpMatch) => (m.matched ? [m.tokenId, m.step, ''] : ['', '', m.cause]);

const lockoutArgs = (p: LockoutPolicy) => [p.threshold, p.windowSeconds, p.lockoutSeconds, p.maxConsecutiveFailures];

/**
 * Challenges in Redis: one script call per start, one per verify (two for a TOTP verify whose
 * code could not be checked beforehand: read the tokens, record the outcome), one per status. The scripts answer flat string
 * arrays; this adapter turns them into the domain's verdicts.
 */
@Injectable()
export class ChallengeStore {
  private readonly start: ScriptFn;
  private readonly verify: ScriptFn;
  private readonly verifyTotp: ScriptFn;

  constructor(
    @Inject(REDIS) private readonly redis: RedisClient,
    /** The scripts that accept codes: answered once a replica holds them (REDIS_WAIT_REPLICAS). */
    private readonly decisions: ReplicatedWrites,
    /** The most decisions a slot's outbox holds before the scripts decide nothing (OUTBOX_MAX_PER_SLOT). */
    @Optional() @Inject(OUTBOX_MAX_PER_SLOT) outboxMax: number = DEFAULT_OUTBOX_MAX_PER_SLOT,
  ) {
    redis.defineCommand('mfaChallengeStart', { numberOfKeys: 18, lua: startScript(outboxMax) });
    redis.defineCommand('mfaChallengeStatus', { numberOfKeys: 2, lua: STATUS_SCRIPT });
    redis.defineCommand('mfaChallengeResend', { numberOfKeys: 8, lua: resendScript(outboxMax) });
    for (const [name, numberOfKeys, lua] of [
      ['mfaChallengePushAnswer', 14, pushAnswerScript(outboxMax)],
      ['mfaChallengeVerify', 10, verifyScript(outboxMax)],
      ['mfaChallengeVerifyTotp', 10, verifyTotpScript(outboxMax)],
      ['mfaChallengeVoiceOutcome', 10, voiceOutcomeScript(outboxMax)],
    ] as const) {
      // On the writer's connection only (the service's own when decisions do not wait).
      decisions.define(name, { numberOfKeys, lua });
    }
    const r = redis as unknown as { mfaChallengeStart: ScriptFn };
    this.start = r.mfaChallengeStart.bind(redis);
    this.verify = (...args) => decisions.run('mfaChallengeVerify', args);
    this.verifyTotp = (...args) => decisions.run('mfaChallengeVerifyTotp', args);
  }

  async startChallenge(input: StartInput): Promise<StartVerdict> {
    const raw = await reach('start', () => this.start(
      RedisKeys.user(input.tag),
      RedisKeys.challenge(input.tag, input.nonce),
      RedisKeys.smsSends(input.tag),
      RedisKeys.failures(input.tag),
      RedisKeys.consecutiveFailures(input.tag),
      slotMarkerKey(input.slot),
      slotOutboxKey(input.slot),
      RedisKeys.blocked(input.tag),
      RedisKeys.remembered(input.tag),
      RedisKeys.lastMfa(input.tag),
      RedisKeys.failedMethods(input.tag),
      RedisKeys.phoneThrottle(input.tag),
      RedisKeys.pendingPush(input.tag),
      RedisKeys.pushStarts(input.tag),
      RedisKeys.pushRefusals(input.tag),
      RedisKeys.pushSuspended(input.tag),
      RedisKeys.totp(input.tag),
      RedisKeys.totpSteps(input.tag),
      input.tenantId,
      input.userId,
      input.requestedMethod ?? '',
      input.enabledMethods.join(','),
      input.now.getTime(),
      input.expiresAt.getTime(),
      input.maxAttempts,
      input.codeHash ?? '',
      input.ttlSeconds,
      input.smsMaxSends,
      input.smsWindowSeconds,
      input.tenantUnread ? 'u' : input.tenantKnown ? '1' : '0',
      input.lockout.threshold,
      input.lockout.maxConsecutiveFailures,
      input.challengeId,
      input.context,
      input.clientIp ?? '',
      input.application ?? '',
      input.ipLocked ? '1' : '0',
      input.bypass ?? '',
      input.rememberId ?? '',
      input.legacySince ?? '',
      input.rememberDevice ? '1' : '0',
      input.ipThrottledUntil ?? '',
      input.legacyAppPasswords ? '1' : '0',
      input.phoneCountries?.allowed ?? '*',
      input.phoneCountries?.blocked ?? '',
      input.numberHash ?? '',
      (input.push ?? DEFAULT_PUSH_LIMITS).maxPerWindow,
      (input.push ?? DEFAULT_PUSH_LIMITS).windowSeconds,
      (input.push ?? DEFAULT_PUSH_LIMITS).refusalsToSuspend,
      (input.push ?? DEFAULT_PUSH_LIMITS).suspendSeconds * 1000,
      input.rememberedAfter ?? 0,
    ));
    return parseStartVerdict(roomy('start', raw));
  }

  /**
   * The verify script, with the keyed hash of the presented code: decides an SMS challenge, and a
   * TOTP one whose code was checked beforehand (`totp`: the outcome found and the tokens it was
   * found with) if those tokens are still the user's. Otherwise, for a pending TOTP challenge, it
   * changes nothing and answers the user's masked tokens (then recordTotpCheck).
   */
  async checkCode(input: VerifyInput & { codeHash: Buffer; totp?: { match: TotpMatch; tokens: TotpTokens } }): Promise<CodeCheck> {
    const args: Array<string | number | Buffer> = [...this.verifyKeys(input), ...this.verifyArgs(input), input.codeHash];
    if (input.totp) args.push('1', ...matchArgs(input.totp.match), ...tokenSpecsOf(input.totp.tokens));
    const raw = await reach('verify', () => this.verify(...args));
    return parseCodeCheck(roomy('verify', raw));
  }

  /**
   * The answer of a voice challenge's call (dispatch): approved, or a wrong PIN counted like a wrong
   * code; with an answer id, recorded once for it (the same id again gets the decision it took).
   */
  async recordVoiceOutcome(input: VerifyInput & { approved: boolean; answerId?: string | undefined }): Promise<VerifyVerdict> {
    const script: ScriptFn = (...args) => this.decisions.run('mfaChallengeVoiceOutcome', args);
    const raw = await reach('voice_outcome', () => script(...this.verifyKeys(input), ...this.verifyArgs(input), input.approved ? '1' : '0', input.answerId ?? ''));
    return parseVerifyVerdict(roomy('voice_outcome', raw));
  }

  /**
   * A device's answer to a push challenge: approve with the typed number's keyed hash, approve
   * without a number (`'none'`: only a push started without one, over RADIUS, takes it), or deny
   * (`numberHash` undefined). The device's signatures are checked before. Throws PushDeviceRemoved,
   * having changed nothing, when the device (`deviceNonce` in the user's devices) is gone by then.
   */
  async recordPushAnswer(input: VerifyInput & { numberHash: Buffer | 'none' | undefined; fatigueWindowSeconds: number; deviceNonce: string }): Promise<VerifyVerdict> {
    const script: ScriptFn = (...args) => this.decisions.run('mfaChallengePushAnswer', args);
    const raw = await reach('push_answer', () =>
      script(
        ...this.verifyKeys(input),
        RedisKeys.pendingPush(input.tag),
        RedisKeys.pushRefusals(input.tag),
        RedisKeys.devicesUsed(input.tag),
        RedisKeys.devices(input.tag),
        ...this.verifyArgs(input),
        input.numberHash ?? '',
        input.fatigueWindowSeconds,
        input.deviceNonce,
      ),
    );
    if (raw[0] === 'device_removed') throw new PushDeviceRemoved();
    return parseVerifyVerdict(roomy('push_answer', raw));
  }

  /** Second verify call of a TOTP challenge: checks the match again atomically and records the outcome. */
  async recordTotpCheck(input: VerifyInput & { match: TotpMatch }): Promise<VerifyVerdict> {
    const raw = await reach('verify_totp', () => this.verifyTotp(...this.verifyKeys(input), ...this.verifyArgs(input), ...matchArgs(input.match)));
    return parseVerifyVerdict(roomy('verify_totp', raw));
  }

  /** challenge.resend: checks and counts the resend atomically, and keeps the decision in the outbox. */
  async resend(input: ResendInput): Promise<ResendVerdict> {
    const script = (this.redis as unknown as { mfaChallengeResend: ScriptFn }).mfaChallengeResend.bind(this.redis);
    const raw = await reach('resend', () => script(
      RedisKeys.challenge(input.tag, input.nonce),
      RedisKeys.smsSends(input.tag),
      RedisKeys.failures(input.tag),
      RedisKeys.consecutiveFailures(input.tag),
      RedisKeys.phoneThrottle(input.tag),
      slotOutboxKey(input.slot),
      RedisKeys.blocked(input.tag),
      RedisKeys.user(input.tag),
      input.tenantId,
      input.now.getTime(),
      input.maxSends,
      input.minIntervalSeconds * 1000,
      input.smsMaxSends,
      input.smsWindowSeconds,
      input.lockout.threshold,
      input.lockout.maxConsecutiveFailures,
      input.challengeId,
      input.context,
      input.smsAllowed ? '1' : '0',
      input.phoneCountries.allowed,
      input.phoneCountries.blocked,
    ));
    return parseResendVerdict(roomy('resend', raw));
  }

  private verifyKeys(input: VerifyInput): string[] {
    return [
      RedisKeys.challenge(input.tag, input.nonce),
      RedisKeys.totp(input.tag),
      RedisKeys.totpSteps(input.tag),
      RedisKeys.failures(input.tag),
      RedisKeys.consecutiveFailures(input.tag),
      slotOutboxKey(input.slot),
      RedisKeys.remembered(input.tag),
      RedisKeys.lastMfa(input.tag),
      RedisKeys.blocked(input.tag),
      RedisKeys.user(input.tag),
    ];
  }

  private verifyArgs(input: VerifyInput): Array<string | number> {
    return [input.tenantId, input.now.getTime(), ...lockoutArgs(input.lockout), input.challengeId, input.context, input.remember?.id ?? '', input.remember?.until ?? 0];
  }

  async readChallenge(
    tag: string,
    nonce: string,
  ): Promise<
    { tenantId: string; status: string; reason: string; expiresAt: number; method: string; deliveryFailed: boolean; userMethods: string[]; phoneCountry: string } | undefined
  > {
    const raw = await reach('status', () =>
      (this.redis as unknown as { mfaChallengeStatus: ScriptFn }).mfaChallengeStatus(RedisKeys.challenge(tag, nonce), RedisKeys.user(tag)),
    );
    const [tenantId, status, reason, expiresAt, method, delivery, methods, phoneCountry] = raw;
    if (!tenantId || !status || !expiresAt) return undefined;
    return {
      tenantId,
      status,
      reason: reason ?? '',
      expiresAt: Number(expiresAt),
      method: method ?? '',
      deliveryFailed: delivery === 'failed',
      userMethods: methods ? methods.split(',').filter(Boolean) : [],
      phoneCountry: phoneCountry ?? '',
    };
  }
}
