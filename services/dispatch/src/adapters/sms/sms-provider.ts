import type { TraceCarrier } from '@mfa/telemetry';

export interface SmsMessage {
  /** E.164. */
  readonly to: string;
  /** Contains the code: never log it (the console provider, development only, is the exception). */
  readonly body: string;
  /** Trace context of the caller, continued by the provider's span and sent on to the vendor. */
  readonly trace?: TraceCarrier;
  /** Where the provider posts the message's delivery receipts, when this service has a public webhook URL. */
  readonly statusCallback?: string | undefined;
}

/** One SMS vendor. Implementations throw `SmsProviderError` and nothing else. */
export interface SmsProvider {
  readonly name: string;
  send(message: SmsMessage): Promise<{ providerMessageId: string }>;
}

interface SmsProviderErrorDetails {
  provider: string;
  /** True when the same request may succeed later (rate limit, vendor outage, network). */
  transient: boolean;
  /** The vendor's error code, when it gave one (e.g. Twilio 21211). */
  code?: string | number | undefined;
  /** HTTP status, for HTTP vendors. */
  status?: number | undefined;
  cause?: unknown;
}

export class SmsProviderError extends Error {
  override name = 'SmsProviderError';
  readonly provider: string;
  readonly transient: boolean;
  readonly code: string | number | undefined;
  readonly status: number | undefined;

  constructor(message: string, details: SmsProviderErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.provider = details.provider;
    this.transient = details.transient;
    this.code = details.code;
    this.status = details.status;
  }
}
