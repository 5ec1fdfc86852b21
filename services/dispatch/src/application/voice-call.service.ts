import twilio from 'twilio';
import {
  EventSubjects,
  InternalSubjects,
  unavailable,
  type EventOf,
  type FraudFromCallRequest,
  type PinVerifyReply,
  type PinVerifyRequest,
  type VoiceOutcomeReply,
  type VoiceOutcomeRequest,
} from '@mfa/contracts';
import { createEvent, isNoResponders, PoisonMessageError, publishWithRetry, type Delivery, type EventPublisher } from '@mfa/messaging';
import type { InternalRequests, UserDataKeys } from '@mfa/service-kit';
import { counter, type Logger } from '@mfa/telemetry';
import type { CallStore, CallState } from '../adapters/voice/call-store.js';
import type { PhoneThrottle } from '../adapters/phone-throttle.js';
import type { SendGuard } from '../adapters/send-guard.js';
import { SmsProviderError } from '../adapters/sms/sms-provider.js';
import type { TwilioVoiceProvider } from '../adapters/voice/twilio-voice.js';
import { callStep, MAX_PROMPTS, promptMessage, type CallSettings } from '../domain/call-flow.js';
import { nextDeliveryStep, type DeliveryPolicy, type FailedAttempt } from '../domain/delivery-policy.js';
import { outcomeEnvelope, outcomeEventId } from '../domain/outcome-id.js';
import { DeliveryInterruptedError, pauseWorking } from './retry-pause.js';
import { refuseDeletedTenant, TenantDeletedRefusal, type TenantsDeleted } from './tenant-deleted.js';
import { chooseVoiceMessage, voiceMessage, type VoiceMessageType } from '../domain/voice-messages.js';
import type { Recording } from '../adapters/voice/recording-store.js';
import type { VoiceRecordingsService } from './voice-recordings.service.js';
import { recipientOfChallenge } from './recipient.js';
import { throttledReason } from './sms-delivery.service.js';
import { signedByTwilio } from '../adapters/twilio-webhook-signature.js';

/**
 * Outcome `placed`, `approved`, `denied`, `fraud_reported`, `unanswered`, `not_placed`; `tenant_deleted`
 * (once per request): no call placed for a deleted tenant; `hung_up_tenant_deleted` (once per call,
 * at the prompt that hung up): a call placed before its tenant was deleted, hung up when answered or
 * at its next prompt; `hung_up_tenant_unchecked`: the same for a tenant that could not be checked.
 */
const calls = counter('mfa_voice_calls_total', 'Voice challenges by how their call went', ['outcome']);

/** How long a call's state outlives its challenge (late status callbacks still find it). */
const CALL_STATE_MARGIN_MS = 10 * 60_000;
/** Seconds the extension prompt waits for the call to be put through and # pressed. */
const EXTENSION_TIMEOUT_SECONDS = 15;
/** Seconds Twilio waits for keys at each prompt. */
const GATHER_TIMEOUT_SECONDS = 8;
/** Requests to the other services from a webhook: Twilio waits 15 s for TwiML. */
const INTERNAL_TIMEOUT_MS = 5_000;
/**
 * How long a webhook tries its requests to the other services (the PIN check and the call's
 * answer, or the fraud report), in all: Twilio waits 15 s for the webhook's answer.
 */
const WEBHOOK_PATIENCE_MS = 10_000;
/**
 * The least of the challenge's lifetime a call placed after a failed attempt must leave to be
 * answered, the delivery policy's minLifetimeAfterFailureMs: Twilio dials (a few seconds until it
 * rings), the user picks up after a ring or two and hears the greeting (about 6 s) before pressing
 * # (or a PIN), and dispatch asks auth-challenge. A call placed later (a Retry-After waited out)
 * rings for an answer the challenge can no longer take. The first attempt is made whatever is left
 * (a tenant may give challenges 30 s).
 */
const MIN_LIFETIME_TO_ANSWER_MS = 20_000;
/** Why a call is not placed again: too little of the challenge left to answer it. */
const TOO_LATE_TO_ANSWER = `too little of the challenge's lifetime left to answer a call placed again (under ${MIN_LIFETIME_TO_ANSWER_MS / 1000} s)`;
/** Why a call is not placed again after Twilio got its request and never answered. */
const PLACEMENT_UNKNOWN = 'Twilio may have placed the call: not placed again, so the phone cannot ring twice';

