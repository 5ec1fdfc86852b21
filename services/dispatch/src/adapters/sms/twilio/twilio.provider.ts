import { carrierFromContext, contextFromCarrier, SpanKind, withSpan } from '@mfa/telemetry';
import { Senders } from '../senders.js';
import { secondsLeft, SmsProviderError, type SmsMessage, type SmsProvider } from '../sms-provider.js';
import { postBody, requestLeftWhole, retryAfterMs } from '../../http-client.js';

interface TwilioOptions {
  /** Base URL, https://api.twilio.com unless pointed at a compatible API (or a test fake). */
  apiUrl: string;
  accountSid: string;
  authToken: string;
  fromNumber: string;
  /** Senders per destination country (SMS_SENDERS); others get `fromNumber`. */
  senders?: ReadonlyMap<string, string>;
  timeoutMs: number;
}

type TwilioResult =
  | { ok: true; sid: string }
  | { ok: false; transient: boolean; code?: number | string | undefined; message: string };

/**
 * Twilio's error texts may quote the destination ("The 'To' number +16632211116 is not a valid
 * phone number."). The text goes into SmsDeliveryFailed / VoiceCallFailed events, the logs and the
 * report's `deliveries.error`, none of which may hold a phone number in clear (it is sealed
 * personal data, and an event cannot be erased), so any run of 7 or more digits, with the
 * separators of a written number, becomes `[number]`. Twilio's own codes (5 digits) stay.
 */
export function withoutNumbers(text: string): string {
  return text.replace(/\+?\d(?:[\s().\-]*\d){6,}/g, '[number]');
}

/**
 * What a Twilio answer means for us. 429 and 5xx may succeed later; every other 4xx (invalid
 * number 21211, unverified or blocked destination, bad credentials 20003, …) will not, so the
 * next provider gets the message at once. Error bodies are Twilio's `{code, message, more_info,
 * status}`; their text is kept without the numbers it quotes (withoutNumbers).
 */
export function classifyTwilioResponse(status: number, body: unknown): TwilioResult {
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  if (status === 200 || status === 201) {
    const sid = fields.sid;
    if (typeof sid === 'string' && sid.length > 0) return { ok: true, sid };
    return { ok: false, transient: false, message: `Twilio answered ${status} without a message sid` };
  }
  const code = typeof fields.code === 'number' || typeof fields.code === 'string' ? fields.code : undefined;
  const detail = typeof fields.message === 'string' && fields.message.length > 0 ? withoutNumbers(fields.message) : 'no error message';
  const message = `Twilio ${status}${code !== undefined ? ` error ${code}` : ''}: ${detail}`.slice(0, 300);
  return { ok: false, transient: status === 429 || status >= 500, code, message };
}

/**
 * A request that got no answer (refused, reset, timed out) may succeed when tried again; one that
 * had reached Twilio whole may also have been carried out (`outcomeUnknown`: Twilio's REST API
 * takes no idempotency key).
 */
export function twilioNetworkError(cause: unknown, timeoutMs: number): SmsProviderError {
  const timedOut = (cause as Error | undefined)?.name === 'TimeoutError';
  const message = timedOut
    ? `Twilio did not answer within ${timeoutMs} ms`
    : `Twilio request failed: ${String((cause as Error | undefined)?.message ?? cause).slice(0, 200)}`;
  return new SmsProviderError(message, { provider: 'twilio', transient: true, outcomeUnknown: requestLeftWhole(cause), cause });
}

/** Twilio's longest ValidityPeriod (1 to 36,000 s; error 21624 otherwise), its default. */
const MAX_VALIDITY_SECONDS = 36_000;

/**
 * The form of a message: To, From, Body, the receipts' StatusCallback, and ValidityPeriod, the
 * seconds Twilio may keep it queued (its rate limits queue messages, 10 hours by default) before
 * it fails it (error 30036) instead of sending a code that has expired.
 */
export function twilioMessageForm(message: SmsMessage, from: string, now: number): Record<string, string> {
  const form: Record<string, string> = { To: message.to, From: from, Body: message.body };
  if (message.statusCallback) form.StatusCallback = message.statusCallback;
  if (message.expiresAt) form.ValidityPeriod = String(Math.min(secondsLeft(message.expiresAt, now), MAX_VALIDITY_SECONDS));
  return form;
}

/**
 * Twilio Programmable Messaging: POST /2010-04-01/Accounts/{AccountSid}/Messages.json with
 * form-encoded To, From, Body (twilioMessageForm) and HTTP Basic auth AccountSid:AuthToken.
 */
export class TwilioSmsProvider implements SmsProvider {
  readonly name = 'twilio';
  private readonly endpoint: URL;
  private readonly authorization: string;
  private readonly senders: Senders;

  constructor(private readonly options: TwilioOptions) {
    this.senders = new Senders(options.senders ?? new Map(), options.fromNumber);
    this.endpoint = new URL(`${options.apiUrl.replace(/\/+$/, '')}/2010-04-01/Accounts/${encodeURIComponent(options.accountSid)}/Messages.json`);
    this.authorization = `Basic ${Buffer.from(`${options.accountSid}:${options.authToken}`).toString('base64')}`;
    // The credentials must never show up in logs of this object.
    Object.defineProperty(this, 'authorization', { enumerable: false });
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  /** The sender for a destination: its country's (short code or long number), else the default. */
  senderFor(to: string): string {
    return this.senders.for(to);
  }

  send(message: SmsMessage): Promise<{ providerMessageId: string }> {
    const url = this.endpoint;
    return withSpan(
      'twilio send',
      {
        kind: SpanKind.CLIENT,
        parent: contextFromCarrier(message.trace),
        attributes: {
          'http.request.method': 'POST',
          'server.address': url.hostname,
          'url.path': url.pathname,
          'mfa.sms.provider': this.name,
        },
      },
      async (span) => {
        const headers: Record<string, string> = {
          authorization: this.authorization,
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
        };
        // The span's own context, so the vendor side (or its fake) continues this trace.
        const carrier = carrierFromContext();
        if (carrier.traceparent) headers.traceparent = carrier.traceparent;
        if (carrier.tracestate) headers.tracestate = carrier.tracestate;

        let status: number;
        let text: string;
        let retryAfter: string | undefined;
        try {
          const body = new URLSearchParams(twilioMessageForm(message, this.senderFor(message.to), Date.now())).toString();
          ({ status, text, retryAfter } = await postBody(this.endpoint, headers, body, this.options.timeoutMs));
        } catch (cause) {
          throw twilioNetworkError(cause, this.options.timeoutMs);
        }
        span.setAttribute('http.response.status_code', status);

        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        const result = classifyTwilioResponse(status, body);
        if (!result.ok) {
          if (result.code !== undefined) span.setAttribute('mfa.sms.provider_error_code', String(result.code));
          throw new SmsProviderError(result.message, { provider: this.name, transient: result.transient, code: result.code, status, vendorAnswered: true, retryAfterMs: retryAfterMs(retryAfter, Date.now()) });
        }
        return { providerMessageId: result.sid };
      },
    );
  }
}
