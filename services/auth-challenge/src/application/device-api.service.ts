import { createHash, type KeyObject } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';
import {
  ContractError,
  DeviceActivateBody,
  DeviceAnswerBody,
  DeviceSigned,
  describeIssues,
  InternalSubjects,
  type DeviceActivateReply,
  type FraudFromAppRequest,
} from '@mfa/contracts';
import { devicePublicKey, deviceSignatureValid, type DeviceAlgorithm } from '@mfa/crypto';
import type { InternalRequests } from '@mfa/service-kit';
import { isUserTag, parseChallengeId, parseDeviceId, projectedDeviceId, RedisKeys, type ProjectedDevice } from '@mfa/projection';
import { counter, type Logger } from '@mfa/telemetry';
import { PENDING_PUSH_SCRIPT } from '../adapters/scripts.js';
import { PushDeviceRemoved } from '../adapters/challenge.store.js';
import { DEFAULT_SOURCE_FAILURE_LIMITS, SourceFailures, type SourceFailureLimits } from '../adapters/source-failures.js';
import type { ChallengeService } from './challenge.service.js';

const requests = counter('mfa_device_api_requests_total', 'Device API requests by route and outcome', ['route', 'outcome']);

/** How far a device's clock may be from ours (docs/device-api.md). */
export const DEVICE_CLOCK_SKEW_MS = 60_000;
/**
 * How long a nonce is remembered: the whole window a timestamp is accepted in (the skew either
 * way), plus a margin for the time between the timestamp's check and the nonce's write and for
 * the clocks of other instances and of Redis, so that a replay is always seen.
 */
const NONCE_TTL_MS = 2 * DEVICE_CLOCK_SKEW_MS + 30_000;
const INTERNAL_TIMEOUT_MS = 5_000;

