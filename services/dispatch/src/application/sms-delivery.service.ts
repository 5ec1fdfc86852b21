import { EventSubjects, unavailable, type DispatchEvent, type EventOf } from '@mfa/contracts';
import { open, SealContext, type Keyring } from '@mfa/crypto';
import { createEvent, PoisonMessageError, publishWithRetry, type Delivery, type EventPublisher } from '@mfa/messaging';
import type { UserDataKeys } from '@mfa/service-kit';
import { carrierFromContext, type Logger } from '@mfa/telemetry';
import type { PhoneThrottle } from '../adapters/phone-throttle.js';
import { CIRCUIT_OPEN, type ProviderBreakers } from '../adapters/circuit-breakers.js';
import type { ClaimState, SendClaim, SendGuard } from '../adapters/send-guard.js';
import type { ReceiptRoutes } from '../adapters/receipt-routes.js';
import { hasSession, SmsProviderError, type SmsProvider } from '../adapters/sms/sms-provider.js';
import { nextDeliveryStep, type DeliveryPolicy, type FailedAttempt } from '../domain/delivery-policy.js';
import { outcomeEnvelope, type OutcomeCause } from '../domain/outcome-id.js';
import { phoneOfChallenge } from './recipient.js';
export { DataKeyUnavailableError } from './recipient.js';
export { DeliveryInterruptedError } from './retry-pause.js';
import { smsBody } from '../domain/sms-body.js';
import { smsMessageIdsReused, smsProviderDuration, smsSends } from './metrics.js';
import { DeliveryInterruptedError, pauseWorking } from './retry-pause.js';
import { refuseDeletedTenant, TenantDeletedRefusal, type TenantsDeleted } from './tenant-deleted.js';

interface SmsDeliveryOptions {
  keyring: Keyring;
  /** The users' data keys: the phone number of a v2 request is sealed under its user's. */
  keys: Pick<UserDataKeys, 'get'>;
  /** In failover order. */
  providers: readonly SmsProvider[];
  attemptsPerProvider: number;
  retryBaseMs: number;
  publisher: EventPublisher;
  /** At most one SMS per request (adapters/send-guard.ts). */
  guard: Pick<SendGuard, 'claim' | 'recorded' | 'sent' | 'release' | 'undeliverable'>;
  /** The public base URL of this service's webhooks (VOICE_WEBHOOK_BASE_URL): SMS receipts are asked for when set. */
  webhookBaseUrl?: string | undefined;
  /** A circuit breaker per provider (adapters/circuit-breakers.ts): an open one is skipped at once. */
  breakers?: Pick<ProviderBreakers, 'send'>;
  /** Where receipts that name only the provider's message id (SMPP) find their challenge. */
  receiptRoutes?: Pick<ReceiptRoutes, 'remember'>;
  /** Per-phone-number throttling across users (adapters/phone-throttle.ts). */
  phoneThrottle: Pick<PhoneThrottle, 'admit'>;
  /** The deleted tenants: nothing is sent for one (tenant-deleted.ts). */
  tenants: TenantsDeleted;
  /** How long a claim outlives one provider call at most (the provider's total timeout and a margin). */
  claimTtlMs: number;
  log: Logger;
  clock?: () => Date;
  random?: () => number;
}

/** How long a `sent` claim outlives the challenge's expiry (a late redelivery still finds it). */
const SENT_CLAIM_MARGIN_MS = 10 * 60_000;

/** Why an SMS of an erased user is not sent (in its SmsDeliveryFailed). */
export const USER_ERASED = 'user erased: the phone number can no longer be read';

/**
 * Why a code was not sent: its challenge is no longer in Redis (Redis replaced or emptied since it
 * started), so the code could not be verified, and an earlier send of it would not be known.
 */
export const CHALLENGE_GONE = 'challenge no longer in Redis: nothing sent';

/** Why a code was not sent: its challenge expired first (no provider was called). */
const EXPIRED_BEFORE_DELIVERY = 'challenge expired before delivery';

