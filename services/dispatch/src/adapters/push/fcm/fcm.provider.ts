import { carrierFromContext, contextFromCarrier, SpanKind, withSpan } from '@mfa/telemetry';
import { postBody, retryAfterMs } from '../../http-client.js';
import { PUSH_DATA_TYPE, PushProviderError, pushNetworkError, SendDeadline, type PushNotification, type PushProvider } from '../push-provider.js';
import { GoogleAccessTokens } from './access-tokens.js';
import type { ServiceAccount } from './service-account.js';

interface FcmOptions {
  account: ServiceAccount;
  /** https://fcm.googleapis.com unless pointed at a test fake. */
  apiUrl: string;
  /** Total time of one send, the token exchange it may need included. */
  timeoutMs: number;
  clock?: () => number;
}

/** The body of messages:send: a data message (the app words its own notification), high priority so it wakes the app. */
export function fcmMessage(notification: PushNotification, now: number): object {
  const ttlSeconds = Math.max(0, Math.floor((notification.expiresAt.getTime() - now) / 1000));
  return {
    message: {
      token: notification.token,
      data: { type: PUSH_DATA_TYPE, challengeId: notification.challengeId },
      // Held no longer than the challenge lives: a late notification would show a sign-in that is gone.
      android: { priority: 'HIGH', ttl: `${ttlSeconds}s` },
    },
  };
}

type FcmResult =
  | { ok: true; name: string }
  | { ok: false; transient: boolean; invalidToken: boolean; configuration: boolean; unauthenticated: boolean; code: string | undefined; message: string };

interface GoogleError {
  code?: unknown;
  message?: unknown;
  status?: unknown;
  details?: Array<{ '@type'?: unknown; errorCode?: unknown; fieldViolations?: Array<{ field?: unknown }> }>;
}

/**
 * What an FCM HTTP v1 answer means (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
 * UNREGISTERED (404): the token is no longer valid. INVALID_ARGUMENT (400) is the token too, unless
 * a BadRequest detail names another field of our message (then it is our bug, not the device's).
 * 401 without THIRD_PARTY_AUTH_ERROR: our access token expired or was revoked: get a new one.
 * QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500): later. SENDER_ID_MISMATCH (403), i.e.
 * the token belongs to another Firebase project, is permanent but not the device's fault: a wrong
 * service account would otherwise send every Android user back to activation.
 */
export function classifyFcmResponse(status: number, body: unknown): FcmResult {
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  if (status === 200) {
    if (typeof fields.name === 'string' && fields.name.length > 0) return { ok: true, name: fields.name };
    return { ok: false, transient: false, invalidToken: false, configuration: false, unauthenticated: false, code: undefined, message: 'FCM answered 200 without a message name' };
  }
  const error: GoogleError = typeof fields.error === 'object' && fields.error !== null ? (fields.error as GoogleError) : {};
  const details = Array.isArray(error.details) ? error.details : [];
  const fcmError = details.find((d) => typeof d?.['@type'] === 'string' && d['@type'].endsWith('google.firebase.fcm.v1.FcmError'));
  const code = typeof fcmError?.errorCode === 'string' ? fcmError.errorCode : typeof error.status === 'string' ? error.status : undefined;
  const violations = details.flatMap((d) => (Array.isArray(d?.fieldViolations) ? d.fieldViolations : [])).map((v) => (typeof v?.field === 'string' ? v.field : ''));
  const aboutOurMessage = violations.some((field) => field !== '' && field !== 'message.token');
  const invalidToken = code === 'UNREGISTERED' || (code === 'INVALID_ARGUMENT' && !aboutOurMessage);
  const unauthenticated = status === 401 && code !== 'THIRD_PARTY_AUTH_ERROR';
  const detail = typeof error.message === 'string' && error.message.length > 0 ? error.message : 'no error message';
  return {
    ok: false,
    transient: !invalidToken && (status === 429 || status >= 500),
    invalidToken,
    configuration: code === 'SENDER_ID_MISMATCH',
    unauthenticated,
    code,
    message: `FCM ${status}${code ? ` ${code}` : ''}: ${detail}`.slice(0, 300),
  };
}

/**
 * Firebase Cloud Messaging, HTTP v1 API: POST {api}/v1/projects/{project}/messages:send with an
 * OAuth2 access token of the service account (GoogleAccessTokens), for Android devices.
 */
export class FcmPushProvider implements PushProvider {
  readonly name = 'fcm';
  readonly platform = 'android';
  private readonly endpoint: URL;
  private readonly tokens: GoogleAccessTokens;
  private readonly clock: () => number;

  constructor(private readonly options: FcmOptions) {
    this.endpoint = new URL(`${options.apiUrl.replace(/\/+$/, '')}/v1/projects/${encodeURIComponent(options.account.projectId)}/messages:send`);
    this.clock = options.clock ?? Date.now;
    this.tokens = new GoogleAccessTokens(options.account, { timeoutMs: options.timeoutMs, clock: this.clock });
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  send(notification: PushNotification): Promise<{ providerMessageId: string }> {
    const url = this.endpoint;
    return withSpan(
      'fcm send',
      {
        kind: SpanKind.CLIENT,
        parent: contextFromCarrier(notification.trace),
        attributes: { 'http.request.method': 'POST', 'server.address': url.hostname, 'url.path': url.pathname, 'mfa.push.provider': this.name },
      },
      async (span) => {
        const body = JSON.stringify(fcmMessage(notification, this.clock()));
        const deadline = new SendDeadline(this.options.timeoutMs);
        // A refused access token is replaced once: it may have been revoked or expired early.
        for (let attempt = 1; ; attempt++) {
          let accessToken: string;
          try {
            accessToken = await deadline.within(this.tokens.get());
          } catch (cause) {
            if (cause instanceof PushProviderError) throw cause;
            throw pushNetworkError(this.name, 'the OAuth2 token endpoint', cause, this.options.timeoutMs);
          }
          const headers: Record<string, string> = { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json; charset=utf-8', accept: 'application/json' };
          const carrier = carrierFromContext();
          if (carrier.traceparent) headers.traceparent = carrier.traceparent;
          let answer: { status: number; text: string; retryAfter?: string | undefined };
          try {
            answer = await postBody(url, headers, body, deadline.left());
          } catch (cause) {
            throw pushNetworkError(this.name, 'FCM', cause, this.options.timeoutMs);
          }
          span.setAttribute('http.response.status_code', answer.status);
          let parsed: unknown;
          try {
            parsed = JSON.parse(answer.text);
          } catch {
            parsed = undefined;
          }
          const result = classifyFcmResponse(answer.status, parsed);
          if (result.ok) return { providerMessageId: result.name };
          if (result.unauthenticated && attempt === 1) {
            this.tokens.invalidate(accessToken);
            continue;
          }
          if (result.code) span.setAttribute('mfa.push.provider_error_code', result.code);
          // FCM asks for Retry-After to be honoured on 429 and 503.
          throw new PushProviderError(result.message, {
            provider: this.name,
            transient: result.transient,
            invalidToken: result.invalidToken,
            configuration: result.configuration,
            code: result.code,
            status: answer.status,
            vendorAnswered: true,
            retryAfterMs: retryAfterMs(answer.retryAfter, this.clock()),
          });
        }
      },
    );
  }
}