/** An error reply of another service to an internal request. */
class InternalRefusal extends Error {
  override name = 'InternalRefusal';
  constructor(
    subject: string,
    readonly code: string,
    message: string,
  ) {
    super(`${subject}: ${code}: ${message}`);
  }
}

export interface VoiceOptions {
  keys: Pick<UserDataKeys, 'get'>;
  /** undefined: voice is not configured (TWILIO_* or VOICE_WEBHOOK_BASE_URL missing): calls fail, the IdP falls back. */
  provider: { readonly name: string; placeCall: TwilioVoiceProvider['placeCall'] } | undefined;
  /** The public base URL Twilio reaches this service's webhooks on (VOICE_WEBHOOK_BASE_URL). */
  webhookBaseUrl: string | undefined;
  /** The Twilio auth token every webhook's X-Twilio-Signature is checked with. */
  authToken: string | undefined;
  ringSeconds: number;
  /** Attempts to place a call when Twilio refuses for now (429, 5xx) or cannot be reached (VOICE_CALL_ATTEMPTS). */
  attempts: number;
  /** First back-off between them (SMS_RETRY_BASE_MS), doubling. */
  retryBaseMs: number;
  publisher: EventPublisher;
  guard: Pick<SendGuard, 'claim' | 'recorded' | 'sent' | 'release' | 'undeliverable'>;
  phoneThrottle: Pick<PhoneThrottle, 'admit'>;
  /** The deleted tenants: no call is placed for one (tenant-deleted.ts), and a call placed before is hung up. */
  tenants: TenantsDeleted;
  calls: CallStore;
  /** The tenant's own recordings, played instead of our scripts where they exist. */
  recordings: Pick<VoiceRecordingsService, 'recorded' | 'playUrl'>;
  /** The services' signed requests: a PIN checked, the call's answer, a fraud report. */
  internal: InternalRequests;
  log: Logger;
  clock?: () => Date;
  random?: () => number;
}

export interface WebhookRequest {
  challengeId: string;
  /** The full URL Twilio requested (VOICE_WEBHOOK_BASE_URL and the path with its query), as it signed it. */
  url: string;
  signature: string | undefined;
  params: Record<string, string>;
  /** The prompt this answers (gather only). */
  prompt?: number;
  /** The extension prompt this answers (gather only, for a phone with an extension). */
  extensionPrompt?: number;
}

export type WebhookAnswer = { status: 200; twiml: string } | { status: 204 } | { status: 403 | 404; twiml: string };

/** Where a message goes: the response itself, or a `<Gather>` (which plays while it listens). */
interface Speaker {
  say(attributes: { language?: never }, text: string): unknown;
  play(attributes: object, url: string): unknown;
}

/**
 * The name of the answer at one prompt of a call (its CallSid; a challenge has one call): the same
 * for every delivery of the prompt's webhook, so auth-challenge records it once however often it
 * is sent.
 */
function answerIdOf(req: WebhookRequest, prompt: number): string {
  return `${(req.params.CallSid ?? '').slice(0, 64) || 'call'}:${prompt}`;
}

const HANG_UP = (() => {
  const response = new twilio.twiml.VoiceResponse();
  response.hangup();
  return response.toString();
})();

/**
 * Voice challenges: places the call (the same guards as an SMS: the per-number throttle, one call
 * per challenge whatever JetStream redelivers), then answers Twilio's webhooks: the TwiML of each
 * prompt, the keys the user pressed, the call's final status. Every webhook must carry a valid
 * X-Twilio-Signature (403 otherwise, nothing changed); each prompt's answer and the call's outcome
 * are recorded once, so a webhook delivered twice changes nothing twice.
 */
export class VoiceCallService {
  private readonly clock: () => Date;
  private readonly random: () => number;
  private readonly policy: DeliveryPolicy;
  /**
   * Whether the last auth-challenge to answer a call's answer named it (it records each once). An
   * answer without the id (an older auth-challenge: during a rolling upgrade, or after a rollback)
   * clears it again: the queue group may hand the next copy to such an instance.
   */
  private answersRecordedOnce = false;