/**
 * The least of the challenge's lifetime an SMS sent after a failed attempt (a retry after a
 * back-off or a Retry-After, or the next provider) must leave to be used, the delivery policy's
 * minLifetimeAfterFailureMs: the network delivers it (usually a few seconds, 10 to 20 s on a busy
 * or roaming route), the user opens it, reads the code and types it into the sign-in page, which
 * then posts it. The first attempt is made whatever is left (a tenant may give challenges 30 s; a
 * start picked up late still gets its one try).
 */
export const MIN_LIFETIME_TO_USE_MS = 30_000;

/** Why an SMS was not sent again: too little of the challenge left to use it. */
export const TOO_LATE_TO_USE = `too little of the challenge's lifetime left to use a code sent again (under ${MIN_LIFETIME_TO_USE_MS / 1000} s)`;

/** Added to a failure whose SMS may have gone all the same (the provider got it whole and never answered). */
const MAYBE_SENT = 'the SMS may have been sent';

/** Why an SMS to a number that reached its limit across users is not sent (in its SmsDeliveryFailed). */
export const PHONE_THROTTLED = 'phone number throttled: too many codes sent to it across users';

/** Why a send refused by a limit across users did not happen (in its SmsDeliveryFailed or VoiceCallFailed). */
export function throttledReason(scope: 'number' | 'prefix' | 'prefix_global'): string {
  if (scope === 'number') return PHONE_THROTTLED;
  return `number range throttled: too many codes sent to numbers of this range${scope === 'prefix' ? ' for this tenant' : ' across tenants'} (SMS pumping defence)`;
}


/** One send of a challenge's code: the start's, or one of its resends (challenge.resend). */
export interface SmsSendJob {
  /** The challenge's start: the sealed code, the number, the language, the expiry. */
  started: EventOf<'ChallengeStarted'>;
  /** Where it is in MFA_CHALLENGES, kept with the send: a resend reads the code back from there. */
  startedSeq: number;
  /** The request this send answers (the start, or the resend's event): the outcome's id derives from it. */
  cause: OutcomeCause;
  /** The resend's number (from 1); absent for the start's send. */
  resend?: number | undefined;
  /** The providers to walk, in order: SMS_PROVIDERS', or a resend's rotation of them. */
  providers: readonly string[];
}

/**
 * Delivers the code of one SMS challenge: opens it, writes the message, walks the providers as
 * the delivery policy says, and publishes the outcome (SmsSent or SmsDeliveryFailed) with an id
 * derived from the request, so processing a redelivered request again cannot record two outcomes.
 * A resend (SmsResendService) is the same walk with its own claim, per-number admission and
 * outcome id, through its own order of providers.
 */

export class SmsDeliveryService {
  private readonly byName: Map<string, SmsProvider>;
  private readonly policy: DeliveryPolicy;
  private readonly clock: () => Date;
  private readonly random: () => number;

