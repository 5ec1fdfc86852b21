/** Injection tokens of dispatch (classes are their own tokens; NATS, LOGGER come from @mfa/service-kit). */
export const SMS_PROVIDERS = Symbol('SMS_PROVIDERS');
export const VOICE_WEBHOOK_BASE = Symbol('VOICE_WEBHOOK_BASE');
export const PUSH_PROVIDERS = Symbol('PUSH_PROVIDERS');
export const PUSH_BREAKERS = Symbol('PUSH_BREAKERS');
