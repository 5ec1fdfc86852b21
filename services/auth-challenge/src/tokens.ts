/** Injection tokens of auth-challenge (classes are their own tokens; REDIS, NATS, LOGGER come from @mfa/service-kit). */
export const CONFIG = Symbol('AUTH_CHALLENGE_CONFIG');
export const SERVER_IDENTITY = Symbol('SERVER_IDENTITY');
export const CODE_GENERATOR = Symbol('CODE_GENERATOR');
/** `(tenantId, userId) => void`: tells user-settings that a user was missing from an incomplete projection. */
export const PROJECTION_SIGNAL = Symbol('PROJECTION_SIGNAL');
/** The most decisions a slot's outbox holds (config OUTBOX_MAX_PER_SLOT; ChallengeStore). */
export const OUTBOX_MAX_PER_SLOT = Symbol('OUTBOX_MAX_PER_SLOT');
