import { Inject, Injectable, Optional } from '@nestjs/common';
import {
  notFound,
  unavailable,
  type ChallengeStartReply,
  type ChallengeStartRequest,
  type ChallengeStatusRequest,
  type ChallengeVerifyReply,
  type ChallengeVerifyRequest,
} from '@mfa/contracts';
import {
  hashCode,
  parseWrappedDataKey,
  projectionUserKey,
  seal,
  SealContext,
  SealError,
  unmaskSecret,
  unwrapDataKey,
  userTag,
  type DataKey,
  type Keyring,
} from '@mfa/crypto';
import { createEvent, EventPublisher, publishWithRetry } from '@mfa/messaging';
import { challengeId as formatChallengeId, parseChallengeId } from '@mfa/projection';
import { LOGGER, sealPersonalData } from '@mfa/service-kit';
import { counter, type Logger } from '@mfa/telemetry';
import { ChallengeStore, type LockoutPolicy } from '../adapters/challenge.store.js';
import { TenantSettingsCache } from '../adapters/tenant-settings.cache.js';
import type { AuthChallengeConfig } from '../config.js';
import { matchTotpCode, type TotpMatch } from '../domain/totp-match.js';
import { decideStart, decideStatus, decideVerify, subjectOf, type MaskedTotpToken, type PendingEvent, type VerifyVerdict } from '../domain/verdicts.js';
import { CODE_GENERATOR, CONFIG, PROJECTION_SIGNAL, SERVER_IDENTITY } from '../tokens.js';
import type { CodeGenerator } from './code-generator.js';

const outcomes = counter('mfa_challenge_outcomes_total', 'Challenge decisions by kind and method', ['kind', 'method']);

/** Unwrapped data keys kept for repeat sign-ins (an unwrap costs about as much as the sealing itself). */
const DATA_KEY_CACHE_SIZE = 10_000;
const DATA_KEY_CACHE_MS = 5 * 60_000;

/** Where a decision was taken, for the report (server name and IP). */
interface ServerIdentity {
  name: string;
  ip: string;
}

