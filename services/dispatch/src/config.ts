import { Consumers } from '@mfa/contracts';
import { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, RedisConfig, type AuthConfig, type JetStreamConsumerOptions, type KeyringConfig } from '@mfa/service-kit';

/**
 * SMS and push sends in flight at once unless SMS_CONCURRENCY / PUSH_CONCURRENCY say otherwise;
 * also what the consumers declare (boot sets the configured number over it).
 */
export const DEFAULT_SEND_CONCURRENCY = 64;
/** The most SMS_CONCURRENCY and PUSH_CONCURRENCY allow, and the sockets kept per provider host. */
export const MAX_SEND_CONCURRENCY = 1024;
/**
 * The longest wait before a send request that failed (Redis or NATS unreachable: its claim could
 * not be taken, or its outcome could not be published after the message went) comes again. Short,
 * so that an outcome is recorded within seconds of an outage's end: until it is, only the claim in
 * Redis says the message went, and a Redis lost meanwhile would let it go a second time. Retrying
 * every 5 s costs little, the consumers holding at most their concurrency of messages.
 */
export const SEND_RETRY_MAX_BACKOFF_MS = 5_000;

/**
 * How every send consumer (SMS, resends, voice, push) takes its requests: one at a time per
 * handler call, `concurrency` in flight (as many as JetStream lets this instance hold unacked), an
 * ack confirmed before the next step, a failed request back within SEND_RETRY_MAX_BACKOFF_MS.
 */
export function sendConsumer(concurrency: number): JetStreamConsumerOptions {
  return { batchSize: 1, concurrency, maxAckPending: concurrency, confirmAcks: true, maxBackoffMs: SEND_RETRY_MAX_BACKOFF_MS };
}

const optionalText = z
  .string()
  .trim()
  .transform((s) => (s === '' ? undefined : s))
  .optional();

