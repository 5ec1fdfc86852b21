import { EventSubjects, unavailable, type DeviceReregisterRequest, type EventOf } from '@mfa/contracts';
import { open, SealContext, type Keyring } from '@mfa/crypto';
import { createEvent, PoisonMessageError, publishWithRetry, type Delivery, type EventPublisher } from '@mfa/messaging';
import { parseChallengeId } from '@mfa/projection';
import { carrierFromContext, type Logger } from '@mfa/telemetry';
import { CIRCUIT_OPEN, type ProviderBreakers } from '../adapters/circuit-breakers.js';
import type { Device, DeviceDirectory } from '../adapters/push/devices.js';
import { PushProviderError, type PushNotification, type PushProvider } from '../adapters/push/push-provider.js';
import type { ClaimState, SendClaim, SendGuard } from '../adapters/send-guard.js';
import { nextDeliveryStep, type DeliveryPolicy, type FailedAttempt } from '../domain/delivery-policy.js';
import { outcomeEnvelope } from '../domain/outcome-id.js';
import { DeliveryInterruptedError, pauseWorking } from './retry-pause.js';
import { pushProviderDuration, pushSends } from './metrics.js';
import { refuseDeletedTenant, TenantDeletedRefusal, type TenantsDeleted } from './tenant-deleted.js';

interface PushDeliveryOptions {
  keyring: Keyring;
  /** The configured providers; a platform none of them reaches is poll-only. */
  providers: readonly PushProvider[];
  attemptsPerProvider: number;
  retryBaseMs: number;
  publisher: EventPublisher;
  devices: Pick<DeviceDirectory, 'of'>;
  /** At most one push per request and device (adapters/send-guard.ts). */
  guard: Pick<SendGuard, 'claimPush' | 'recordedPushes' | 'pushSent' | 'releasePush' | 'undeliverable'>;
  /** A circuit breaker per provider: an open one is skipped at once. */
  breakers?: Pick<ProviderBreakers<PushNotification>, 'send'>;
  /** The deleted tenants: nothing is pushed for one (tenant-deleted.ts). */
  tenants: TenantsDeleted;
  /** Asks user-settings to mark a device whose token a provider refused (InternalSubjects.deviceReregister). */
  reregister: (request: DeviceReregisterRequest) => Promise<void>;
  /** How long a claim outlives one provider call at most (the provider's total timeout and a margin). */
  claimTtlMs: number;
  log: Logger;
  clock?: () => Date;
  random?: () => number;
}

type PushOutcome = EventOf<'PushSent' | 'PushDeliveryFailed'>;
type Sent = EventOf<'PushSent'>['data']['sent'][number];
type Failure = EventOf<'PushDeliveryFailed'>['data']['failures'][number];

/** How long a `sent` claim outlives the challenge's expiry (a late redelivery still finds it). */
const SENT_CLAIM_MARGIN_MS = 10 * 60_000;

export const EXPIRED_BEFORE_PUSH = 'challenge expired before delivery';
export const NO_ACTIVE_DEVICE = 'the user has no activated device';
export const DEVICE_NEEDS_REGISTRATION = 'the device must activate again: its push token was refused';
/** Why a device was not pushed to: the challenge is no longer in Redis (replaced or emptied since it started). */
export const CHALLENGE_GONE_PUSH = 'challenge no longer in Redis: nothing pushed';

/** A device not pushed to because Redis no longer holds the challenge: counted, and the failure it records. */
function challengeGone(): Omit<Failure, 'deviceId'> {
  pushSends.inc({ provider: 'none', outcome: 'challenge_gone' });
  return { provider: 'none', error: CHALLENGE_GONE_PUSH, transient: false };
}

/**
 * Delivers the push of one challenge: reads the user's devices, sends the notification (no secret
 * in it) to every active device a provider reaches, each with its own retries as the delivery
 * policy says, and publishes the outcome with an id derived from the request: PushSent when at
 * least one device was notified or polls (a device no provider reaches finds the sign-in by
 * polling the device API), PushDeliveryFailed otherwise, which also marks the challenge
 * undeliverable so that status says delivery_failed. A device whose token a provider refused is
 * reported to user-settings, which marks it for activation again.
 */