  constructor(private readonly options: SmsDeliveryOptions) {
    this.byName = new Map(options.providers.map((p) => [p.name, p]));
    this.policy = {
      providers: options.providers.map((p) => p.name),
      attemptsPerProvider: options.attemptsPerProvider,
      retryBaseMs: options.retryBaseMs,
      minLifetimeAfterFailureMs: MIN_LIFETIME_TO_USE_MS,
    };
    this.clock = options.clock ?? (() => new Date());
    this.random = options.random ?? Math.random;
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  /** The outcome recorded; undefined when nothing is sent nor recorded (the tenant is deleted). */
  async deliver({ event, msg }: Delivery, signal?: AbortSignal): Promise<DispatchEvent | undefined> {
    if (event.type !== 'ChallengeStarted') throw new PoisonMessageError(`expected ChallengeStarted, got ${event.type}`);
    return this.send({ started: event, startedSeq: msg.seq, cause: event, providers: this.policy.providers }, msg, signal);
  }

  /** The outcome recorded; undefined when nothing is sent nor recorded (the tenant is deleted). */
  async send(job: SmsSendJob, msg: Delivery['msg'], signal?: AbortSignal): Promise<DispatchEvent | undefined> {
    const { started: event, resend } = job;
    const log = this.options.log.child({ eventId: job.cause.id, tenantId: event.tenantId, challengeId: event.data.challengeId, ...(resend ? { resend } : {}) });
    try {
      return await this.walk(job, msg, log, signal);
    } catch (error) {
      if (!(error instanceof TenantDeletedRefusal)) throw error;
      this.refused(log);
      return undefined;
    }
  }

  /** A send of a deleted tenant's: dropped, counted and logged (ids only). */
  refused(log: Logger): void {
    smsSends.inc({ provider: 'none', outcome: 'tenant_deleted' });
    log.warn('SMS not sent: its tenant is deleted');
  }

  /** The send itself: the providers walked as the delivery policy says, and its outcome recorded. */
  private async walk(job: SmsSendJob, msg: Delivery['msg'], log: Logger, signal: AbortSignal | undefined): Promise<DispatchEvent> {
    const { started: event, resend } = job;
    const { challengeId } = event.data;
    const request = event.data.delivery;
    if (!request || request.channel !== 'sms') throw new PoisonMessageError('ChallengeStarted without an SMS delivery on the SMS subject');
    const policy = job.providers === this.policy.providers ? this.policy : { ...this.policy, providers: job.providers };
    await refuseDeletedTenant(this.options.tenants, event.tenantId);
    const expiresAt = new Date(event.data.expiresAt);
    const body = smsBody({
      code: this.openCode(event, request.sealedCode),
      // The minutes left from now, not from the start: a resend (or a start sent late) would
      // otherwise promise the code's whole lifetime.
      occurredAt: this.clock(),
      expiresAt,
      language: request.language,
    });
    const failures: FailedAttempt[] = [];
    let outcome: DispatchEvent | undefined;
    /** Looked up once, when there is something to send (an expired request needs no key). */
    let to: string | undefined;
    /** A provider got the SMS whole and never answered: it may have gone. */
    let maybeSent = false;
    while (!outcome) {
      const step = nextDeliveryStep(policy, failures, { now: this.clock(), expiresAt, jitter: this.random() });
      if (step.type === 'GiveUp') {
        if (step.reason !== 'providers_exhausted') {
          if (failures.length === 0) {
            // An earlier delivery may have sent it before it expired (JetStream lost its ack): that
            // send is recorded again, not a failure (which would mark the SMS failed for the user).
            const earlier = await this.guarded(this.options.guard.recorded(challengeId, resend));
            if (earlier?.kind === 'in_progress') throw unavailable('another delivery of this SMS request is under way; trying again later');
            if (earlier?.kind === 'sent') {
              outcome = this.sentBefore(job, earlier, log);
              break;
            }
          }
          const error = step.reason === 'too_late_after_failure' ? TOO_LATE_TO_USE : failures.length === 0 ? EXPIRED_BEFORE_DELIVERY : 'challenge expired during delivery';
          failures.push({ provider: 'none', error, transient: false });
          smsSends.inc({ provider: 'none', outcome: 'expired' });
        }
        const attempts = Math.max(1, failures.filter((f) => f.provider !== 'none').length);
        outcome = this.failed(job, { challengeId, attempts, failures: [...failures] });
        log.warn('SMS not delivered', { attempts, failures });
        // The IdP polling status learns it, with the user's other methods; a new start takes one of them.
        const now = this.clock().getTime();
        await this.options.guard
          .undeliverable(challengeId, now, 'sms', undefined, job.startedSeq)
          .catch((error: unknown) => log.warn('could not mark the SMS undelivered in Redis', { error }));
        break;
      }
      if (step.delayMs > 0) await pauseWorking(step.delayMs, msg, signal, 'an SMS');
      if (signal?.aborted) throw new DeliveryInterruptedError('stopping before the next SMS attempt');
      // Deleted while this send waited (a back-off, a Retry-After) or went to the next provider.
      await refuseDeletedTenant(this.options.tenants, event.tenantId);
      const recipient = to ?? (event.version === 1 ? event.data.delivery!.to : await phoneOfChallenge(this.options.keys, event));
      if (recipient === 'erased') {
        // Erased since the challenge started: nothing to send to, and nothing to retry.
        failures.push({ provider: 'none', error: USER_ERASED, transient: false });
        smsSends.inc({ provider: 'none', outcome: 'erased' });
        outcome = this.failed(job, { challengeId, attempts: 1, failures: [...failures] });
        log.warn('SMS not sent: the user was erased');
        break;
      }
      to = recipient;
      // Each send counts for the number once: the start's by the challenge id, a resend by its own.
      const admission = await this.admit(event.tenantId, to, resend ? `${challengeId}:r${resend}` : challengeId);
      if (!admission.admitted) {
        // The number took its share of sends across the tenant's users: nothing leaves; the IdP
        // learns it from status (delivery_failed, with the user's other methods).
        const retryInSeconds = Math.max(1, Math.ceil((admission.untilMs - this.clock().getTime()) / 1000));
        failures.push({ provider: 'none', error: `${throttledReason(admission.scope)} (for ${retryInSeconds} s)`, transient: false });
        smsSends.inc({ provider: 'none', outcome: admission.scope === 'number' ? 'phone_throttled' : 'prefix_throttled' });
        outcome = this.failed(job, { challengeId, attempts: 1, failures: [...failures] });
        log.warn('SMS not sent: a send limit across users was reached', { scope: admission.scope, retryInSeconds });
        const now = this.clock().getTime();
        await this.options.guard
          .undeliverable(challengeId, now, 'sms', admission.untilMs, job.startedSeq)
          .catch((error: unknown) => log.warn('could not mark the SMS undelivered in Redis', { error }));
        break;
      }
      const claim = await this.guarded(this.options.guard.claim(challengeId, this.options.claimTtlMs, resend));
      if (claim.kind === 'sent') {
        outcome = this.sentBefore(job, claim, log);
        break;
      }
      if (claim.kind === 'in_progress') {
        // Another delivery is calling a provider (or died doing it: its claim ends by itself).
        throw unavailable('another delivery of this SMS request is under way; trying again later');
      }
      if (claim.kind === 'gone') {
        // Redis lost the challenge (and with it any record of an earlier send): a code that can no
        // longer be verified is not sent, and a request delivered again after the loss sends nothing.
        failures.push({ provider: 'none', error: CHALLENGE_GONE, transient: false });
        smsSends.inc({ provider: 'none', outcome: 'challenge_gone' });
        outcome = this.failed(job, { challengeId, attempts: 1, failures: [...failures] });
        log.warn('SMS not sent: its challenge is no longer in Redis');
        break;
      }
      // Every attempt, the first too, restarts the ack-wait clock: the provider's total timeout
      // (TWILIO_TIMEOUT_MS, at most half the ack wait) then always ends before JetStream could
      // hand the message to another instance, which would send a second SMS.
      msg.working();

      const provider = this.byName.get(step.provider)!;
      const started = process.hrtime.bigint();
      try {
        const statusCallback = this.options.webhookBaseUrl
          ? `${this.options.webhookBaseUrl.replace(/\/+$/, '')}/sms/status/${encodeURIComponent(challengeId)}`
          : undefined;
        const message = { to, body, trace: carrierFromContext(), statusCallback, expiresAt };
        const { providerMessageId, unnamed } = await (this.options.breakers ? this.options.breakers.send(provider, message) : provider.send(message));
        smsSends.inc({ provider: provider.name, outcome: 'sent' });
        // An id made up here (the vendor named none) is routed nowhere: no receipt will name it.
        if (hasSession(provider) && this.options.receiptRoutes && !unnamed) {
          // Before anything else: the receipt may follow within milliseconds.
          await this.options.receiptRoutes
            .remember(provider.name, providerMessageId, { tenantId: event.tenantId, challengeId: event.data.challengeId }, this.clock().getTime())
            .then((remembered) => {
              if (!remembered.reused) return;
              smsMessageIdsReused.inc({ provider: provider.name });
              const held = remembered.held?.kind === 'route' ? { otherChallengeId: remembered.held.route.challengeId } : {};
              log.warn("the provider gave this SMS a message id an SMS of another challenge still has: receipts naming it are not recorded for either", {
                provider: provider.name,
                providerMessageId,
                ...held,
              });
            })
            .catch((error: unknown) => log.warn("could not record the SMS's message id; its receipt will not be matched", { error }));
        }
        await this.options.guard
          .sent(challengeId, provider.name, providerMessageId, expiresAt.getTime() - this.clock().getTime() + SENT_CLAIM_MARGIN_MS, { seq: job.startedSeq, resend })
          .catch((error: unknown) => log.warn('could not record that the SMS was sent; its claim ends by itself', { error }));
        const attempts = failures.length + 1;
        outcome = this.sent(job, { challengeId, provider: provider.name, providerMessageId, attempts });
        if (maybeSent) {
          // Delivery first: the copy carries the same code, so two SMS cost a fee and no confusion.
          log.warn('SMS sent after an attempt whose outcome is unknown: the user may get the code twice', { provider: provider.name, providerMessageId, attempts });
        } else {
          log.info('SMS sent', { provider: provider.name, providerMessageId, attempts, ...(unnamed ? { unnamed } : {}) });
        }
      } catch (error) {
        const failure = toProviderError(error, provider.name);
        smsSends.inc({
          provider: provider.name,
          outcome: failure.message === CIRCUIT_OPEN ? 'circuit_open' : failure.outcomeUnknown ? 'unanswered_error' : failure.transient ? 'transient_error' : 'permanent_error',
        });
        // A provider that got the SMS whole and never answered may have sent it; it is tried again
        // all the same (docs/operations.md: SMS providers), and the failure says so.
        if (failure.outcomeUnknown) maybeSent = true;
        const reason = failure.outcomeUnknown ? `${failure.message}: ${MAYBE_SENT}` : failure.message;
        failures.push({
          provider: provider.name,
          transient: failure.transient,
          error: reason,
          ...(failure.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}),
          // Skipped by its open circuit, not called: the next provider's send is still the first attempt.
          ...(failure.message === CIRCUIT_OPEN ? { skipped: true as const } : {}),
        });
        await this.options.guard
          .release(challengeId, resend)
          .catch((releaseError: unknown) => log.warn('could not release the SMS claim; it ends by itself', { error: releaseError }));
        log.warn('SMS attempt failed', { provider: provider.name, attempt: step.attempt, transient: failure.transient, error: failure });
      } finally {
        smsProviderDuration.observe({ provider: provider.name }, Number(process.hrtime.bigint() - started) / 1e9);
      }
    }
    await this.publish(outcome, msg, log);
    return outcome;
  }

