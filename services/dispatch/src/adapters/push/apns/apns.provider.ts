import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { createHash, randomUUID, type KeyObject } from 'node:crypto';
import { rootCertificates } from 'node:tls';
import { carrierFromContext, contextFromCarrier, SpanKind, withSpan } from '@mfa/telemetry';
import { PUSH_DATA_TYPE, PushProviderError, pushNetworkError, SendDeadline, type PushNotification, type PushProvider } from '../push-provider.js';
import { retryAfterMs } from '../../http-client.js';
import { ApnsProviderTokens } from './provider-tokens.js';

interface ApnsOptions {
  /** https://api.push.apple.com (apps from the App Store, TestFlight), https://api.sandbox.push.apple.com (development builds), or a test fake. */
  url: string;
  /** The .p8 signing key of the Apple developer account (ECDSA P-256). */
  key: KeyObject;
  keyId: string;
  teamId: string;
  /** The app's bundle id. */
  topic: string;
  /** Trusted in addition to the system's roots (a test fake, a TLS-inspecting proxy). */
  ca?: string | undefined;
  /** Total time of one send, a new connection and a new provider token included; also how long a PING may go unanswered. */
  timeoutMs: number;
  /** How long a connection may be quiet (no answer, no PING) before it is checked with a PING. */
  pingIntervalMs?: number;
  clock?: () => number;
}

/**
 * Quiet connections are checked this often: a PING keeps the NAT and firewall mappings on the way
 * alive, and one unanswered finds a path that was dropped without a word (no FIN, no RST), which
 * would otherwise hold every send until it times out, for as long as the OS keeps the socket.
 */
const PING_INTERVAL_MS = 60_000;

/** What the user sees on the lock screen: no detail of the sign-in (the app fetches it over the device API). */
export const APNS_ALERT = { title: 'Sign-in request', body: 'Open the app to approve or deny it.' } as const;

/** An APNs device token: hex (32 bytes today; Apple says the length may change). Checked before it goes into a path. */
const DEVICE_TOKEN = /^[0-9A-Fa-f]{16,400}$/;

/** The request's headers and JSON body (developer.apple.com: Sending notification requests to APNs). */
export function apnsRequest(notification: PushNotification, topic: string, providerToken: string, apnsId: string): { headers: OutgoingHttpHeaders; body: string } {
  return {
    headers: {
      ':method': 'POST',
      ':path': `/3/device/${notification.token}`,
      authorization: `bearer ${providerToken}`,
      'apns-id': apnsId,
      'apns-topic': topic,
      'apns-push-type': 'alert',
      'apns-priority': '10',
      // Stored and retried by APNs until the challenge expires, not after.
      'apns-expiration': String(Math.floor(notification.expiresAt.getTime() / 1000)),
      'content-type': 'application/json',
    },
    body: JSON.stringify({ aps: { alert: APNS_ALERT, 'content-available': 1 }, type: PUSH_DATA_TYPE, challengeId: notification.challengeId }),
  };
}

type ApnsResult =
  | { ok: true }
  | { ok: false; transient: boolean; invalidToken: boolean; configuration: boolean; expiredProviderToken: boolean; reason: string | undefined; message: string };

/** The reasons that say the device token is no use for this app: the app must register again. */
const INVALID_TOKEN_REASONS = new Set(['BadDeviceToken', 'Unregistered', 'ExpiredToken']);

/**
 * The reasons that say one of dispatch's settings is wrong, whatever the device (every iOS user
 * gets no push until it is mended): what each says of the settings. Counted apart (config_error)
 * for the PushProviderMisconfigured alert; no device is marked.
 */
const CONFIGURATION_REASONS: ReadonlyMap<string, (topic: string) => string> = new Map([
  ['DeviceTokenNotForTopic', (topic: string) => `APNS_TOPIC (${topic}) is not the bundle id of the app this device registered from`],
  ['BadTopic', (topic: string) => `APNS_TOPIC (${topic}) is not a topic APNs knows`],
  ['MissingTopic', () => 'APNS_TOPIC is missing from the request'],
  ['TopicDisallowed', (topic: string) => `APNS_TOPIC (${topic}) may not be pushed to with this key: APNS_KEY_ID and APNS_TEAM_ID must be of the team that owns it`],
  ['InvalidProviderToken', () => 'APNs refuses the provider token: APNS_KEY, APNS_KEY_ID and APNS_TEAM_ID must be one key of the team (a key revoked in the developer account, or a wrong id)'],
  ['MissingProviderToken', () => 'APNs got no provider token'],
]);