export class PushDeliveryService {
  private readonly byPlatform: Map<string, PushProvider[]>;
  private readonly clock: () => Date;
  private readonly random: () => number;

  constructor(private readonly options: PushDeliveryOptions) {
    this.byPlatform = new Map();
    for (const provider of options.providers) this.byPlatform.set(provider.platform, [...(this.byPlatform.get(provider.platform) ?? []), provider]);
    this.clock = options.clock ?? (() => new Date());
    this.random = options.random ?? Math.random;
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  /** The outcome recorded; undefined when nothing is pushed nor recorded (the tenant is deleted). */
  async deliver(request: Delivery, signal?: AbortSignal): Promise<PushOutcome | undefined> {
    const { event } = request;
    const log = this.options.log.child({ eventId: event.id, tenantId: event.tenantId, challengeId: event.aggregateId });
    try {
      return await this.pushAll(request, log, signal);
    } catch (error) {
      if (!(error instanceof TenantDeletedRefusal)) throw error;
      // Dropped: nothing more pushed, nothing recorded, the request acknowledged.
      pushSends.inc({ provider: 'none', outcome: 'tenant_deleted' });
      log.warn('push not sent: its tenant is deleted');
      return undefined;
    }
  }

  private async pushAll({ event, msg }: Delivery, log: Logger, signal: AbortSignal | undefined): Promise<PushOutcome> {
    if (event.type !== 'ChallengeStarted' || event.version !== 2) throw new PoisonMessageError(`expected ChallengeStarted v2, got ${event.type} v${event.version}`);
    if (event.data.delivery?.channel !== 'push') throw new PoisonMessageError('ChallengeStarted without a push delivery on the push subject');
    const { challengeId, userId } = event.data;
    const id = parseChallengeId(challengeId);
    if (!id) throw new PoisonMessageError('a push request for a malformed challenge id');
    await refuseDeletedTenant(this.options.tenants, event.tenantId);
    const expiresAt = new Date(event.data.expiresAt);

    if (this.clock() >= expiresAt) {
      // An earlier delivery may have pushed it before it expired (JetStream lost its ack): those
      // pushes are recorded again, not a failure (which would mark push failed for the user).
      const pushed = await this.pushedBefore(challengeId, id.tag);
      if (pushed.length > 0) return this.finish(event, msg, log, pushed, [], []);
      pushSends.inc({ provider: 'none', outcome: 'expired' });
      return this.finish(event, msg, log, [], [], [{ deviceId: 'none', provider: 'none', error: EXPIRED_BEFORE_PUSH, transient: false }]);
    }

    let found: Awaited<ReturnType<DeviceDirectory['of']>>;
    try {
      found = await this.options.devices.of(id.tag);
    } catch (error) {
      throw unavailable("the user's devices (Redis) could not be read; trying again later", error);
    }
    if (found.malformed.length > 0) log.error('devices that do not parse are skipped', { devices: found.malformed });

    const polling: string[] = [];
    const failures: Failure[] = [];
    const targets: Array<{ device: Device; token: string; providers: PushProvider[] }> = [];
    for (const device of found.devices) {
      if (device.state !== 'active') {
        pushSends.inc({ provider: 'none', outcome: 'skipped' });
        failures.push({ deviceId: device.deviceId, provider: 'none', error: DEVICE_NEEDS_REGISTRATION, transient: false });
        continue;
      }
      const providers = device.platform === 'none' ? [] : (this.byPlatform.get(device.platform) ?? []);
      if (providers.length === 0) {
        // Platform none, or no provider configured for it: the app finds the sign-in by polling.
        pushSends.inc({ provider: 'none', outcome: 'polling' });
        polling.push(device.deviceId);
        continue;
      }
      const token = this.openToken(event.tenantId, userId, device, log);
      if (token === undefined) {
        pushSends.inc({ provider: 'none', outcome: 'skipped' });
        failures.push({ deviceId: device.deviceId, provider: 'none', error: 'the push token does not open', transient: false });
        continue;
      }
      targets.push({ device, token, providers });
    }
    if (found.devices.length === 0) failures.push({ deviceId: 'none', provider: 'none', error: NO_ACTIVE_DEVICE, transient: false });

    const sent: Sent[] = [];
    const claims = await this.claim(challengeId, targets.map((t) => t.device.nonce));
    const busy = claims.some((c) => c.kind === 'in_progress');
    if (busy) {
      // Another delivery is pushing (or died doing it: its claims end by themselves): let go of ours and come back.
      await this.options.guard.releasePush(challengeId, targets.filter((_, i) => claims[i]!.kind === 'claimed').map((t) => t.device.nonce)).catch(() => undefined);
      throw unavailable('another delivery of this push request is under way; trying again later');
    }
    const toSend: typeof targets = [];
    // Redis lost the challenge (and any record of pushes to the devices not listed as sent): a
    // notification nobody could approve is not sent, and the method is not marked failed for the user.
    targets.forEach((target, i) => {
      const claim = claims[i]!;
      if (claim.kind === 'sent') {
        // Pushed already by an earlier delivery of this request (JetStream lost its ack): never twice.
        pushSends.inc({ provider: claim.provider, outcome: 'duplicate_suppressed' });
        sent.push({ deviceId: target.device.deviceId, provider: claim.provider, providerMessageId: claim.providerMessageId });
      } else if (claim.kind === 'gone') failures.push({ deviceId: target.device.deviceId, ...challengeGone() });
      else toSend.push(target);
    });
    if (claims.some((c) => c.kind === 'gone')) log.warn('push not sent: its challenge is no longer in Redis');

    if (toSend.length > 0) {
      const trace = carrierFromContext();
      const results = await Promise.allSettled(toSend.map((target) => this.push(target, { tenantId: event.tenantId, challengeId, expiresAt, trace }, msg, signal, log)));
      const invalid: Array<{ deviceId: string; provider: string; error: string }> = [];
      const interrupted = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      results.forEach((result, i) => {
        if (result.status !== 'fulfilled') return;
        const { deviceId } = toSend[i]!.device;
        if (result.value.ok) sent.push({ deviceId, ...result.value.sent });
        else {
          failures.push({ deviceId, ...result.value.failure });
          if (result.value.invalidToken) invalid.push({ deviceId, provider: result.value.failure.provider, error: result.value.failure.error });
        }
      });
      await this.reportInvalid(event.tenantId, userId, invalid, log);
      if (interrupted) throw interrupted.reason;
    }
    return this.finish(event, msg, log, sent, polling, failures);
  }

  /**
   * Walks the device's providers until one takes the notification, the policy gives up, or the
   * token is refused. Like an SMS, each attempt holds the device's claim only while it calls a
   * provider (the first one's was taken with the others): a back-off never outlives it.
   */
  private async push(
    target: { device: Device; token: string; providers: PushProvider[] },
    context: { tenantId: string; challengeId: string; expiresAt: Date; trace: PushNotification['trace'] },
    msg: Delivery['msg'],
    signal: AbortSignal | undefined,
    log: Logger,
  ): Promise<{ ok: true; sent: Omit<Sent, 'deviceId'> } | { ok: false; failure: Omit<Failure, 'deviceId'>; invalidToken: boolean }> {
    const { device, providers } = target;
    const policy: DeliveryPolicy = {
      providers: providers.map((p) => p.name),
      attemptsPerProvider: this.options.attemptsPerProvider,
      retryBaseMs: this.options.retryBaseMs,
      // No margin after a failure, unlike an SMS or a call: the notification only wakes the app,
      // which lists the sign-in over the device API whether or not it arrives, approving takes a
      // tap (and the two digits), and a late push costs no fee and rings nobody. Giving up early
      // would mark the push failed, and the device API then no longer lists the sign-in at all.
      minLifetimeAfterFailureMs: 0,
    };
    const history: FailedAttempt[] = [];
    const notification: PushNotification = { token: target.token, challengeId: context.challengeId, expiresAt: context.expiresAt, trace: context.trace };
    let holding = true;
    const release = async () => {
      if (!holding) return;
      holding = false;
      await this.options.guard.releasePush(context.challengeId, [device.nonce]).catch((error: unknown) => log.warn('could not release the push claim; it ends by itself', { error }));
    };
    for (;;) {
      const step = nextDeliveryStep(policy, history, { now: this.clock(), expiresAt: context.expiresAt, jitter: this.random() });
      if (step.type === 'GiveUp') {
        await release();
        const last = history.at(-1);
        if (step.reason === 'expired') pushSends.inc({ provider: 'none', outcome: 'expired' });
        const error = step.reason === 'expired' ? `challenge expired during delivery${last ? ` (last: ${last.error})` : ''}` : (last?.error ?? 'no provider');
        log.warn('push not delivered to a device', { deviceId: device.deviceId, attempts: history.length, error });
        return { ok: false, failure: { provider: last?.provider ?? 'none', error: error.slice(0, 300), transient: last?.transient ?? false }, invalidToken: false };
      }
      try {
        if (step.delayMs > 0) await pauseWorking(step.delayMs, msg, signal, 'a push');
        if (signal?.aborted) throw new DeliveryInterruptedError('stopping before the next push attempt');
        // Deleted since the request came, or while this device waited for its next attempt.
        await refuseDeletedTenant(this.options.tenants, context.tenantId);
      } catch (error) {
        // The request goes back to JetStream (the next delivery may push to this device), or is dropped (its tenant is deleted).
        await release();
        throw error;
      }
      if (!holding) {
        const [claim] = await this.claim(context.challengeId, [device.nonce]);
        if (claim!.kind === 'sent') {
          pushSends.inc({ provider: claim!.provider, outcome: 'duplicate_suppressed' });
          return { ok: true, sent: { provider: claim!.provider, providerMessageId: claim!.providerMessageId } };
        }
        if (claim!.kind === 'in_progress') throw unavailable('another delivery of this push request is under way; trying again later');
        if (claim!.kind === 'gone') return { ok: false, failure: challengeGone(), invalidToken: false };
        holding = true;
      }
      // Every attempt restarts the ack-wait clock (a provider's send ends within PUSH_TIMEOUT_MS, at most half of it).
      msg.working();
      const provider = providers.find((p) => p.name === step.provider)!;
      const started = process.hrtime.bigint();
      try {
        const { providerMessageId } = await (this.options.breakers ? this.options.breakers.send(provider, notification) : provider.send(notification));
        pushSends.inc({ provider: provider.name, outcome: 'sent' });
        holding = false;
        await this.options.guard
          .pushSent(context.challengeId, device.nonce, provider.name, providerMessageId, context.expiresAt.getTime() - this.clock().getTime() + SENT_CLAIM_MARGIN_MS)
          .catch((error: unknown) => log.warn('could not record that the push was sent; its claim ends by itself', { error }));
        return { ok: true, sent: { provider: provider.name, providerMessageId } };
      } catch (error) {
        const failure = toPushError(error, provider.name);
        const outcome = failure.invalidToken
          ? 'invalid_token'
          : failure.message === CIRCUIT_OPEN
            ? 'circuit_open'
            : failure.configuration
              ? 'config_error'
              : failure.transient
                ? 'transient_error'
                : 'permanent_error';
        pushSends.inc({ provider: provider.name, outcome });
        log.warn('push attempt failed', { deviceId: device.deviceId, provider: provider.name, attempt: step.attempt, transient: failure.transient, error: failure });
        await release();
        // Another provider would not know this token either: the app must register again.
        if (failure.invalidToken) return { ok: false, failure: { provider: provider.name, error: failure.message, transient: false }, invalidToken: true };
        history.push({ provider: provider.name, transient: failure.transient, error: failure.message, ...(failure.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}) });
      } finally {
        pushProviderDuration.observe({ provider: provider.name }, Number(process.hrtime.bigint() - started) / 1e9);
      }
    }
  }