  private async admit(tenantId: string, to: string, challengeId: string): ReturnType<PhoneThrottle['admit']> {
    try {
      return await this.options.phoneThrottle.admit(tenantId, to, challengeId, this.clock().getTime());
    } catch (error) {
      // Unthrottled sends are what the limit exists to prevent: wait for Redis (retried, never dead-lettered).
      throw unavailable('the per-phone throttle (Redis) is unavailable; trying again later', error);
    }
  }

  /** The send's claim, taken or read. */
  private async guarded<T extends SendClaim | undefined>(claim: Promise<T>): Promise<T> {
    try {
      return await claim;
    } catch (error) {
      // Without the claim, a send could be a second one, or one that went recorded as failed:
      // wait for Redis (retried, never dead-lettered).
      throw unavailable('the SMS send guard (Redis) is unavailable; trying again later', error);
    }
  }

  private openCode(event: EventOf<'ChallengeStarted'>, sealedCode: string): string {
    let code: string;
    try {
      code = open(this.options.keyring, sealedCode, SealContext.smsCode(event.tenantId, event.data.challengeId)).toString('utf8');
    } catch (cause) {
      throw new PoisonMessageError('the sealed SMS code does not open', { cause });
    }
    if (!/^\d{6}$/.test(code)) throw new PoisonMessageError('the sealed SMS code is not six digits');
    return code;
  }

