import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import {
  ChallengeStartRequest,
  ChallengeStatusRequest,
  ChallengeVerifyRequest,
  EventSubjects,
  notFound,
  Subjects,
  unavailable,
  type ChallengeStartReply,
  type ChallengeVerifyReply,
} from '@mfa/contracts';
import { hashCode, projectionUserKey, randomDigits, randomToken, seal, SealContext, userTag, type Keyring } from '@mfa/crypto';
import { createEvent, EventPublisher, RequestRouter, type RequestContext } from '@mfa/messaging';
import { challengeId as formatChallengeId, parseChallengeId } from '@mfa/projection';
import { LOGGER } from '@mfa/service-kit';
import { counter, type Logger } from '@mfa/telemetry';
import { ChallengeStore } from '../adapters/challenge.store.js';
import { TenantSettingsCache } from '../adapters/tenant-settings.cache.js';
import { decideStart, decideStatus, decideVerify, type PendingEvent } from '../domain/verdicts.js';
import { AUTH_CONFIG, KEYRING, SERVER_IDENTITY } from '../tokens.js';
import type { AuthChallengeConfig } from '../config.js';

const SMS_CODE_DIGITS = 6;
const outcomes = counter('mfa_challenge_outcomes_total', 'Challenge decisions by kind and method', ['kind', 'method']);

const subjectOf = (event: PendingEvent): string => {
  switch (event.type) {
    case 'ChallengeStarted':
      return EventSubjects.challengeStarted(event.data.method);
    case 'ChallengeRegistrationRequired':
      return EventSubjects.challengeRegistrationRequired;
    case 'ChallengeApproved':
      return EventSubjects.challengeApproved;
    case 'ChallengeCodeRejected':
      return EventSubjects.challengeCodeRejected;
    case 'ChallengeAttemptsExhausted':
      return EventSubjects.challengeAttemptsExhausted;
    case 'ChallengeExpired':
      return EventSubjects.challengeExpired;
  }
};

/**
 * challenge.start / verify / status. Each request costs one Redis round trip (a script, or an
 * HMGET for status) and, when something happened, one JetStream publish awaited for its ack.
 */
@Injectable()
export class ChallengeHandlers implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(
    private readonly router: RequestRouter,
    private readonly publisher: EventPublisher,
    private readonly store: ChallengeStore,
    private readonly tenants: TenantSettingsCache,
    @Inject(KEYRING) private readonly keyring: Keyring,
    @Inject(AUTH_CONFIG) private readonly config: AuthChallengeConfig,
    @Inject(SERVER_IDENTITY) private readonly server: { name: string; ip: string },
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  onApplicationBootstrap(): void {
    this.router.handle(Subjects.challengeStart, ChallengeStartRequest, (req, ctx) => this.start(req, ctx));
    this.router.handle(Subjects.challengeVerify, ChallengeVerifyRequest, (req, ctx) => this.verify(req, ctx));
    this.router.handle(Subjects.challengeStatus, ChallengeStatusRequest, (req, ctx) => this.status(req, ctx));
  }

  async onModuleDestroy(): Promise<void> {
    await this.router.stop();
  }

  async start(req: ChallengeStartRequest, ctx: RequestContext): Promise<ChallengeStartReply> {
    const settings = this.tenants.get(req.tenantId);
    const tag = userTag(this.keyring, req.tenantId, req.userId);
    const nonce = randomToken(16);
    const challengeId = formatChallengeId(tag, nonce);
    const code = randomDigits(SMS_CODE_DIGITS);
    const now = ctx.receivedAt;
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
      codeHash: hashCode(this.keyring, challengeId, code),
      ttlSeconds: settings.codeLifetimeSeconds + this.config.CHALLENGE_RETENTION_SECONDS,
      smsMaxSends: this.config.SMS_MAX_SENDS_PER_WINDOW,
      smsWindowSeconds: this.config.SMS_SEND_WINDOW_SECONDS,
      tenantKnown: this.tenants.has(req.tenantId),
      lockoutThreshold: this.config.MFA_LOCKOUT_THRESHOLD,
    });
    const outcome = decideStart(verdict, {
      challengeId,
      userId: req.userId,
      expiresAt,
      maxAttempts: settings.maxAttempts,
      server: this.server,
      clientIp: req.clientIp,
      application: req.application,
      requestId: req.requestId,
      sealedSmsCode: () => seal(this.keyring, Buffer.from(code, 'utf8'), SealContext.smsCode(req.tenantId, challengeId)),
    });
    outcomes.inc({ kind: outcome.reply.status, method: outcome.reply.method ?? 'none' });
    if (outcome.event) await this.record(req.tenantId, challengeId, now, outcome.event);
    return outcome.reply;
  }

  async verify(req: ChallengeVerifyRequest, ctx: RequestContext): Promise<ChallengeVerifyReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const verdict = await this.store.verifyChallenge({
      tag: id.tag,
      nonce: id.nonce,
      tenantId: req.tenantId,
      now: ctx.receivedAt,
      codeHash: hashCode(this.keyring, req.challengeId, req.code),
      code: req.code,
      projectionKey: projectionUserKey(this.keyring, id.tag),
      lockoutThreshold: this.config.MFA_LOCKOUT_THRESHOLD,
      lockoutWindowSeconds: this.config.MFA_LOCKOUT_COUNTER_RESET_SECONDS,
      lockoutSeconds: this.config.MFA_LOCKOUT_SECONDS,
    });
    const outcome = decideVerify(verdict, { challengeId: req.challengeId, server: this.server });
    outcomes.inc({ kind: verdict.kind, method: 'method' in verdict ? verdict.method : 'none' });
    if (outcome.event) await this.record(req.tenantId, req.challengeId, ctx.receivedAt, outcome.event);
    return outcome.reply;
  }

  async status(req: ChallengeStatusRequest, ctx: RequestContext): Promise<ChallengeVerifyReply> {
    const id = parseChallengeId(req.challengeId);
    if (!id) throw notFound('unknown challenge');
    const record = await this.store.readChallenge(id.tag, id.nonce);
    if (!record || record.tenantId !== req.tenantId) throw notFound('unknown challenge');
    return decideStatus(req.challengeId, record, ctx.receivedAt);
  }

  /** Appends the event; the same envelope is retried once (Nats-Msg-Id de-duplicates it). */
  private async record(tenantId: string, challengeId: string, now: Date, pending: PendingEvent): Promise<void> {
    const event = createEvent(pending.type, 1, { tenantId, aggregateId: challengeId, now, data: pending.data as never });
    const subject = subjectOf(pending);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.publisher.publish(subject, event);
        return;
      } catch (error) {
        if (attempt >= 2) {
          this.log.error('could not record challenge event', { eventType: event.type, challengeId, error });
          throw unavailable('event log unavailable; try again', error);
        }
      }
    }
  }
}