  constructor(private readonly options: VoiceOptions) {
    this.clock = options.clock ?? (() => new Date());
    this.random = options.random ?? Math.random;
    this.policy = {
      providers: [options.provider?.name ?? 'twilio'],
      attemptsPerProvider: options.attempts,
      retryBaseMs: options.retryBaseMs,
      minLifetimeAfterFailureMs: MIN_LIFETIME_TO_ANSWER_MS,
    };
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  // ---- placing the call (the dispatch-voice consumer) --------------------------------------------

  async place(request: Delivery, signal?: AbortSignal): Promise<void> {
    const { event } = request;
    const log = this.options.log.child({ eventId: event.id, tenantId: event.tenantId, challengeId: event.aggregateId });
    try {
      await this.call(request, log, signal);
    } catch (error) {
      if (!(error instanceof TenantDeletedRefusal)) throw error;
      // Dropped: nothing placed, nothing recorded, the request acknowledged.
      calls.inc({ outcome: 'tenant_deleted' });
      log.warn('voice call not placed: its tenant is deleted');
    }
  }

  private async call({ event, msg }: Delivery, log: Logger, signal: AbortSignal | undefined): Promise<void> {
    if (event.type !== 'ChallengeStarted' || event.version !== 2) throw new PoisonMessageError(`expected ChallengeStarted v2, got ${event.type} v${event.version}`);
    const delivery = event.data.delivery;
    if (!delivery || delivery.channel !== 'voice') throw new PoisonMessageError('ChallengeStarted without a voice delivery on the voice subject');
    const { challengeId } = event.data;
    await refuseDeletedTenant(this.options.tenants, event.tenantId);
    const now = this.clock().getTime();
    const expiresAt = Date.parse(event.data.expiresAt);
    const fail = async (failures: FailedAttempt[]) => {
      calls.inc({ outcome: 'not_placed' });
      log.warn('voice call not placed', { failures });
      await this.markUnanswered(challengeId, this.clock().getTime());
      await this.publish(this.failed(event, failures), msg);
    };
    // Nothing was tried (api.md: provider "none").
    const notTried = (error: string) => fail([{ provider: 'none', error, transient: false }]);
    if (now >= expiresAt) {
      // An earlier delivery may have placed the call before it expired (JetStream lost its ack): that
      // call is recorded again, not a failure (which would mark voice failed for the user).
      const earlier = await this.options.guard.recorded(challengeId).catch((error: unknown) => {
        throw unavailable('the call guard (Redis) is unavailable; trying again later', error);
      });
      if (earlier?.kind === 'sent') return this.publish(this.placed(event, earlier.providerMessageId), msg);
      if (earlier?.kind === 'in_progress') throw unavailable('another delivery of this call request is under way; trying again later');
      return notTried('challenge expired before the call');
    }
    const { provider, webhookBaseUrl } = this.options;
    if (!provider || !webhookBaseUrl) return notTried('voice is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, VOICE_WEBHOOK_BASE_URL)');
    const recipient = await recipientOfChallenge(this.options.keys, event);
    if (recipient === 'erased') return notTried('user erased: the phone number can no longer be read');
    const { phone: to, extension } = recipient;
    const admission = await this.options.phoneThrottle.admit(event.tenantId, to, challengeId, now).catch((error: unknown) => {
      throw unavailable('the per-phone throttle (Redis) is unavailable; trying again later', error);
    });
    if (!admission.admitted) return notTried(`${throttledReason(admission.scope)} (for ${Math.ceil((admission.untilMs - now) / 1000)} s)`);
    const stateTtlMs = () => expiresAt - this.clock().getTime() + CALL_STATE_MARGIN_MS;
    // Attempts that Twilio refused for now (429, 5xx) or that never reached it: retried here, with
    // a back-off, VOICE_CALL_ATTEMPTS in all and never past the expiry, as an SMS is; then the
    // failure is recorded and the IdP falls back, instead of the request coming back until expiresAt.
    const failures: FailedAttempt[] = [];
    let created = false;
    for (;;) {
      // A call tried again (after a back-off, or Twilio's Retry-After) must leave the user time to
      // answer it (the policy's MIN_LIFETIME_TO_ANSWER_MS); the first attempt is made whatever is left.
      const step = nextDeliveryStep(this.policy, failures, { now: this.clock(), expiresAt: new Date(expiresAt), jitter: this.random() });
      if (step.type === 'GiveUp') {
        if (step.reason !== 'providers_exhausted') {
          // A challenge that expired during a slow failed attempt has less than the margin left
          // too: after a failure, the outcome names the margin either way.
          const error = step.reason === 'expired' && failures.length === 0 ? 'challenge expired before the call could be placed' : TOO_LATE_TO_ANSWER;
          failures.push({ provider: 'none', error, transient: false });
        }
        return fail(failures);
      }
      if (step.delayMs > 0) await pauseWorking(step.delayMs, msg, signal, 'a call');
      if (signal?.aborted) throw new DeliveryInterruptedError('stopping before the next call attempt');
      // Deleted while this call waited for its next attempt.
      await refuseDeletedTenant(this.options.tenants, event.tenantId);
      const claim = await this.options.guard.claim(challengeId, 30_000).catch((error: unknown) => {
        // Without the claim, a call could be a second one: wait for Redis (retried, never dead-lettered).
        throw unavailable('the call guard (Redis) is unavailable; trying again later', error);
      });
      if (claim.kind === 'sent') return this.publish(this.placed(event, claim.providerMessageId), msg);
      if (claim.kind === 'in_progress') throw unavailable('another delivery of this call request is under way; trying again later');
      if (claim.kind === 'gone') {
        // Redis lost the challenge (and any record of an earlier call): nobody could answer it.
        calls.inc({ outcome: 'not_placed' });
        log.warn('voice call not placed: its challenge is no longer in Redis');
        return this.publish(this.failed(event, [{ provider: 'none', error: 'challenge no longer in Redis: no call placed', transient: false }]), msg);
      }
      if (!created) {
        // A call placed by an earlier delivery whose record in the guard was lost (Redis failed then,
        // and the claim lapsed before this redelivery): the call's own record knows its sid, or that
        // Twilio never said whether it placed it.
        const earlier = await this.options.calls.read(challengeId).catch((error: unknown) => {
          throw unavailable('the call store (Redis) is unavailable; trying again later', error);
        });
        if (earlier?.callSid) {
          await this.options.guard.sent(challengeId, provider.name, earlier.callSid, stateTtlMs()).catch(() => undefined);
          return this.publish(this.placed(event, earlier.callSid), msg);
        }
        if (earlier?.placementUnknown) {
          await this.options.guard.release(challengeId).catch(() => undefined);
          return this.publish(this.failed(event, [{ provider: provider.name, error: PLACEMENT_UNKNOWN, transient: true }]), msg);
        }
      }
      msg.working();
      if (!created) {
        await this.options.calls.create(
          challengeId,
          { tenantId: event.tenantId, userId: event.data.userId, language: delivery.language, pinMode: delivery.pinMode, fraudCode: delivery.fraudCode, extension },
          stateTtlMs(),
        );
        created = true;
      }
      const base = webhookBaseUrl.replace(/\/+$/, '');
      const path = encodeURIComponent(challengeId);
      let callSid: string;
      try {
        ({ callSid } = await provider.placeCall({
          to,
          from: delivery.callerId,
          url: `${base}/voice/twiml/${path}`,
          statusCallback: `${base}/voice/status/${path}`,
          ringSeconds: this.options.ringSeconds,
          // An office phone's extension: two seconds for the switchboard to answer, then its digits.
          ...(extension ? { sendDigits: `wwww${extension}` } : {}),
        }));
      } catch (error) {
        const failure = error instanceof SmsProviderError ? error : new SmsProviderError(`${provider.name} failed unexpectedly: ${(error as Error)?.message ?? String(error)}`.slice(0, 300), { provider: provider.name, transient: false, cause: error });
        if (failure.outcomeUnknown) {
          // Twilio got the request and never answered: the phone may be ringing, and Twilio takes
          // no idempotency key, so another attempt could ring it twice. Not tried again; the IdP
          // falls back, and a call that does ring can still be answered (its webhooks know it).
          await this.options.calls
            .placementUnknown(challengeId, stateTtlMs())
            .then(() => this.options.guard.release(challengeId))
            .catch((recordError: unknown) => log.warn('could not record the call as maybe placed; its claim ends by itself', { error: recordError }));
          failures.push({ provider: provider.name, error: `${failure.message}: ${PLACEMENT_UNKNOWN}`, transient: true });
          return fail(failures);
        }
        await this.options.guard.release(challengeId).catch(() => undefined);
        failures.push({ provider: provider.name, error: failure.message, transient: failure.transient, ...(failure.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}) });
        log.warn('call attempt failed', { attempt: step.attempt, transient: failure.transient, error: failure });
        continue;
      }
      // The phone rings: from here on nothing releases the claim or records a failure, whatever else
      // fails, or a redelivery would call again. What Redis does not record here, the first webhook
      // (the call's sid) or the claim's own end covers; the event's publish is retried by
      // redelivery, which finds the claim `sent` and publishes the same call again.
      await this.options.calls.setCallSid(challengeId, callSid).catch((error: unknown) => log.warn("could not record the call's sid; its first webhook records it", { error }));
      await this.options.guard
        .sent(challengeId, provider.name, callSid, stateTtlMs())
        .catch((error: unknown) => log.warn('could not record that the call was placed; its claim ends by itself', { error }));
      calls.inc({ outcome: 'placed' });
      log.info('voice call placed', { callSid, attempts: failures.length + 1 });
      return this.publish(this.placed(event, callSid, failures.length + 1), msg);
    }
  }