/**
 * What an APNs answer means (developer.apple.com: Handling notification responses from APNs): 410
 * (Unregistered, ExpiredToken) and 400 BadDeviceToken: the token is invalid (but see
 * BAD_TOKEN_WINDOW: BadDeviceToken is also every device's answer under the wrong APNS_URL); 400
 * DeviceTokenNotForTopic: our APNS_TOPIC is not the app the token is of, which for one app's
 * devices is our setting, never the device's (a device registered again from the same app gets a
 * token for the same topic), and likewise BadTopic, MissingTopic, TopicDisallowed,
 * InvalidProviderToken and MissingProviderToken (CONFIGURATION_REASONS): our settings; 403
 * ExpiredProviderToken: our provider token is stale; 429 (TooManyRequests,
 * TooManyProviderTokenUpdates) and 5xx: later; anything else (PayloadTooLarge, …) will not mend by
 * itself.
 */
export function classifyApnsResponse(status: number, body: unknown): ApnsResult {
  if (status === 200) return { ok: true };
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const reason = typeof fields.reason === 'string' ? fields.reason.slice(0, 64) : undefined;
  const invalidToken = status === 410 || (reason !== undefined && INVALID_TOKEN_REASONS.has(reason));
  return {
    ok: false,
    transient: !invalidToken && (status === 429 || status >= 500),
    invalidToken,
    configuration: reason !== undefined && CONFIGURATION_REASONS.has(reason),
    expiredProviderToken: status === 403 && reason === 'ExpiredProviderToken',
    reason,
    message: `APNs ${status}${reason ? ` ${reason}` : ''}`,
  };
}

/**
 * Whose fault a BadDeviceToken is, told from this instance's latest APNs answers that were 200 or
 * BadDeviceToken (at most BAD_TOKEN_WINDOW of them; APNS_URL changes only with a restart, so their
 * age does not matter). A wrong APNS_URL (a sandbox endpoint refuses every production token, and
 * the reverse) refuses all or nearly all devices (all but developers' sandbox devices); under the
 * right one, bad tokens (development builds registered against production, restored backups) are
 * a few percent of the answers even in a large deployment. So: while BadDeviceToken is under half
 * of the window, it is the device's (marked for activation); from half on, and from
 * BAD_TOKEN_MIN_DEVICES distinct devices (one user retrying with one stale device is no setting),
 * it is APNS_URL (configuration, no device marked); in between (half or more, fewer devices: after
 * a restart, before APNs has taken enough), it is undecided: a permanent failure that marks no
 * device and is no configuration error, decided at the device's next push.
 */
const BAD_TOKEN_WINDOW = 100;
const BAD_TOKEN_MIN_DEVICES = 5;

class HttpTimeoutError extends Error {
  override name = 'TimeoutError';
}

/**
 * The server did not process the request (HTTP/2 REFUSED_STREAM, or the connection was already
 * going away): safe to make again, on a new connection.
 */
class RefusedStreamError extends Error {
  override name = 'RefusedStreamError';
}

/**
 * Apple Push Notification service over HTTP/2 with token-based authentication, for iOS devices.
 * One HTTP/2 connection, opened on first use and again after APNs closes it (GOAWAY, idle), carries
 * every request as its own stream. A connection that stops answering is replaced: after a request
 * on it times out, or a PING of it (every PING_INTERVAL_MS of quiet) goes unanswered, the next send
 * opens another, and the old one ends once what is on it has.
 */
export class ApnsPushProvider implements PushProvider {
  readonly name = 'apns';
  readonly platform = 'ios';
  private readonly tokens: ApnsProviderTokens;
  private readonly origin: string;
  private session: ClientHttp2Session | undefined;
  /** When each connection last answered (a response, a PING): a quiet one is checked. */
  private readonly heard = new WeakMap<ClientHttp2Session, number>();
  /** The latest APNs answers that were 200 (undefined) or BadDeviceToken (a hash of the device's token): at most BAD_TOKEN_WINDOW. */
  private readonly answers: Array<string | undefined> = [];