  /**
   * Outcome, the challenge marked undeliverable when no device can answer (not when Redis no
   * longer holds the challenge: the loss was Redis's, not the method's), and the publish.
   */
  private async finish(event: EventOf<'ChallengeStarted'>, msg: Delivery['msg'], log: Logger, sent: Sent[], polling: string[], failures: Failure[]): Promise<PushOutcome> {
    const envelope = outcomeEnvelope(event, this.clock());
    const { challengeId } = event.data;
    let outcome: PushOutcome;
    if (sent.length > 0 || polling.length > 0) {
      outcome = createEvent('PushSent', 1, { ...envelope, data: { challengeId, sent, polling } });
      if (failures.length > 0) log.warn('push reached some of the devices', { sent: sent.length, polling: polling.length, failures });
      else log.info('push sent', { sent: sent.length, polling: polling.length });
    } else {
      outcome = createEvent('PushDeliveryFailed', 1, { ...envelope, data: { challengeId, failures } });
      log.warn('push not delivered', { failures });
      // The IdP polling status learns it, with the user's other methods; a new start takes one of them.
      if (!failures.some((f) => f.error === CHALLENGE_GONE_PUSH)) {
        await this.options.guard
          .undeliverable(challengeId, this.clock().getTime(), 'push')
          .catch((error: unknown) => log.warn('could not mark the push undelivered in Redis', { error }));
      }
    }
    const subject = outcome.type === 'PushSent' ? EventSubjects.pushSent : EventSubjects.pushFailed;
    try {
      // The notifications have gone: a failed publish now would mean a redelivery (which the claims make harmless), so try a few times first.
      await publishWithRetry(this.options.publisher, subject, outcome, { attempts: 3, delayMs: 250, beforeRetry: () => msg.working() });
    } catch (error) {
      log.error('publishing the push outcome failed; the request will be redelivered', { outcomeType: outcome.type, error });
      throw error;
    }
    return outcome;
  }