  // ---- the webhooks ------------------------------------------------------------------------------

  /**
   * The call of a known challenge, from Twilio, for this call (its CallSid, once known), of a tenant
   * not deleted. A call of a deleted tenant (placed just before tenants.delete, answered after) is
   * hung up at its prompts (`webhook: 'prompt'`: nothing of the tenant is played, not even its
   * recordings, which are being deleted, and nothing is decided nor sent to auth-challenge), and
   * its final status records nothing (`'status'`; recorded when the tenant cannot be checked). The tenant is asked at each webhook: it may be
   * deleted while the call rings or between prompts.
   */
  private async callOf(req: WebhookRequest, webhook: 'prompt' | 'status'): Promise<{ state: CallState } | { refused: WebhookAnswer }> {
    if (!signedByTwilio(this.options.authToken, req)) return { refused: { status: 403, twiml: HANG_UP } };
    const state = await this.options.calls.read(req.challengeId);
    if (!state) return { refused: { status: 404, twiml: HANG_UP } };
    const sid = req.params.CallSid;
    if (state.callSid !== undefined && sid !== state.callSid) return { refused: { status: 404, twiml: HANG_UP } };
    const log = this.options.log.child({ tenantId: state.tenantId, challengeId: req.challengeId });
    // A tenant that cannot be checked (its memory not current and the log unreadable) counts as
    // deleted: a webhook cannot leave the check for later as a send request does (Twilio waits 15 s
    // for its answer), and a call hung up by mistake costs the user a sign-in started again, while
    // one played would speak for a tenant after its deletion.
    let deleted: boolean | 'unchecked';
    try {
      deleted = await this.options.tenants.isDeleted(state.tenantId);
    } catch (error) {
      log.warn('whether the tenant of the call is deleted could not be read (MFA_USER_SETTINGS): taken as deleted', { error });
      deleted = 'unchecked';
    }
    // The final status of a call whose tenant could not be checked is recorded still: it only says
    // the call ended without an answer, which lets the IdP fall back at once (a live tenant's
    // sign-in would otherwise wait for the challenge to expire), and decides nothing.
    if (webhook === 'status') {
      if (deleted === true) return { refused: { status: 204 } };
    } else if (deleted !== false) {
      calls.inc({ outcome: deleted === true ? 'hung_up_tenant_deleted' : 'hung_up_tenant_unchecked' });
      if (deleted === true) log.warn('voice call hung up: its tenant is deleted');
      return { refused: { status: 200, twiml: HANG_UP } };
    }
    if (state.callSid === undefined && sid) await this.options.calls.setCallSid(req.challengeId, sid);
    return { state };
  }

