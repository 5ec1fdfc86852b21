import { counter, histogram } from '@mfa/telemetry';

/** One per send attempt: outcome `sent`, `transient_error` or `permanent_error`; `expired` (provider `none`) when none was made. */
export const smsSends = counter('mfa_sms_send_total', 'SMS send attempts, by provider and outcome', ['provider', 'outcome']);

export const smsProviderDuration = histogram(
  'mfa_sms_provider_duration_seconds',
  'Time an SMS provider took to accept or refuse a message',
  ['provider'],
  [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
);
