import { counter, histogram } from '@mfa/telemetry';

/**
 * One per send attempt: outcome `sent`, `transient_error`, `permanent_error`, or `unanswered_error` (the
 * provider got the SMS and never answered: it may have gone, and is tried again); `expired` (provider `none`) when none was made;
 * `tenant_deleted` (provider `none`, once per request): not sent, nor recorded, its tenant deleted (tenants.delete).
 */
export const smsSends = counter('mfa_sms_send_total', 'SMS send attempts, by provider and outcome', ['provider', 'outcome']);

/**
 * An SMS given a message id that an SMS of another challenge still has (the route of its receipts
 * is remembered for a day): an SMSC that reuses ids (a short counter, one reset at restart).
 */
export const smsMessageIdsReused = counter(
  'mfa_sms_message_ids_reused_total',
  'SMS whose provider message id an SMS of another challenge still had: receipts naming it are attributed to neither',
  ['provider'],
);

export const smsProviderDuration = histogram(
  'mfa_sms_provider_duration_seconds',
  'Time an SMS provider took to accept or refuse a message',
  ['provider'],
  [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
);

/**
 * One per device and attempt: outcome `sent`, `transient_error`, `permanent_error`,
 * `invalid_token` (the device must activate again), `config_error` (refused for our setting: APNS_TOPIC,
 * APNS_URL, FCM's project; no device marked), `circuit_open`, `duplicate_suppressed`; with
 * provider `none`: `polling` (a device no provider reaches: it polls), `expired`, `skipped` (a
 * device waiting to activate again, or whose token does not open), `tenant_deleted` (once per
 * request: nothing more pushed nor recorded, its tenant deleted by tenants.delete).
 */
export const pushSends = counter('mfa_push_send_total', 'Push notifications to devices, by provider and outcome', ['provider', 'outcome']);

export const pushProviderDuration = histogram(
  'mfa_push_provider_duration_seconds',
  'Time a push provider took to accept or refuse a notification',
  ['provider'],
  [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
);