  /** The user's devices an earlier delivery of the request pushed to, as their claims say; one pushing now is waited for. */
  private async pushedBefore(challengeId: string, tag: string): Promise<Sent[]> {
    let devices: Device[];
    let claims: Array<ClaimState | undefined>;
    try {
      ({ devices } = await this.options.devices.of(tag));
      claims = await this.options.guard.recordedPushes(challengeId, devices.map((d) => d.nonce));
    } catch (error) {
      throw unavailable('the push send records (Redis) could not be read; trying again later', error);
    }
    if (claims.some((c) => c?.kind === 'in_progress')) throw unavailable('another delivery of this push request is under way; trying again later');
    return devices.flatMap((device, i) => {
      const claim = claims[i];
      if (claim?.kind !== 'sent') return [];
      pushSends.inc({ provider: claim.provider, outcome: 'duplicate_suppressed' });
      return [{ deviceId: device.deviceId, provider: claim.provider, providerMessageId: claim.providerMessageId }];
    });
  }

  private async claim(challengeId: string, deviceNonces: string[]): Promise<SendClaim[]> {
    try {
      return await this.options.guard.claimPush(challengeId, deviceNonces, this.options.claimTtlMs);
    } catch (error) {
      // Without the claims, a push could be a second one: wait for Redis (retried, never dead-lettered).
      throw unavailable('the push send guard (Redis) is unavailable; trying again later', error);
    }
  }