export const DispatchEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3002),
  /** Ordered provider names, e.g. "twilio,console"; unset means "console" outside production. */
  SMS_PROVIDERS: optionalText,
  TWILIO_API_URL: z.url({ protocol: /^https?$/ }).default('https://api.twilio.com'),
  TWILIO_ACCOUNT_SID: optionalText,
  TWILIO_AUTH_TOKEN: optionalText,
  TWILIO_FROM_NUMBER: optionalText,
  // Total time of one provider call; at most half the dispatch-sms ack wait (60 s), so that a call
  // always ends while JetStream still holds the message for this instance.
  TWILIO_TIMEOUT_MS: z.coerce.number().int().min(100).max(Consumers.dispatchSms.ackWaitSeconds * 500).default(10_000),
  /**
   * SMPP v3.4 (SMS_PROVIDERS=smpp): the SMSC and the account, smpp://system_id:password@host:port
   * (2775 by default), or smpps:// for SMPP over TLS (3550 by default). Characters of the
   * password that a URL reserves are percent-encoded.
   */
  SMPP_URL: optionalText.pipe(z.url({ protocol: /^smpps?$/, error: 'must be smpp://system_id:password@host:port or smpps://…' }).optional()),
  /**
   * The sender (source_addr) where SMS_SENDERS names none: an E.164 number, a short code, or an
   * alphanumeric sender ID of at most 11 characters where the destination's networks allow one.
   */
  SMPP_SOURCE_ADDR: optionalText.pipe(
    z
      .string()
      .regex(/^(?:\+[1-9]\d{6,14}|\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11})$/, 'must be an E.164 number, a short code or an alphanumeric sender ID of at most 11 characters')
      .optional(),
  ),
  /** submit_sm awaiting their response at most (the window the SMSC grants this account). */
  SMPP_WINDOW: z.coerce.number().int().min(1).max(1000).default(10),
  // Like TWILIO_TIMEOUT_MS: a send ends while JetStream still holds the request for this instance.
  SMPP_TIMEOUT_MS: z.coerce.number().int().min(100).max(Consumers.dispatchSms.ackWaitSeconds * 500).default(10_000),
  SMPP_ENQUIRE_LINK_SECONDS: z.coerce.number().int().min(5).max(600).default(30),
  /**
   * How submit_sm carries the code's expiry as validity_period: `relative` (SMPP v3.4
   * YYMMDDhhmmss000R, no clock to agree on), `absolute` (UTC, for SMSCs that refuse the relative
   * format; the SMSC's clock must be right) or `none` (the SMSC's default validity). An SMSC that
   * refuses the format sent (ESME_RINVEXPIRY) gets the submit again without one, and so does the
   * rest of that session.
   */
  SMPP_VALIDITY_PERIOD: z.enum(['relative', 'absolute', 'none']).default('relative'),
  /**
   * The sender of SMS per destination country: `US=97671,CA=759731,*=+15005550006` (short codes
   * where a country has them, a long number elsewhere; `*` for every other country). A country
   * missing with no `*` uses TWILIO_FROM_NUMBER.
   */
  SMS_SENDERS: optionalText.pipe(
    z
      .string()
      .regex(/^(?:[A-Z]{2}|\*)=(?:\d{3,8}|\+[1-9]\d{7,14})(?:,(?:[A-Z]{2}|\*)=(?:\d{3,8}|\+[1-9]\d{7,14}))*$/, 'must be COUNTRY=sender pairs such as US=97671,CA=759731,*=+15005550006')
      .optional(),
  ),
  /**
   * Circuit breaker per SMS and push provider: transient failures (5xx, 429, network errors, timeouts) in
   * percent of the calls of the last PROVIDER_BREAKER_WINDOW_SECONDS, once at least
   * PROVIDER_BREAKER_MIN_CALLS were made, open the provider's circuit: it is skipped (the next
   * provider is used at once) until one probe after PROVIDER_BREAKER_RESET_SECONDS succeeds.
   */
  PROVIDER_BREAKER_ERROR_PERCENT: z.coerce.number().int().min(1).max(100).default(50),
  PROVIDER_BREAKER_MIN_CALLS: z.coerce.number().int().min(1).max(10_000).default(10),
  PROVIDER_BREAKER_WINDOW_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  PROVIDER_BREAKER_RESET_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  /**
   * SMS sends in flight at once, per instance and in total (the shared consumer's max ack
   * pending): throughput is at most this many divided by the provider's answer time (64 at
   * Twilio's ~150 ms: ~400 SMS/s). Keep it within the provider account's concurrency limit
   * (Twilio: error 20429 beyond it), and alike on every instance.
   */
  SMS_CONCURRENCY: z.coerce.number().int().min(1).max(MAX_SEND_CONCURRENCY).default(DEFAULT_SEND_CONCURRENCY),
  /** Attempts per provider on transient errors before failing over to the next one. */
  SMS_SEND_ATTEMPTS: z.coerce.number().int().min(1).max(10).default(3),
  SMS_RETRY_BASE_MS: z.coerce.number().int().min(0).max(60_000).default(200),
  /**
   * Per-phone-number throttling across users: sends (SMS, calls) to one number of a tenant in any
   * PHONE_SEND_WINDOW_SECONDS; beyond that nothing is sent, and the users with that number answer
   * rate_limited until the oldest send leaves the window. 0 turns it off.
   */
  PHONE_MAX_SENDS_PER_WINDOW: z.coerce.number().int().min(0).max(10_000).default(10),
  PHONE_SEND_WINDOW_SECONDS: z.coerce.number().int().min(60).max(86_400).default(3600),
  /**
   * SMS pumping: sends to one block of 10,000 numbers (the number without its last 4 digits) per
   * tenant, and across tenants, in any PREFIX_SEND_WINDOW_SECONDS; beyond it nothing is sent to the
   * block (the challenge's status says delivery_failed). 0 turns either off.
   */
  PREFIX_MAX_SENDS_PER_WINDOW: z.coerce.number().int().min(0).max(1_000_000).default(200),
  PREFIX_GLOBAL_MAX_SENDS_PER_WINDOW: z.coerce.number().int().min(0).max(1_000_000).default(1000),
  PREFIX_SEND_WINDOW_SECONDS: z.coerce.number().int().min(60).max(86_400).default(3600),
  /**
   * The public base URL Twilio reaches this service's voice webhooks on (HTTPS in production), e.g.
   * https://mfa.example.com/hooks: Twilio fetches <base>/voice/twiml/<challenge>, posts keys to
   * <base>/voice/gather/… and the call's end to <base>/voice/status/…, and SMS delivery receipts to
   * <base>/sms/status/…; a reverse proxy forwards <base>/voice/ and <base>/sms/status/ to this
   * service's HTTP port. Without it (or Twilio's credentials), voice
   * challenges cannot be called: their status says delivery_failed and the IdP falls back.
   */
  VOICE_WEBHOOK_BASE_URL: optionalText.pipe(z.url({ protocol: /^https?$/ }).optional()),
  /**
   * Who places voice calls: `twilio` (the default when TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are
   * set), or `console` (development only, refused in production): no call is placed, the call is
   * printed, and whoever plays the phone (`npm run demo`, curl) answers the webhooks signed with
   * the public DEVELOPMENT_VOICE_WEBHOOK_TOKEN. `npm start` picks `console` when Twilio is not set.
   */
  VOICE_PROVIDER: optionalText.pipe(z.enum(['twilio', 'console']).optional()),
  /** Seconds a call rings before Twilio gives up (no-answer). */
  VOICE_RING_SECONDS: z.coerce.number().int().min(5).max(60).default(30),
  /**
   * Attempts to place a call while Twilio refuses for now (429, 5xx) or cannot be reached, with the
   * back-off of SMS_RETRY_BASE_MS; then the call is recorded as failed and the IdP falls back.
   */
  VOICE_CALL_ATTEMPTS: z.coerce.number().int().min(1).max(10).default(3),
  /**
   * FCM HTTP v1, for Android devices: the Firebase project's service-account key file (JSON), as
   * its content or its path (one of the two). The project is the file's project_id, the OAuth2
   * token endpoint its token_uri. Neither set: Android devices are poll-only.
   */
  FCM_SERVICE_ACCOUNT_JSON: optionalText,
  FCM_SERVICE_ACCOUNT_FILE: optionalText,
  FCM_API_URL: z.url({ protocol: /^https?$/ }).default('https://fcm.googleapis.com'),
  /**
   * APNs with token-based authentication, for iOS devices: the .p8 signing key (its path, or its
   * PEM content), its key id, the team id, and the app's bundle id (the topic); all or none. None:
   * iOS devices are poll-only. APNS_URL: https://api.sandbox.push.apple.com for development builds.
   * APNS_CA_FILE: a CA trusted besides the system's (a test server, a TLS-inspecting proxy).
   */
  APNS_KEY_FILE: optionalText,
  APNS_KEY: optionalText,
  APNS_KEY_ID: optionalText.pipe(z.string().regex(/^[A-Z0-9]{10}$/, 'must be the 10-character key id of the .p8 key').optional()),
  APNS_TEAM_ID: optionalText.pipe(z.string().regex(/^[A-Z0-9]{10}$/, 'must be the 10-character team id').optional()),
  APNS_TOPIC: optionalText.pipe(z.string().regex(/^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$/, "must be the app's bundle id, e.g. com.example.authenticator").optional()),
  APNS_URL: z.url({ protocol: /^https$/ }).default('https://api.push.apple.com'),
  APNS_CA_FILE: optionalText,
  // Like TWILIO_TIMEOUT_MS: a push ends while JetStream still holds the request for this instance.
  PUSH_TIMEOUT_MS: z.coerce.number().int().min(100).max(Consumers.dispatchPush.ackWaitSeconds * 500).default(10_000),
  /** Push notifications in flight at once (as SMS_CONCURRENCY, for FCM and APNs). */
  PUSH_CONCURRENCY: z.coerce.number().int().min(1).max(MAX_SEND_CONCURRENCY).default(DEFAULT_SEND_CONCURRENCY),
  /** Attempts per device on transient errors (429, 5xx, network) before giving the device up. */
  PUSH_SEND_ATTEMPTS: z.coerce.number().int().min(1).max(10).default(3),
  PUSH_RETRY_BASE_MS: z.coerce.number().int().min(0).max(60_000).default(200),
});
export type DispatchConfig = z.infer<typeof DispatchEnv> & KeyringConfig & { auth: AuthConfig };

