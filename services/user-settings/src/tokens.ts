/** Injection tokens of user-settings (classes are their own tokens; REDIS, NATS, LOGGER come from @mfa/service-kit). */
export const KEYRING = Symbol('KEYRING');