  constructor(private readonly options: ApnsOptions) {
    this.origin = new URL(options.url).origin;
    this.tokens = new ApnsProviderTokens({ key: options.key, keyId: options.keyId, teamId: options.teamId, clock: options.clock });
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  send(notification: PushNotification): Promise<{ providerMessageId: string }> {
    return withSpan(
      'apns send',
      {
        kind: SpanKind.CLIENT,
        parent: contextFromCarrier(notification.trace),
        attributes: { 'http.request.method': 'POST', 'server.address': new URL(this.origin).hostname, 'mfa.push.provider': this.name },
      },
      async (span) => {
        this.refuseUnsendable(notification);
        const deadline = new SendDeadline(this.options.timeoutMs);
        let providerToken = await this.providerToken();
        // A stale provider token is replaced once (APNs: ExpiredProviderToken), and a request that a
        // closing connection refused is made once more on a new one.
        let renewed = false;
        let reconnected = false;
        for (;;) {
          const apnsId = randomUUID();
          const { headers, body } = apnsRequest(notification, this.options.topic, providerToken, apnsId);
          const carrier = carrierFromContext();
          if (carrier.traceparent) headers.traceparent = carrier.traceparent;
          let answer: { status: number; headers: IncomingHttpHeaders; text: string };
          try {
            answer = await this.request(headers, body, deadline.left());
          } catch (cause) {
            if (cause instanceof RefusedStreamError && !reconnected) {
              reconnected = true;
              continue;
            }
            throw pushNetworkError(this.name, 'APNs', cause, this.options.timeoutMs);
          }
          span.setAttribute('http.response.status_code', answer.status);
          let parsed: unknown;
          try {
            parsed = answer.text ? JSON.parse(answer.text) : undefined;
          } catch {
            parsed = undefined;
          }
          const result = classifyApnsResponse(answer.status, parsed);
          if (result.ok) {
            this.answered(undefined);
            return { providerMessageId: typeof answer.headers['apns-id'] === 'string' ? answer.headers['apns-id'] : apnsId };
          }
          if (result.reason) span.setAttribute('mfa.push.provider_error_code', result.reason);
          if (result.expiredProviderToken && !renewed) {
            renewed = true;
            const next = await this.tokens.renew(providerToken);
            if (next) {
              providerToken = next;
              continue;
            }
            const age = Math.round((this.tokens.ageMs() ?? 0) / 60_000);
            throw new PushProviderError(`APNs 403 ExpiredProviderToken for a provider token ${age} min old: is this host's clock right?`, {
              provider: this.name,
              transient: false,
              code: result.reason,
              status: answer.status,
              vendorAnswered: true,
            });
          }
          if (result.configuration) {
            throw new PushProviderError(`${result.message}: ${CONFIGURATION_REASONS.get(result.reason!)!(this.options.topic)}; no device is marked`, {
              provider: this.name,
              transient: false,
              configuration: true,
              code: result.reason,
              status: answer.status,
              vendorAnswered: true,
            });
          }
          if (result.reason === 'BadDeviceToken') {
            const verdict = this.badDeviceToken(notification.token);
            if (verdict !== 'device') {
              const setting = verdict === 'setting';
              throw new PushProviderError(
                setting
                  ? `${result.message} for most devices (${BAD_TOKEN_MIN_DEVICES} or more) of this instance's latest APNs answers: is APNS_URL the environment of the app's tokens (production or sandbox)? No device is marked`
                  : `${result.message} while most of this instance's latest APNs answers are refusals, from few devices: the device or APNS_URL, not told yet; the device is not marked`,
                { provider: this.name, transient: false, configuration: setting, code: result.reason, status: answer.status, vendorAnswered: true },
              );
            }
          }
          const retryAfter = answer.headers['retry-after'];
          throw new PushProviderError(result.message, {
            provider: this.name,
            transient: result.transient,
            invalidToken: result.invalidToken,
            code: result.reason,
            status: answer.status,
            vendorAnswered: true,
            retryAfterMs: retryAfterMs(typeof retryAfter === 'string' ? retryAfter : undefined, Date.now()),
          });
        }
      },
    );
  }

  private answered(device: string | undefined): void {
    this.answers.push(device);
    if (this.answers.length > BAD_TOKEN_WINDOW) this.answers.shift();
  }

  /**
   * APNs answered BadDeviceToken for this device: whether that is the device's (`device`),
   * APNS_URL's (`setting`) or not told yet (`undecided`), by this instance's latest answers (see
   * BAD_TOKEN_WINDOW). Per instance: each decides by what APNs answered it.
   */
  private badDeviceToken(token: string): 'device' | 'setting' | 'undecided' {
    this.answered(createHash('sha256').update(token).digest('base64url').slice(0, 16));
    const refused = this.answers.filter((device) => device !== undefined);
    if (refused.length * 2 < this.answers.length) return 'device';
    return new Set(refused).size >= BAD_TOKEN_MIN_DEVICES ? 'setting' : 'undecided';
  }

  /** A device token that is not hex is refused here (it would go into the request's path), without asking APNs. */
  refuseUnsendable(notification: PushNotification): void {
    if (!DEVICE_TOKEN.test(notification.token)) {
      throw new PushProviderError('APNs device token is not hex: not sent', { provider: this.name, transient: false, invalidToken: true, code: 'BadDeviceToken' });
    }
  }

  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (!session || session.closed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        session.destroy();
        resolve();
      }, 2_000);
      session.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async providerToken(): Promise<string> {
    try {
      return await this.tokens.get();
    } catch (cause) {
      throw new PushProviderError('could not sign the APNs provider token', { provider: this.name, transient: false, cause });
    }
  }