  /** The call was answered: the greeting, in a prompt for keys. */
  async twiml(req: WebhookRequest): Promise<WebhookAnswer> {
    const call = await this.callOf(req, 'prompt');
    if ('refused' in call) return call.refused;
    if (call.state.outcome) return { status: 200, twiml: await this.say(call.state, 'authenticationDenied') };
    // An office phone: whoever answers is asked to put the call through to the extension first.
    if (call.state.extension) return { status: 200, twiml: await this.extensionPrompt(req, call.state, 1) };
    return { status: 200, twiml: await this.prompt(req, call.state, 1) };
  }

  /** The keys pressed at one prompt: decided once per call and prompt. */
  async gather(req: WebhookRequest): Promise<WebhookAnswer> {
    const call = await this.callOf(req, 'prompt');
    if ('refused' in call) return call.refused;
    const { state } = call;
    if (state.outcome) return { status: 200, twiml: await this.ending(state, state.outcome) };
    if (req.extensionPrompt !== undefined) return this.atExtension(req, state, req.extensionPrompt);
    const prompt = req.prompt ?? 1;
    // The prompt is answered once (below): this webhook is the only chance of what the user
    // pressed, so the other services are waited for, within Twilio's patience, if they blip.
    const until = Date.now() + WEBHOOK_PATIENCE_MS;
    const settings: CallSettings = { pinMode: state.pinMode, fraudCode: state.fraudCode };
    const step = callStep(settings, { digits: req.params.Digits ?? '', finishedOnKey: req.params.FinishedOnKey ?? '', prompt });
    // A prompt is answered once: a webhook delivered again changes nothing and hears where the call is.
    if (!(await this.options.calls.answerOnce(req.challengeId, prompt, step.kind))) {
      const now = await this.options.calls.read(req.challengeId);
      if (now?.outcome) return { status: 200, twiml: await this.ending(state, now.outcome) };
      if (prompt >= MAX_PROMPTS) return { status: 200, twiml: await this.say(state, 'authenticationDenied') };
      return { status: 200, twiml: await this.prompt(req, state, prompt + 1, step.kind === 'check_pin' ? 'authenticationDeniedRetry' : undefined) };
    }
    switch (step.kind) {
      case 'approve':
        return { status: 200, twiml: await this.answer(req, state, true, prompt, until) };
      case 'check_pin': {
        // Checking a PIN changes nothing: tried again after any failure that may pass.
        const request = { tenantId: state.tenantId, userId: state.userId, pin: step.pin } satisfies PinVerifyRequest;
        const pin = await this.internalRetried<PinVerifyReply>(InternalSubjects.pinVerify, request, { until, repeat: 'idempotent' });
        return { status: 200, twiml: await this.answer(req, state, pin.valid, prompt, until) };
      }
      case 'fraud': {
        // A fraud service that restarts, or a moment without JetStream, is waited out; a report
        // sent again is harmless (fraud records it once per challenge).
        const request = { tenantId: state.tenantId, userId: state.userId, challengeId: req.challengeId } satisfies FraudFromCallRequest;
        await this.internalRetried(InternalSubjects.fraudFromCall, request, { until, repeat: 'idempotent' });
        await this.options.calls.finish(req.challengeId, 'fraud');
        calls.inc({ outcome: 'fraud_reported' });
        return { status: 200, twiml: await this.say(state, 'fraudConfirmation') };
      }
      case 'prompt_again':
        return { status: 200, twiml: await this.prompt(req, state, step.prompt) };
      case 'give_up':
        await this.unanswered(req.challengeId, state, 'no keys pressed at any prompt');
        return { status: 200, twiml: await this.say(state, 'authenticationDenied') };
    }
  }

