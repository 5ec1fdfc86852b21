import { SpanKind, withSpan } from '@mfa/telemetry';
import { SmsProviderError } from '../sms/sms-provider.js';
import { postBody, retryAfterMs } from '../http-client.js';
import { classifyTwilioResponse, twilioNetworkError } from '../sms/twilio/twilio.provider.js';

export interface CallRequest {
  to: string;
  from: string;
  /** Where Twilio fetches the call's TwiML once it is answered. */
  url: string;
  /** Where Twilio posts the call's final status (completed, busy, no-answer, failed, canceled). */
  statusCallback: string;
  /** Seconds to let the phone ring before Twilio gives up (no-answer). */
  ringSeconds: number;
  /** Keys to send once the call connects (an extension: `ww1234`, each w half a second). */
  sendDigits?: string | undefined;
}

/**
 * Calls through Twilio Programmable Voice: `POST /2010-04-01/Accounts/{Sid}/Calls.json` with `To`,
 * `From`, `Url` (TwiML, fetched when the call is answered) and `StatusCallback`. Errors are
 * classified as the SMS adapter's (429 and 5xx transient; other 4xx final).
 */
export class TwilioVoiceProvider {
  readonly name = 'twilio';
  private readonly endpoint: URL;
  private readonly authorization: string;

  constructor(private readonly options: { apiUrl: string; accountSid: string; authToken: string; timeoutMs: number }) {
    this.endpoint = new URL(`${options.apiUrl.replace(/\/+$/, '')}/2010-04-01/Accounts/${encodeURIComponent(options.accountSid)}/Calls.json`);
    this.authorization = `Basic ${Buffer.from(`${options.accountSid}:${options.authToken}`).toString('base64')}`;
    Object.defineProperty(this, 'authorization', { enumerable: false });
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  placeCall(call: CallRequest): Promise<{ callSid: string }> {
    return withSpan('twilio call', { kind: SpanKind.CLIENT, attributes: { 'http.request.method': 'POST', 'server.address': this.endpoint.hostname } }, async () => {
      const body = new URLSearchParams({
        To: call.to,
        From: call.from,
        Url: call.url,
        Method: 'POST',
        StatusCallback: call.statusCallback,
        StatusCallbackMethod: 'POST',
        Timeout: String(call.ringSeconds),
        ...(call.sendDigits ? { SendDigits: call.sendDigits } : {}),
      }).toString();
      let answer: { status: number; text: string; retryAfter?: string | undefined };
      try {
        answer = await postBody(this.endpoint, { authorization: this.authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body, this.options.timeoutMs);
      } catch (cause) {
        throw twilioNetworkError(cause, this.options.timeoutMs);
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(answer.text);
      } catch {
        parsed = undefined;
      }
      const result = classifyTwilioResponse(answer.status, parsed);
      if (!result.ok) {
        // Twilio: a request answered 429 was not carried out (safe to make again, after Retry-After).
        throw new SmsProviderError(result.message, { provider: this.name, transient: result.transient, code: result.code, status: answer.status, retryAfterMs: retryAfterMs(answer.retryAfter, Date.now()) });
      }
      return { callSid: result.sid };
    });
  }
}