  /**
   * Sent already by an earlier delivery of this request (JetStream lost its ack): never twice; its
   * outcome is recorded again (same id: stored once).
   */
  private sentBefore(job: Pick<SmsSendJob, 'cause' | 'resend'>, claim: Extract<ClaimState, { kind: 'sent' }>, log: Logger): EventOf<'SmsSent'> {
    smsSends.inc({ provider: claim.provider, outcome: 'duplicate_suppressed' });
    log.warn('SMS request delivered again after it was sent: not sent twice', { provider: claim.provider, providerMessageId: claim.providerMessageId });
    return this.sent(job, { challengeId: job.cause.data.challengeId, provider: claim.provider, providerMessageId: claim.providerMessageId, attempts: 1 });
  }

  private sent(job: Pick<SmsSendJob, 'cause' | 'resend'>, data: EventOf<'SmsSent'>['data']): EventOf<'SmsSent'> {
    return createEvent('SmsSent', 1, { ...outcomeEnvelope(job.cause, this.clock()), data: { ...data, ...(job.resend ? { resend: job.resend } : {}) } });
  }

  private failed(job: Pick<SmsSendJob, 'cause' | 'resend'>, data: EventOf<'SmsDeliveryFailed'>['data']): EventOf<'SmsDeliveryFailed'> {
    // The history keeps each Retry-After for the policy; the event keeps what the contract says.
    const failures = data.failures.map(({ provider, error, transient }) => ({ provider, error, transient }));
    return createEvent('SmsDeliveryFailed', 1, { ...outcomeEnvelope(job.cause, this.clock()), data: { ...data, failures, ...(job.resend ? { resend: job.resend } : {}) } });
  }