  /** The answer to an extension prompt: # means the user is at the extension, then the greeting. */
  private async atExtension(req: WebhookRequest, state: CallState, prompt: number): Promise<WebhookAnswer> {
    // Nothing is decided here (a webhook delivered again gets the same TwiML): only giving up is recorded, once.
    if (req.params.FinishedOnKey === '#') return { status: 200, twiml: await this.prompt(req, state, 1) };
    if (prompt < MAX_PROMPTS) return { status: 200, twiml: await this.extensionPrompt(req, state, prompt + 1) };
    await this.unanswered(req.challengeId, state, 'nobody at the extension');
    return { status: 200, twiml: await this.say(state, 'authenticationDenied') };
  }

  /** The call's final status: a call that ended without an answer lets the IdP fall back. */
  async status(req: WebhookRequest): Promise<WebhookAnswer> {
    const call = await this.callOf(req, 'status');
    if ('refused' in call) return call.refused;
    const status = req.params.CallStatus ?? '';
    if (!call.state.outcome && ['busy', 'no-answer', 'failed', 'canceled', 'completed'].includes(status)) {
      await this.unanswered(req.challengeId, call.state, status === 'completed' ? 'hung up before answering' : status);
    }
    return { status: 204 };
  }

  /** # or a PIN: the challenge's outcome from auth-challenge, and what the caller hears. */
  private async answer(req: WebhookRequest, state: CallState, approved: boolean, prompt: number, until: number): Promise<string> {
    // A wrong PIN counts against the challenge's attempts (and the user's lockout) each time it is
    // recorded, and an approval recorded twice meets its own `conflict`. So the answer is named, the
    // same for this call and prompt whichever instance or webhook delivery sends it, and
    // auth-challenge records it once per name: the same name again gets the reply it got (approved
    // stays approved). Sent again after any failure that may pass, once an auth-challenge has shown
    // it records answers once (its reply names the answer); until then (an older auth-challenge
    // during a rolling upgrade counts each copy) only when it certainly recorded nothing.
    const request = { tenantId: state.tenantId, challengeId: req.challengeId, approved, answerId: answerIdOf(req, prompt) } satisfies VoiceOutcomeRequest;
    const reply = await this.internalRetried<VoiceOutcomeReply>(InternalSubjects.voiceOutcome, request, {
      until,
      repeat: this.answersRecordedOnce ? 'recorded_once' : 'unchanged_only',
    });
    this.answersRecordedOnce = reply.answerId === request.answerId;
    if (reply.status === 'approved') {
      await this.options.calls.finish(req.challengeId, 'approved');
      calls.inc({ outcome: 'approved' });
      return await this.say(state, 'authenticationSuccessful');
    }
    if (reply.status === 'pending' && prompt < MAX_PROMPTS) {
      // A wrong PIN with attempts left: denied, then asked again.
      return await this.prompt(req, state, prompt + 1, 'authenticationDeniedRetry');
    }
    if (reply.status === 'pending') {
      // The last prompt's PIN was wrong too, with attempts left: the call ends, but the challenge
      // would wait until it expires. Like a call nobody answered, it is undeliverable: the IdP
      // falls back at once.
      await this.unanswered(req.challengeId, state, 'no right PIN at any prompt');
      return await this.say(state, 'authenticationDenied');
    }
    await this.options.calls.finish(req.challengeId, 'denied');
    calls.inc({ outcome: 'denied' });
    return await this.say(state, 'authenticationDenied');
  }

