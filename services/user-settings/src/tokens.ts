/** Injection tokens of user-settings (classes are their own tokens; REDIS, NATS, LOGGER come from @mfa/service-kit). */
export const CONFIG = Symbol('USER_SETTINGS_CONFIG');
export const KEYRING = Symbol('KEYRING');