  /** The device's push token; undefined (the device skipped, the others still served) when it does not open. */
  private openToken(tenantId: string, userId: string, device: Device, log: Logger): string | undefined {
    if (!device.sealedPushToken) {
      log.error('an active device of a push platform has no push token', { deviceId: device.deviceId, platform: device.platform });
      return undefined;
    }
    try {
      return open(this.options.keyring, device.sealedPushToken, SealContext.pushToken(tenantId, userId, device.deviceId)).toString('utf8');
    } catch (error) {
      log.error("the device's sealed push token does not open", { deviceId: device.deviceId, error });
      return undefined;
    }
  }

  /** user-settings marks each device; a request that fails is logged (the next push finds the token refused again and asks again). */
  private async reportInvalid(tenantId: string, userId: string, devices: Array<{ deviceId: string; provider: string; error: string }>, log: Logger): Promise<void> {
    await Promise.all(
      devices.map((device) =>
        this.options.reregister({ tenantId, userId, ...device }).then(
          () => log.info('device marked for activation again: its push token was refused', { deviceId: device.deviceId, provider: device.provider }),
          (error: unknown) => log.warn('could not ask user-settings to mark the device for activation again', { deviceId: device.deviceId, error }),
        ),
      ),
    );
  }
}

function toPushError(error: unknown, provider: string): PushProviderError {
  if (error instanceof PushProviderError) return error;
  // A provider broke its contract: retrying the same bug will not help.
  return new PushProviderError(`${provider} failed unexpectedly: ${(error as Error)?.message ?? String(error)}`.slice(0, 300), { provider, transient: false, cause: error });
}