  private async unanswered(challengeId: string, state: CallState, why: string): Promise<void> {
    if (!(await this.options.calls.finish(challengeId, 'unanswered'))) return;
    calls.inc({ outcome: 'unanswered' });
    const now = this.clock().getTime();
    await this.markUnanswered(challengeId, now);
    const event = createEvent('VoiceCallFailed', 1, {
      id: outcomeEventId(`${challengeId}:voice-unanswered`),
      tenantId: state.tenantId,
      aggregateId: challengeId,
      now: new Date(now),
      data: { challengeId, attempts: 1, failures: [{ provider: this.options.provider?.name ?? 'twilio', error: why, transient: false }] },
    });
    await publishWithRetry(this.options.publisher, EventSubjects.voiceFailed, event, { attempts: 3, delayMs: 250 });
  }

  private async markUnanswered(challengeId: string, now: number): Promise<void> {
    await this.options.guard.undeliverable(challengeId, now, 'voice').catch((error: unknown) => this.options.log.warn('could not mark the call unanswered in Redis', { error }));
  }

  /**
   * internal(), tried again until `until` (leaving time to answer Twilio, which waits 15 s for a
   * webhook's answer). An `idempotent` request is tried again on any failure that may pass (no
   * answer, `unavailable`, `conflict` of a concurrent change, `internal`); one `recorded_once` (its
   * receiver records it once and answers a copy as it answered the first) on the same, but a
   * `conflict`, which is its final word; another one only when it certainly changed nothing:
   * nobody received it (no responders), or the service answered `unavailable` (it could not
   * decide). A request that got no answer may have been carried out.
   * Each attempt is signed anew: a receiver refuses a signature it has seen (internal-replays.ts).
   */
  private async internalRetried<T>(subject: string, body: unknown, { until, repeat }: { until: number; repeat: 'idempotent' | 'recorded_once' | 'unchanged_only' }): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.internal<T>(subject, body, Math.max(500, Math.min(INTERNAL_TIMEOUT_MS, until - Date.now())));
      } catch (error) {
        const code = error instanceof InternalRefusal ? error.code : undefined;
        const mayPass =
          repeat === 'unchanged_only'
            ? code === 'unavailable' || isNoResponders(error)
            : code === undefined || ['unavailable', 'internal', ...(repeat === 'idempotent' ? ['conflict'] : [])].includes(code);
        const pause = Math.min(2_000, 200 * 2 ** (attempt - 1));
        if (!mayPass || Date.now() + pause >= until) throw error;
        this.options.log.warn('an internal request failed; trying again', { subject, attempt, error });
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  private async internal<T>(subject: string, body: unknown, timeoutMs = INTERNAL_TIMEOUT_MS): Promise<T> {
    const reply = await this.options.internal.request<T & { error?: { code: string; message: string } }>(subject, body, { timeoutMs });
    if (reply.error) throw new InternalRefusal(subject, reply.error.code, reply.error.message);
    return reply;
  }

  // ---- TwiML ----------------------------------------------------------------------------------

  private async prompt(req: WebhookRequest, state: CallState, prompt: number, before?: VoiceMessageType): Promise<string> {
    const response = new twilio.twiml.VoiceResponse();
    const settings: CallSettings = { pinMode: state.pinMode, fraudCode: state.fraudCode };
    if (before) await this.speak(response, state, before);
    const base = (this.options.webhookBaseUrl ?? '').replace(/\/+$/, '');
    const gather = response.gather({
      input: ['dtmf'],
      finishOnKey: '#',
      timeout: GATHER_TIMEOUT_SECONDS,
      actionOnEmptyResult: true,
      method: 'POST',
      action: `${base}/voice/gather/${encodeURIComponent(req.challengeId)}?prompt=${prompt}`,
    });
    await this.speak(gather, state, promptMessage(settings, prompt));
    return response.toString();
  }

  /** "Please transfer this call to the extension 1 2 3 4. If already at this extension, press the pound key to continue." */
  private async extensionPrompt(req: WebhookRequest, state: CallState, prompt: number): Promise<string> {
    const response = new twilio.twiml.VoiceResponse();
    const base = (this.options.webhookBaseUrl ?? '').replace(/\/+$/, '');
    const gather = response.gather({
      input: ['dtmf'],
      finishOnKey: '#',
      timeout: EXTENSION_TIMEOUT_SECONDS,
      actionOnEmptyResult: true,
      method: 'POST',
      action: `${base}/voice/gather/${encodeURIComponent(req.challengeId)}?ext=${prompt}`,
    });
    // The digits are always spoken (a recording cannot know them).
    await this.speak(gather, state, 'extensionPromptBeforeDigits', `${[...(state.extension ?? '')].join(' ')}.`);
    await this.speak(gather, state, 'extensionPromptAfterDigits');
    return response.toString();
  }

  private async say(state: CallState, type: VoiceMessageType): Promise<string> {
    const response = new twilio.twiml.VoiceResponse();
    await this.speak(response, state, type);
    response.hangup();
    return response.toString();
  }

  /**
   * One message into the TwiML: the tenant's recording (`<Play>` of a signed URL) or our script
   * (`<Say>`), as chooseVoiceMessage decides; `spokenAfter` is said after it (in the same `<Say>` as
   * our script). A recording store that cannot be reached leaves our script: the call goes on.
   */
  private async speak(into: Speaker, state: CallState, type: VoiceMessageType, spokenAfter?: string): Promise<void> {
    const recordings = new Map<string, Recording>();
    const recorded = async (language: string) => {
      const recording = await this.options.recordings.recorded(state.tenantId, type, language).catch((error: unknown) => {
        this.options.log.warn('the recording store is unavailable; speaking the default message', { error });
        return undefined;
      });
      if (recording) recordings.set(language, recording);
      return recording !== undefined;
    };
    const choice = await chooseVoiceMessage(type, state.language, state.fraudCode, recorded);
    if (choice.kind === 'say') {
      into.say({ language: choice.language as never }, spokenAfter ? `${choice.text} ${spokenAfter}` : choice.text);
      return;
    }
    into.play({}, this.options.recordings.playUrl(state.tenantId, type, choice.language, recordings.get(choice.language)!));
    if (spokenAfter) into.say({ language: voiceMessage(type, state.language, state.fraudCode).language as never }, spokenAfter);
  }

  private async ending(state: CallState, outcome: string): Promise<string> {
    return this.say(state, outcome === 'approved' ? 'authenticationSuccessful' : outcome === 'fraud' ? 'fraudConfirmation' : 'authenticationDenied');
  }

  // ---- events ------------------------------------------------------------------------------------

  private placed(source: EventOf<'ChallengeStarted'>, callSid: string, attempts = 1): EventOf<'VoiceCallPlaced'> {
    return createEvent('VoiceCallPlaced', 1, {
      ...outcomeEnvelope(source, this.clock()),
      data: { challengeId: source.data.challengeId, provider: this.options.provider?.name ?? 'twilio', providerCallId: callSid, attempts },
    });
  }

  private failed(source: EventOf<'ChallengeStarted'>, failures: readonly FailedAttempt[]): EventOf<'VoiceCallFailed'> {
    const attempts = Math.max(1, failures.filter((f) => f.provider !== 'none').length);
    return createEvent('VoiceCallFailed', 1, {
      ...outcomeEnvelope(source, this.clock()),
      data: { challengeId: source.data.challengeId, attempts, failures: failures.map(({ provider, error, transient }) => ({ provider, error, transient })) },
    });
  }


  private async publish(event: EventOf<'VoiceCallPlaced' | 'VoiceCallFailed'>, msg: Delivery['msg']): Promise<void> {
    const subject = event.type === 'VoiceCallPlaced' ? EventSubjects.voicePlaced : EventSubjects.voiceFailed;
    await publishWithRetry(this.options.publisher, subject, event, { attempts: 3, delayMs: 250, beforeRetry: () => msg.working() });
  }
}
