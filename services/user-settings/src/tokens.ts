/** Nest injection tokens of this service (classes are their own tokens). */
export const CONFIG = Symbol('USER_SETTINGS_CONFIG');
export const KEYRING = Symbol('KEYRING');
export const REDIS = Symbol('REDIS');