  /**
   * A resend whose code was never found before its challenge expired (the start's send still
   * unsettled): recorded as not sent, as a start that expired before delivery is.
   */
  async expiredBeforeResend(job: Pick<SmsSendJob, 'cause' | 'resend'>, msg: Delivery['msg']): Promise<DispatchEvent> {
    smsSends.inc({ provider: 'none', outcome: 'expired' });
    const outcome = this.failed(job, { challengeId: job.cause.data.challengeId, attempts: 1, failures: [{ provider: 'none', error: EXPIRED_BEFORE_DELIVERY, transient: false }] });
    await this.publish(outcome, msg, this.options.log.child({ eventId: job.cause.id, challengeId: job.cause.data.challengeId }));
    return outcome;
  }


  /**
   * The SMS has gone (or never will): a failed publish now would mean a redelivery and a second
   * SMS, so try a few times before giving the message back.
   */
  private async publish(outcome: DispatchEvent, msg: Delivery['msg'], log: Logger): Promise<void> {
    const subject = outcome.type === 'SmsSent' ? EventSubjects.smsSent : EventSubjects.smsFailed;
    try {
      await publishWithRetry(this.options.publisher, subject, outcome, { attempts: 3, delayMs: 250, beforeRetry: () => msg.working() });
    } catch (error) {
      log.error('publishing the SMS outcome failed; the request will be redelivered', { outcomeType: outcome.type, error });
      throw error;
    }
  }
}

function toProviderError(error: unknown, provider: string): SmsProviderError {
  if (error instanceof SmsProviderError) return error;
  // A provider broke its contract: retrying the same bug will not help, the next provider might.
  return new SmsProviderError(`${provider} failed unexpectedly: ${(error as Error)?.message ?? String(error)}`.slice(0, 300), {
    provider,
    transient: false,
    cause: error,
  });
}