/** A device API error: the HTTP status and the contract's error body (and Retry-After, for a source over its limit). */
export class DeviceApiError extends Error {
  override name = 'DeviceApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** The refusals of an activation that count against its source: a request that is not one, a code that is not one. */
const FAILED_ACTIVATION = new Set(['invalid_request', 'not_found']);

export const NOT_ACTIVATED = 'Authentication request is not for an activated account';

/**
 * A fraud report's use of the device (DeviceApiService.fraud), once fraud answered it. KEYS: the
 * user's devices (user-settings' projection), the devices' last use (one slot). ARGV: the device
 * nonce (its field in both, also for an app activated under an earlier master key), the time (ms).
 * Written only while the device is still the user's, as pushAnswerScript writes an answer's: an
 * app deleted while fraud handled its report (the projection write that dropped it took its field
 * too) is not written back. Returns 1 when written, 0 when the device is gone.
 */
const FRAUD_USE_SCRIPT = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
`;

/** A device request while Redis is being rebuilt (its device not projected yet): asked again after this. */
const REBUILDING_RETRY_AFTER_SECONDS = 5;

export interface SignedRequest {
  method: string;
  /** The path with its query, as the device sent it. */
  path: string;
  body: Buffer;
  headers: Record<string, string | undefined>;
  /** The client's address (sourceAddress): its failures are counted; undefined counts nothing. */
  source?: string | undefined;
}

interface Device {
  tag: string;
  nonce: string;
  deviceId: string;
  device: ProjectedDevice;
  key: KeyObject;
}

/**
 * The device API (docs/device-api.md): activation (handed to user-settings, which owns devices),
 * and the signed requests of activated devices: the push waiting for the user, and its answer.
 * Every signed request is checked before anything else is read: the device is activated (its key
 * is in the user's slot, projected by user-settings), the timestamp is within a minute, the nonce
 * is new (SET NX, two minutes), and the signature covers method, path, time, nonce and body.
 * Failures are counted by source address (SourceFailures): until the window of a source that failed
 * too often lately ends, its activations are refused 429 before user-settings is asked, and its
 * signed requests that fail answer 429; those a device signed are served (authenticate).
 */
export class DeviceApiService {
  /** Public keys parsed once (a device's key never changes: a new one is a new device). */
  private readonly keys = new Map<string, KeyObject>();
  private geo: Promise<{ lookup(ip: string): { country: string; name: string } | null }> | undefined;
  /** PENDING_PUSH_SCRIPT: the challenge, the user's block, the user's projection. */
  private readonly pendingPush: (challenge: string, blocked: string, user: string) => Promise<Array<string | null>>;
  /** FRAUD_USE_SCRIPT: the user's devices, their last use; the device nonce, the time. */
  private readonly fraudUse: (devices: string, used: string, nonce: string, at: string) => Promise<number>;
  private readonly sources: SourceFailures;
  private lastCountWarning = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly internal: InternalRequests,
    private readonly challenges: Pick<ChallengeService, 'pushAnswer'>,
    private readonly log: Pick<Logger, 'warn'>,
    private readonly clock: () => Date = () => new Date(),
    failureLimits: SourceFailureLimits = DEFAULT_SOURCE_FAILURE_LIMITS,
  ) {
    this.sources = new SourceFailures(redis, failureLimits);
    redis.defineCommand('mfaDevicePendingPush', { numberOfKeys: 3, lua: PENDING_PUSH_SCRIPT });
    redis.defineCommand('mfaDeviceFraudUse', { numberOfKeys: 2, lua: FRAUD_USE_SCRIPT });
    const r = redis as unknown as {
      mfaDevicePendingPush: (...keys: string[]) => Promise<Array<string | null>>;
      mfaDeviceFraudUse: (...args: string[]) => Promise<number>;
    };
    this.pendingPush = r.mfaDevicePendingPush.bind(redis);
    this.fraudUse = r.mfaDeviceFraudUse.bind(redis);
  }

  /**
   * An activation: `body` is the request's JSON, or its raw bytes (the HTTP route's, read here so
   * that a body that is not JSON counts against its source as any other failed activation does).
   * A source over its limit of failures is refused before anything is read or asked.
   */
  async activate(body: unknown, source?: string): Promise<DeviceActivateReply> {
    await this.admit(source);
    try {
      let json = body;
      if (Buffer.isBuffer(body)) {
        try {
          json = JSON.parse(body.toString('utf8'));
        } catch {
          throw new DeviceApiError(400, 'invalid_request', 'the body is not JSON');
        }
      }
      const parsed = DeviceActivateBody.safeParse(json);
      if (!parsed.success) throw new DeviceApiError(400, 'invalid_request', describeIssues(parsed.error.issues));
      const reply = await this.internal.request<DeviceActivateReply & { error?: { code: string; message: string } }>(InternalSubjects.deviceActivate, parsed.data, { timeoutMs: INTERNAL_TIMEOUT_MS }).catch((error: unknown) => {
        this.unreached(InternalSubjects.deviceActivate, error);
        throw new DeviceApiError(503, 'unavailable', 'activation is not available right now; try again');
      });
      if (reply.error) throw new DeviceApiError(statusOf(reply.error.code), reply.error.code, reply.error.message);
      requests.inc({ route: 'activate', outcome: 'ok' });
      return reply;
    } catch (error) {
      // A bad request or an unknown code: what a flood of guesses is made of. Not a user with five
      // apps already, nor a service that could not answer: neither is the caller's failure.
      if (error instanceof DeviceApiError && FAILED_ACTIVATION.has(error.code)) await this.countFailure(source);
      throw error;
    }
  }

  /** The push waiting for the device's user, with what the app shows; null when none is. */
  async pending(request: SignedRequest): Promise<{ challenge: PendingView | null }> {
    const device = await this.authenticate(request);
    const pending = await this.redis.get(RedisKeys.pendingPush(device.tag));
    const challengeId = pending?.split('|')[0];
    const id = challengeId ? parseChallengeId(challengeId) : undefined;
    if (!challengeId || !id || id.tag !== device.tag) return { challenge: null };
    // The push with what decides whether the user can still approve it, in one read (one slot).
    const [tenantId, status, method, expiresAt, createdAt, ip, app, numberHash, unapprovable] = await this.pendingPush(
      RedisKeys.challenge(id.tag, id.nonce),
      RedisKeys.blocked(device.tag),
      RedisKeys.user(device.tag),
    );
    if (!tenantId || status !== 'pending' || method !== 'push' || Number(expiresAt) <= this.clock().getTime()) return { challenge: null };
    // A push its user can no longer approve is not shown: the user blocked since its start, or
    // reset or erased since (its answer would be denied user_blocked or method_not_registered, as
    // verify's checks() decide, by the same VOIDED rule: PENDING_PUSH_SCRIPT). It stays pending until
    // answered or expired; an unblock before then shows it again, as it could then still be approved.
    if (unapprovable === '1') {
      requests.inc({ route: 'pending', outcome: 'hidden' });
      return { challenge: null };
    }
    requests.inc({ route: 'pending', outcome: 'ok' });
    return {
      challenge: {
        challengeId,
        application: app || null,
        clientIp: ip || null,
        location: ip ? await this.locate(ip) : null,
        startedAt: new Date(Number(createdAt)).toISOString(),
        expiresAt: new Date(Number(expiresAt)).toISOString(),
        // false for a sign-in without a page to show the number (RADIUS): approve without one.
        numberMatch: Boolean(numberHash),
      },
    };
  }

  /** The user's answer, signed twice: the request, and the answer itself (checked, not kept). */
  async answer(request: SignedRequest, challengeId: string): Promise<{ status: 'approved' } | { status: 'denied'; reason: string }> {
    const device = await this.authenticate(request);
    let body: unknown;
    try {
      body = JSON.parse(request.body.toString('utf8'));
    } catch {
      throw new DeviceApiError(400, 'invalid_request', 'the body is not JSON');
    }
    const parsed = DeviceAnswerBody.safeParse(body);
    if (!parsed.success) throw new DeviceApiError(400, 'invalid_request', describeIssues(parsed.error.issues));
    const answer = parsed.data;
    if (!deviceSignatureValid(device.device.algorithm, device.key, DeviceSigned.answer(challengeId, answer.decision, answer.number), answer.signature)) {
      requests.inc({ route: 'answer', outcome: 'bad_signature' });
      await this.countFailure(request.source);
      throw new DeviceApiError(401, 'unauthenticated', 'signature: not the device key’s signature over this answer');
    }
    // Only a challenge of the device's own user: same slot tag, and its record names a push.
    const id = parseChallengeId(challengeId);
    if (!id || id.tag !== device.tag) throw new DeviceApiError(404, 'not_found', 'unknown challenge');
    const [tenantId, userId, method] = await this.redis.hmget(RedisKeys.challenge(id.tag, id.nonce), 'tenantId', 'userId', 'method');
    // An SMS, call or TOTP challenge of the same user is no push: the app neither sees nor decides it.
    if (!tenantId || !userId || method !== 'push') throw new DeviceApiError(404, 'not_found', 'unknown challenge');
    if (answer.decision === 'fraud') {
      // A report from the app answers a push, as approve and deny do. Whether it is still waiting
      // is fraud's to say, atomically with the denial: one already decided or expired is refused
      // (409) before anyone is blocked, and a report sent again (its answer lost) is answered as
      // the first was.
      return this.fraud(device, { tenantId, userId, challengeId, deviceId: device.deviceId });
    }
    try {
      const { verdict, reply } = await this.challenges.pushAnswer(
        { tenantId, challengeId, deviceId: device.deviceId, deviceNonce: device.nonce, decision: answer.decision, number: answer.number },
        this.clock(),
      );
      requests.inc({ route: 'answer', outcome: verdict.kind });
      if (reply.status === 'approved') return { status: 'approved' };
      if (verdict.kind === 'expired') throw new DeviceApiError(409, 'conflict', 'the sign-in expired before the answer');
      // Push allows one attempt: a wrong number ends it.
      if (verdict.kind === 'exhausted' && verdict.cause === 'mismatch') return { status: 'denied', reason: 'wrong_number' };
      if (reply.status === 'denied') return { status: 'denied', reason: reply.reason ?? 'denied' };
      throw new DeviceApiError(409, 'conflict', 'the challenge is not waiting for an answer');
    } catch (error) {
      // The app was deleted after its request was admitted: its answer decided nothing (the push
      // still waits for the user's other apps, or its expiry), as the next request of a deleted app
      // is refused. Not counted against the source: the device signed it, and the same request a
      // moment earlier would have been served.
      if (error instanceof PushDeviceRemoved) {
        requests.inc({ route: 'answer', outcome: 'not_activated' });
        throw new DeviceApiError(403, 'not_activated', NOT_ACTIVATED);
      }
      if (error instanceof ContractError) throw new DeviceApiError(statusOf(error.code), error.code, error.message);
      throw error;
    }
  }

  /** The user did not start this sign-in: the fraud service denies it, blocks and mails as the tenant says. */
  private async fraud(device: Device, target: FraudFromAppRequest): Promise<{ status: 'denied'; reason: string }> {
    const reply = await this.internal.request<{ error?: { code: string; message: string } }>(InternalSubjects.fraudFromApp, target, { timeoutMs: INTERNAL_TIMEOUT_MS }).catch((error: unknown) => {
      this.unreached(InternalSubjects.fraudFromApp, error);
      throw new DeviceApiError(503, 'unavailable', 'the fraud report could not be recorded; try again');
    });
    if (reply.error) throw new DeviceApiError(statusOf(reply.error.code), reply.error.code, reply.error.message);
    // fraud's denial cleared the pending push (ChallengeDenial): a new push may start (if the user is not blocked).
    // The report stands (fraud acted on it); the device's use is recorded only while the user still
    // has it: one deleted while fraud handled the report is not written back (FRAUD_USE_SCRIPT).
    await this.fraudUse(RedisKeys.devices(device.tag), RedisKeys.devicesUsed(device.tag), device.nonce, String(this.clock().getTime()));
    requests.inc({ route: 'answer', outcome: 'fraud' });
    return { status: 'denied', reason: 'fraud_reported' };
  }

  /**
   * Why an internal request got no reply (nobody serving it, a timeout, NATS closed): the device
   * is answered 503 and retries; the operator needs the cause. The error's name, code and cause's
   * name only (a RequestError names NoResponders as its cause): a message may quote the request or
   * the reply, and an activation's request carries the activation code.
   */
  private unreached(subject: string, error: unknown): void {
    const { name, code, cause } = (error ?? {}) as { name?: unknown; code?: unknown; cause?: { name?: unknown } };
    this.log.warn('device API: an internal request failed; the device was answered 503', {
      subject,
      error: {
        name: typeof name === 'string' ? name : typeof error,
        ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
        ...(typeof cause?.name === 'string' ? { cause: cause.name } : {}),
      },
    });
    requests.inc({ route: subject === InternalSubjects.deviceActivate ? 'activate' : 'answer', outcome: 'unavailable' });
  }

  /**
   * The activated device that signed this request, or the error to answer. Every refusal here
   * (401, and 403 not_activated) counts against the request's source. From a source over its limit,
   * a request that fails is answered 429 until the window ends, and one that a device signed is
   * served all the same: the phones sharing an address with whoever spent its budget (a carrier's
   * NAT, an office's Wi-Fi) keep approving. The checks are what tell the two apart, so they run;
   * the cheap ones first (an unknown device costs one read), the signature last.
   */
  private async authenticate(request: SignedRequest): Promise<Device> {
    const deviceId = request.headers['mfa-device'];
    const timestamp = request.headers['mfa-timestamp'];
    const nonce = request.headers['mfa-nonce'];
    const signature = request.headers['mfa-signature'];
    const id = deviceId ? parseDeviceId(deviceId) : undefined;
    // The source's failures and the device, read together (two slots: two commands, one wait).
    const [wait, found] = await Promise.all([this.sources.refusedFor(request.source), id ? this.findDevice(id) : undefined]);
    try {
      if (!deviceId || !timestamp || !nonce || !signature) throw new DeviceApiError(401, 'unauthenticated', 'Mfa-Device, Mfa-Timestamp, Mfa-Nonce and Mfa-Signature are required');
      if (!id) throw new DeviceApiError(403, 'not_activated', NOT_ACTIVATED);
      if (found === 'rebuilding') {
        // Nothing checked or spent, and not the caller's failure: the app asks again after the wait.
        requests.inc({ route: 'auth', outcome: 'rebuilding' });
        throw new DeviceApiError(503, 'unavailable', 'the service is rebuilding its data; try again in a moment', REBUILDING_RETRY_AFTER_SECONDS);
      }
      const device = found ? (JSON.parse(found.stored) as ProjectedDevice) : undefined;
      // The entry must be the device the request names: one id per app (an app activated under an
      // earlier master key keeps its own, ProjectedDevice.id; the current tag's form is not it).
      if (!found || !device || projectedDeviceId(found.tag, id.nonce, device) !== deviceId) {
        requests.inc({ route: 'auth', outcome: 'not_activated' });
        throw new DeviceApiError(403, 'not_activated', NOT_ACTIVATED);
      }
      if (!/^\d{1,16}$/.test(timestamp) || Math.abs(Number(timestamp) - this.clock().getTime()) > DEVICE_CLOCK_SKEW_MS) {
        requests.inc({ route: 'auth', outcome: 'clock' });
        throw new DeviceApiError(401, 'unauthenticated', 'Mfa-Timestamp is more than 60 s from the server’s clock');
      }
      if (!/^[A-Za-z0-9_-]{16,64}$/.test(nonce)) throw new DeviceApiError(401, 'unauthenticated', 'Mfa-Nonce must be 16 to 64 base64url characters');
      const key = this.keyOf(device.algorithm, device.publicKey);
      const signed = DeviceSigned.request(request.method, request.path, timestamp, nonce, createHash('sha256').update(request.body).digest('base64url'));
      if (!deviceSignatureValid(device.algorithm, key, signed, signature)) {
        requests.inc({ route: 'auth', outcome: 'bad_signature' });
        throw new DeviceApiError(401, 'unauthenticated', 'Mfa-Signature is not the device key’s signature over this request');
      }
      // After the signature: only the device can burn its own nonces.
      const fresh = await this.redis.set(RedisKeys.deviceNonce(found.tag, id.nonce, nonce), '1', 'PX', NONCE_TTL_MS, 'NX');
      if (fresh !== 'OK') {
        requests.inc({ route: 'auth', outcome: 'replay' });
        throw new DeviceApiError(401, 'unauthenticated', 'Mfa-Nonce was used already: a replayed request');
      }
      // The user's current tag: their pending push, challenges and devices are there.
      return { tag: found.tag, nonce: id.nonce, deviceId, device, key };
    } catch (error) {
      if (!(error instanceof DeviceApiError)) throw error;
      if (error.status === 503) throw error;
      // Over the limit already: another count buys nothing (the window is fixed), and a flood then
      // costs one read and no write.
      if (wait > 0) throw this.rateLimited('auth', wait);
      await this.countFailure(request.source);
      throw error;
    }
  }

  /**
   * The device's entry in user-settings' projection and the user's current tag, found by the tag
   * its id carries: there, or (an app activated under an earlier master key) at the current tag a
   * pointer there names (RedisKeys.devicesMoved), one more read. 'rebuilding' when it is in
   * neither and the slot's projection is not known complete (Redis being rebuilt: the device may
   * not be projected yet). Each read is one pipeline in one slot (its marker shares it).
   */
  private async findDevice(id: { tag: string; nonce: string }): Promise<{ tag: string; stored: string } | 'rebuilding' | undefined> {
    const [stored, movedTo, complete] = await this.inSlot<[string | null, string | null, number]>((p) =>
      p.hget(RedisKeys.devices(id.tag), id.nonce).hget(RedisKeys.devicesMoved(id.tag), id.nonce).exists(RedisKeys.slotMarker(id.tag)),
    );
    if (stored) return { tag: id.tag, stored };
    if (!movedTo || !isUserTag(movedTo)) return complete === 1 ? undefined : this.rebuilding();
    const [there, completeThere] = await this.inSlot<[string | null, number]>((p) => p.hget(RedisKeys.devices(movedTo), id.nonce).exists(RedisKeys.slotMarker(movedTo)));
    if (there) return { tag: movedTo, stored: there };
    if (completeThere !== 1) return this.rebuilding();
    // The app was deleted (or its user erased) since: its pointer goes too. A nonce is never given
    // again, and a rebuild writes the pointers of the apps it finds.
    await this.redis.hdel(RedisKeys.devicesMoved(id.tag), id.nonce);
    return undefined;
  }

  /**
   * A slot without its marker: Redis is being rebuilt, or (the projection's own marker still
   * standing) a node of a cluster came back empty, which no sign-in may notice for a while: dropping
   * that marker starts the rebuild that writes the slot's back (within a second), as a projection
   * write that finds the same does (UserProjectionWriter.apply). While a rebuild runs, it is gone
   * already.
   */
  private async rebuilding(): Promise<'rebuilding'> {
    await this.redis.del(RedisKeys.userProjectionMarker);
    return 'rebuilding';
  }

  /** Commands of one hash slot in one round trip: their replies, or the first error. */
  private async inSlot<T extends unknown[]>(commands: (pipeline: ReturnType<RedisClient['pipeline']>) => ReturnType<RedisClient['pipeline']>): Promise<T> {
    const replies = (await commands(this.redis.pipeline()).exec()) ?? [];
    return replies.map(([error, value]) => {
      if (error) throw error;
      return value;
    }) as T;
  }

  /**
   * Counts a failure of the source; a count that fails (Redis) is never answered in place of the
   * request's own error, and is logged once a minute at most (a flood must not flood the log).
   */
  private async countFailure(source: string | undefined): Promise<void> {
    await this.sources.failed(source).catch((error: unknown) => {
      requests.inc({ route: 'auth', outcome: 'uncounted' });
      const now = Date.now();
      if (now - this.lastCountWarning < 60_000) return;
      this.lastCountWarning = now;
      this.log.warn('device API: failures of sources could not be counted (one line a minute at most; mfa_device_api_requests_total{outcome="uncounted"} counts them)', { error });
    });
  }

  /** Refuses an activation from a source over its limit of failures (SourceFailures), before user-settings is asked. */
  private async admit(source: string | undefined): Promise<void> {
    const wait = await this.sources.refusedFor(source);
    if (wait > 0) throw this.rateLimited('activate', wait);
  }

  private rateLimited(route: 'activate' | 'auth', seconds: number): DeviceApiError {
    requests.inc({ route, outcome: 'rate_limited' });
    return new DeviceApiError(429, 'rate_limited', `too many failed requests from this address; try again in ${seconds} s`, seconds);
  }

  private keyOf(algorithm: DeviceAlgorithm, publicKey: string): KeyObject {
    let key = this.keys.get(publicKey);
    if (!key) {
      key = devicePublicKey(algorithm, publicKey);
      if (this.keys.size > 10_000) this.keys.clear();
      this.keys.set(publicKey, key);
    }
    return key;
  }

  /** The client IP's country, from the offline database geoip-country ships (loaded at first use). */
  private async locate(ip: string): Promise<{ country: string; countryName: string } | null> {
    this.geo ??= import('geoip-country').then((m) => m.default);
    const found = (await this.geo).lookup(ip);
    return found ? { country: found.country, countryName: found.name } : null;
  }
}

export interface PendingView {
  challengeId: string;
  application: string | null;
  clientIp: string | null;
  location: { country: string; countryName: string } | null;
  startedAt: string;
  expiresAt: string;
  /** Whether approving needs the number the sign-in page shows. */
  numberMatch: boolean;
}

function statusOf(code: string): number {
  return { invalid_request: 400, not_found: 404, conflict: 409, forbidden: 403, rate_limited: 429, unavailable: 503 }[code] ?? 500;
}