/**
 * What this configuration would send in clear in production, one boot warning each: smpp://, and
 * http:// for Twilio's API, Twilio's webhooks and FCM where they are used. A warning, not a refusal:
 * a private link or a TLS-terminating sidecar can make plain TCP acceptable, and the tests' fakes
 * speak it. `smsProviders`: the SMS providers in use (SMS_PROVIDERS, as the factory read it).
 */
export function cleartextWarnings(config: DispatchConfig, smsProviders: readonly string[]): string[] {
  if (config.NODE_ENV !== 'production') return [];
  const warnings: string[] = [];
  const clear = (url: string | undefined) => url?.startsWith('http:') === true;
  if (smsProviders.includes('smpp') && config.SMPP_URL?.startsWith('smpp:')) {
    warnings.push('SMPP_URL is smpp:// (no TLS): the SMPP password and every code cross the network in clear unless the link is private; prefer smpps://');
  }
  // Twilio's API carries SMS (SMS_PROVIDERS) and calls (its credentials set).
  if ((smsProviders.includes('twilio') || config.TWILIO_ACCOUNT_SID) && clear(config.TWILIO_API_URL)) {
    warnings.push('TWILIO_API_URL is http:// (no TLS): the Twilio credentials and every SMS code cross the network in clear unless the link is private; prefer https://');
  }
  if (clear(config.VOICE_WEBHOOK_BASE_URL)) {
    warnings.push('VOICE_WEBHOOK_BASE_URL is http:// (no TLS): Twilio posts the keys callers press (PINs included) and SMS receipts in clear; publish the webhooks over https://');
  }
  if ((config.FCM_SERVICE_ACCOUNT_JSON || config.FCM_SERVICE_ACCOUNT_FILE) && clear(config.FCM_API_URL)) {
    warnings.push('FCM_API_URL is http:// (no TLS): the FCM access token and every notification cross the network in clear unless the link is private; prefer https://');
  }
  return warnings;
}

export const loadDispatchConfig = (env: NodeJS.ProcessEnv = process.env): DispatchConfig => ({
  ...loadConfig(DispatchEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
