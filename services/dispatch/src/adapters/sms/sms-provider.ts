import type { HealthCheck } from '@mfa/service-kit';
import type { Logger, TraceCarrier } from '@mfa/telemetry';

export interface SmsMessage {
  /** E.164. */
  readonly to: string;
  /** Contains the code: never log it (the console provider, development only, is the exception). */
  readonly body: string;
  /** Trace context of the caller, continued by the provider's span and sent on to the vendor. */
  readonly trace?: TraceCarrier;
  /** Where the provider posts the message's delivery receipts, when this service has a public webhook URL. */
  readonly statusCallback?: string | undefined;
  /**
   * When the code expires: a provider (or the network behind it) that still holds the message
   * then drops it, rather than deliver (and bill) a dead code.
   */
  readonly expiresAt?: Date | undefined;
}

/** Whole seconds until `expiresAt` (at least 1): how long a queued message stays worth delivering. */
export function secondsLeft(expiresAt: Date, now: number): number {
  return Math.max(1, Math.ceil((expiresAt.getTime() - now) / 1000));
}

/** A message the vendor took. */
export interface SmsSendResult {
  providerMessageId: string;
  /**
   * The vendor took the message without naming it (an SMSC's submit_sm_resp with command_status
   * OK and no message_id): `providerMessageId` is made up here, and no receipt can ever name it.
   */
  unnamed?: boolean | undefined;
}

/** One SMS vendor. Implementations throw `SmsProviderError` and nothing else. */
export interface SmsProvider {
  readonly name: string;
  send(message: SmsMessage): Promise<SmsSendResult>;
}

/** A final delivery receipt, as a provider's session reports it: only the provider's message id names the SMS. */
export interface SmsReceipt {
  provider: string;
  providerMessageId: string;
  status: 'delivered' | 'undelivered';
  /** The network's or SMSC's error, when it gave one. */
  errorCode?: string | undefined;
  /**
   * When the provider took the message, as far as the receipt says (SMPP's `submit date`, in a
   * time zone of the SMSC's: a window of instants, ms). A receipt whose window misses the time its
   * route was recorded is of another message under a reused id.
   */
  submitted?: { from: number; to: number } | undefined;
}

/**
 * A provider that holds a connection of its own (SMPP): started and stopped with the service,
 * shown in /health, and its delivery receipts arrive on that connection naming only its message
 * id, so the id of every message it accepts is recorded with the challenge (ReceiptRoutes).
 */
export interface SessionSmsProvider extends SmsProvider {
  /** Connects, and keeps connecting. A rejected `onReceipt` is answered so that the SMSC tries the receipt again later. */
  start(context: { log: Logger; onReceipt: (receipt: SmsReceipt) => Promise<void> }): void;
  stop(): Promise<void>;
  /** Informational: a provider that is down leaves the others. */
  healthCheck(): HealthCheck;
}

export function hasSession(provider: SmsProvider): provider is SessionSmsProvider {
  return typeof (provider as Partial<SessionSmsProvider>).start === 'function';
}

interface SmsProviderErrorDetails {
  provider: string;
  /** True when the same request may succeed later (rate limit, vendor outage, network). */
  transient: boolean;
  /** The vendor's error code, when it gave one (e.g. Twilio 21211). */
  code?: string | number | undefined;
  /** HTTP status, for HTTP vendors. */
  status?: number | undefined;
  /**
   * The vendor's own answer to this request made the error (an HTTP status, an SMSC's
   * command_status): proof that it is reachable and answering, which a half-open circuit breaker
   * needs to close. False for errors made here, before or without such an answer.
   */
  vendorAnswered?: boolean | undefined;
  /**
   * The request reached the vendor whole and no answer came (a timeout, a connection cut while
   * waiting): it may have been carried out. Sending it again may do it twice.
   */
  outcomeUnknown?: boolean | undefined;
  /** How long the vendor asked to be left alone (Retry-After), ms. */
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

export class SmsProviderError extends Error {
  override name = 'SmsProviderError';
  readonly provider: string;
  readonly transient: boolean;
  readonly code: string | number | undefined;
  readonly status: number | undefined;
  readonly outcomeUnknown: boolean;
  readonly vendorAnswered: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(message: string, details: SmsProviderErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.provider = details.provider;
    this.transient = details.transient;
    this.code = details.code;
    this.status = details.status;
    this.outcomeUnknown = details.outcomeUnknown ?? false;
    this.vendorAnswered = details.vendorAnswered ?? false;
    this.retryAfterMs = details.retryAfterMs;
  }
}