/**
 * The challenge use cases. Each request costs one Redis round trip (a script, or an HMGET for
 * status; two scripts for a TOTP verify) and, when something happened, one JetStream publish
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
  private readonly lockout: LockoutPolicy;

  constructor(
    private readonly store: ChallengeStore,
    private readonly tenants: TenantSettingsCache,
    private readonly publisher: EventPublisher,
    @Inject(CODE_GENERATOR) private readonly codes: CodeGenerator,
    @Inject(CONFIG) private readonly config: AuthChallengeConfig,
    @Inject(SERVER_IDENTITY) private readonly server: ServerIdentity,
    @Inject(LOGGER) private readonly log: Logger,
    /** Asks user-settings to project a user missing from an incomplete projection first. */
    @Optional() @Inject(PROJECTION_SIGNAL) private readonly projectionMissing?: (tenantId: string, userId: string) => void,
  ) {
    this.keyring = config.keyring;
    this.lockout = {
      threshold: config.MFA_LOCKOUT_THRESHOLD,
      windowSeconds: config.MFA_LOCKOUT_COUNTER_RESET_SECONDS,
      lockoutSeconds: config.MFA_LOCKOUT_SECONDS,
      maxConsecutiveFailures: config.MFA_MAX_CONSECUTIVE_FAILURES,
    };
  }

  async start(req: ChallengeStartRequest, now: Date): Promise<ChallengeStartReply> {
    // Never the defaults in place of a tenant's own settings: not before they are all loaded, and a
    // tenant not in memory yet (created a moment ago elsewhere) is read from the log first.
    if (!this.tenants.ready) throw unavailable('starting up: tenant settings are still loading; try again');
    if (!this.tenants.has(req.tenantId)) await this.tenants.lookup(req.tenantId);
    const settings = this.tenants.get(req.tenantId);
    const tag = userTag(this.keyring, req.tenantId, req.userId);
    const nonce = this.codes.challengeNonce();
    const challengeId = formatChallengeId(tag, nonce);
    // A code is drawn only if the challenge may become an SMS one: the script never picks another
    // method than the one requested.
    const code = req.method === undefined || req.method === 'sms' ? this.codes.smsCode() : undefined;
    const expiresAt = new Date(now.getTime() + settings.codeLifetimeSeconds * 1000);
    const verdict = await this.store.startChallenge({
      tag,
      nonce,
      tenantId: req.tenantId,
      userId: req.userId,
      requestedMethod: req.method,
      enabledMethods: settings.enabledMethods,
      now,
      expiresAt,
      maxAttempts: settings.maxAttempts,
      codeHash: code === undefined ? undefined : hashCode(this.keyring, challengeId, code),
      ttlSeconds: settings.codeLifetimeSeconds + this.config.CHALLENGE_RETENTION_SECONDS,
      smsMaxSends: this.config.SMS_MAX_SENDS_PER_WINDOW,
      smsWindowSeconds: this.config.SMS_SEND_WINDOW_SECONDS,
      tenantKnown: this.tenants.has(req.tenantId),
      lockout: this.lockout,
    });
    if (verdict.kind === 'projection_missing') this.projectionMissing?.(req.tenantId, req.userId);
    const outcome = decideStart(verdict, {
      challengeId,
      userId: req.userId,
      expiresAt,
      maxAttempts: settings.maxAttempts,
      server: this.server,
      clientIp: req.clientIp,
      application: req.application,
      requestId: req.requestId,
      sealedSmsCode: () => {
        if (code === undefined) throw new Error(`an SMS challenge was started for a ${String(req.method)} request`);
        return seal(this.keyring, Buffer.from(code, 'utf8'), SealContext.smsCode(req.tenantId, challengeId));
      },
      sealedPersonalData: (profile, dataKey) => this.sealPersonalData(req.tenantId, req.userId, profile, dataKey),
    });
    outcomes.inc({ kind: outcome.reply.status, method: outcome.reply.method ?? 'none' });
    if (outcome.event) await this.record(req.tenantId, challengeId, now, outcome.event);
    return outcome.reply;
  }

  async verify(req: ChallengeVerifyRequest, now: Date): Promise<ChallengeVerifyReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const where = { tag: id.tag, nonce: id.nonce, tenantId: req.tenantId, now, lockout: this.lockout };
    const check = await this.store.checkCode({ ...where, codeHash: hashCode(this.keyring, req.challengeId, req.code) });
    let verdict: VerifyVerdict;
    if (check.kind === 'totp_check') {
      const match = this.matchTotp(id.tag, check.tokens, req.code, now);
      verdict = await this.store.recordTotpCheck({ ...where, match });
      // The step goes into ChallengeApproved: a rebuild of Redis restores the replay guard from it.
      if (verdict.kind === 'approved' && match.matched) verdict = { ...verdict, step: match.step };
    } else {
      verdict = check;
    }
    const outcome = decideVerify(verdict, { challengeId: req.challengeId, server: this.server });
    outcomes.inc({ kind: verdict.kind, method: 'method' in verdict ? verdict.method : 'none' });
    if (outcome.event) await this.record(req.tenantId, req.challengeId, now, outcome.event);
    return outcome.reply;
  }

  /** Unmasks the user's TOTP secrets only for the comparison, then zeroes them. */
  private matchTotp(tag: string, masked: readonly MaskedTotpToken[], code: string, now: Date): TotpMatch {
    const userKey = projectionUserKey(this.keyring, tag);
    const tokens = masked.map(({ nonce, masked: secret, ...token }) => ({ ...token, secret: unmaskSecret(userKey, nonce, secret) }));
    try {
      return matchTotpCode(tokens, code, now.getTime());
    } finally {
      userKey.fill(0);
      for (const token of tokens) token.secret.fill(0);
    }
  }

  async status(req: ChallengeStatusRequest, now: Date): Promise<ChallengeVerifyReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const record = await this.store.readChallenge(id.tag, id.nonce);
    if (!record || record.tenantId !== req.tenantId) throw notFound('unknown challenge');
    return decideStatus(req.challengeId, record, now);
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

  /** Appends the decision's event; the same envelope is tried twice (Nats-Msg-Id de-duplicates it). */
  private async record(tenantId: string, challengeId: string, now: Date, pending: PendingEvent): Promise<void> {
    const version = 'version' in pending ? pending.version : 1;
    const event = createEvent(pending.type, version, { tenantId, aggregateId: challengeId, now, data: pending.data as never });
    try {
      await publishWithRetry(this.publisher, subjectOf(pending), event, { attempts: 2 });
    } catch (error) {
      this.log.error('could not record challenge event', { eventType: event.type, challengeId, error });
      throw unavailable('event log unavailable; try again', error);
    }
  }
}
