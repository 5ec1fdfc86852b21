import type { DevicePlatform } from '@mfa/contracts';
import { counter, type TraceCarrier } from '@mfa/telemetry';

/** The vendors' own credentials: FCM's OAuth2 access tokens, APNs' provider tokens (outcome `issued` or `failed`). */
export const pushAuthTokens = counter('mfa_push_auth_tokens_total', 'Access tokens (FCM) and provider tokens (APNs) made, by provider and outcome', ['provider', 'outcome']);

/**
 * One push notification to one device. It carries no secret and no detail of the sign-in: only
 * `{type: "mfa.challenge", challengeId}` to wake the app, which then asks the device API
 * (docs/device-api.md).
 */
export interface PushNotification {
  /** The platform's token of the device (FCM registration token, APNs device token): never logged. */
  readonly token: string;
  readonly challengeId: string;
  /** The challenge's expiry: a notification held by the vendor past it is dropped, not delivered late. */
  readonly expiresAt: Date;
  /** Trace context of the caller, continued by the provider's span. */
  readonly trace?: TraceCarrier;
}

/** What the app finds in the notification's data (docs/device-api.md). */
export const PUSH_DATA_TYPE = 'mfa.challenge';

/** One push vendor for the devices of one platform. Implementations throw `PushProviderError` and nothing else. */
export interface PushProvider {
  /** `fcm` or `apns`: in events, metrics and logs. */
  readonly name: string;
  /** The devices it reaches. */
  readonly platform: Exclude<DevicePlatform, 'none'>;
  send(notification: PushNotification): Promise<{ providerMessageId: string }>;
  /** Closes connections it keeps (APNs' HTTP/2 session). */
  close?(): Promise<void>;
}

interface PushProviderErrorDetails {
  provider: string;
  /** True when the same request may succeed later (rate limit, vendor outage, network). */
  transient: boolean;
  /**
   * The vendor says the device's token is no longer valid (app uninstalled, token rotated, token of
   * another app): the device must activate again, and sending to it again is pointless.
   */
  invalidToken?: boolean;
  /**
   * The vendor refused the device's token for our setting, not for the device (APNs
   * `DeviceTokenNotForTopic`, FCM `SENDER_ID_MISMATCH`): permanent, no device is marked, and it is
   * counted apart (`config_error`) for an alert: a wrong setting refuses every device.
   */
  configuration?: boolean;
  /** The vendor's error code, when it gave one (FCM `UNREGISTERED`, APNs `BadDeviceToken`). */
  code?: string | undefined;
  /** HTTP status. */
  status?: number | undefined;
  /**
   * The push service's own answer to this request made the error (APNs, FCM messages:send; not
   * FCM's OAuth2 token endpoint, which is another service): proof that it is reachable and
   * answering, which a half-open circuit breaker needs to close. False for errors made here.
   */
  vendorAnswered?: boolean | undefined;
  /** How long the vendor asked to be left alone (Retry-After), ms. */
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

export class PushProviderError extends Error {
  override name = 'PushProviderError';
  readonly provider: string;
  readonly transient: boolean;
  readonly invalidToken: boolean;
  readonly configuration: boolean;
  readonly code: string | undefined;
  readonly status: number | undefined;
  readonly vendorAnswered: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(message: string, details: PushProviderErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.provider = details.provider;
    this.transient = details.transient;
    this.invalidToken = details.invalidToken ?? false;
    this.configuration = details.configuration ?? false;
    this.code = details.code;
    this.status = details.status;
    this.vendorAnswered = details.vendorAnswered ?? false;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** A request that got no answer (refused, reset, timed out) may succeed when tried again. */
export function pushNetworkError(provider: string, label: string, cause: unknown, timeoutMs: number): PushProviderError {
  const timedOut = (cause as Error | undefined)?.name === 'TimeoutError';
  const message = timedOut ? `${label} did not answer within ${timeoutMs} ms` : `${label} request failed: ${String((cause as Error | undefined)?.message ?? cause).slice(0, 200)}`;
  return new PushProviderError(message, { provider, transient: true, cause });
}

/**
 * The time one send may take in all, whatever requests it makes (an access token first, the send
 * again after a refused credential, a new connection): each request gets what is left, so a send
 * always ends within PUSH_TIMEOUT_MS, while JetStream still holds the message for this instance.
 */
export class SendDeadline {
  private readonly at: number;

  constructor(private readonly timeoutMs: number) {
    this.at = Date.now() + timeoutMs;
  }

  /** Milliseconds left; a TimeoutError when none are. */
  left(): number {
    const ms = this.at - Date.now();
    if (ms <= 0) throw this.timeout();
    return ms;
  }

  /** What `promise` resolves to, or a TimeoutError once the time is up (the promise may still settle, for others). */
  async within<T>(promise: Promise<T>): Promise<T> {
    const ms = this.left();
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(this.timeout()), ms)))]);
    } finally {
      clearTimeout(timer);
    }
  }

  private timeout(): Error {
    return Object.assign(new Error(`no complete answer within ${this.timeoutMs} ms`), { name: 'TimeoutError' });
  }
}