  /** A connection that refused a stream is going away: the next request opens another. */
  private dropSession(session: ClientHttp2Session | undefined): void {
    if (this.session === session) this.session = undefined;
    session?.destroy();
  }

  /**
   * A connection that stopped answering: no new stream goes on it (the next send connects again),
   * and it closes once its streams have ended, each by its answer or its own timeout; a path that
   * takes nothing more cannot complete the close, so it is destroyed after that time.
   */
  private retire(session: ClientHttp2Session, why: string): void {
    if (this.session !== session && (session.closed || session.destroyed)) return;
    if (this.session === session) this.session = undefined;
    if (!session.closed && !session.destroyed) session.close();
    setTimeout(() => session.destroy(new Error(`APNs connection retired: ${why}`)), this.options.timeoutMs).unref();
  }

  /** Every PING_INTERVAL_MS, a connection quiet that long is PINGed; unanswered within the send timeout, it is retired. */
  private keepChecking(session: ClientHttp2Session): void {
    const every = this.options.pingIntervalMs ?? PING_INTERVAL_MS;
    const timer = setInterval(() => {
      if (session.closed || session.destroyed || Date.now() - (this.heard.get(session) ?? 0) < every) return;
      const unanswered = setTimeout(() => this.retire(session, 'PING unanswered'), this.options.timeoutMs);
      unanswered.unref();
      try {
        session.ping((error) => {
          clearTimeout(unanswered);
          if (error) this.retire(session, `PING failed: ${error.message}`);
          else this.heard.set(session, Date.now());
        });
      } catch (error) {
        clearTimeout(unanswered);
        this.retire(session, `PING not sent: ${(error as Error).message}`);
      }
    }, every);
    timer.unref();
    session.once('close', () => clearInterval(timer));
  }

  private connect(): ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = http2.connect(this.origin, this.options.ca ? { ca: [...rootCertificates, this.options.ca] } : {});
    const forget = () => {
      if (this.session === session) this.session = undefined;
    };
    // A failed or closing connection fails its streams (they report it); the next send connects again.
    session.on('error', forget);
    session.on('goaway', forget);
    session.on('close', forget);
    // An idle connection must not keep the process alive.
    session.unref();
    this.heard.set(session, Date.now());
    this.keepChecking(session);
    this.session = session;
    return session;
  }

  /** One stream, answered within the timeout in total (connecting, sending, reading). */
  private request(headers: OutgoingHttpHeaders, body: string, timeoutMs: number): Promise<{ status: number; headers: IncomingHttpHeaders; text: string }> {
    return new Promise((resolve, reject) => {
      let session: ClientHttp2Session | undefined;
      let stream: http2.ClientHttp2Stream;
      try {
        session = this.connect();
        stream = session.request(headers);
      } catch (error) {
        // The connection was closing (ERR_HTTP2_INVALID_SESSION, ERR_HTTP2_GOAWAY_SESSION): nothing was sent.
        this.dropSession(session);
        reject(new RefusedStreamError((error as Error).message, { cause: error }));
        return;
      }
      let settled = false;
      const settle = (error: Error | undefined, status?: number) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve({ status: status ?? 0, headers: response, text: Buffer.concat(chunks).toString('utf8') });
      };
      const timer = setTimeout(() => {
        stream.destroy(new HttpTimeoutError(`no complete answer within ${timeoutMs} ms`));
        // APNs answers in milliseconds: a connection that let a request go unanswered this long is
        // likely dead (a NAT path dropped without a word), and every send on it would wait as long.
        if (session) this.retire(session, `a request unanswered for ${timeoutMs} ms`);
      }, timeoutMs);
      let response: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('response', (h) => {
        response = h;
        if (session) this.heard.set(session, Date.now());
      });
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        // An APNs answer is a small JSON object; refuse to buffer an unbounded one.
        if (size > 64 * 1024) stream.destroy(new Error('response larger than 64 KiB'));
        else chunks.push(chunk);
      });
      stream.on('end', () => settle(undefined, Number(response[':status'] ?? 0)));
      const refused = () => stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
      stream.on('error', (error) => {
        if (refused()) this.dropSession(session);
        settle(refused() ? new RefusedStreamError(error.message, { cause: error }) : error);
      });
      // Reset by the server (or its connection gone) without an answer or an error of its own.
      stream.on('close', () => {
        if (refused()) this.dropSession(session);
        settle(refused() ? new RefusedStreamError('stream refused') : new Error(`stream closed before an answer (code ${stream.rstCode ?? 'none'})`));
      });
      stream.end(body);
    });
  }
}
