export const KEYRING = Symbol('KEYRING');
export const AUTH_CONFIG = Symbol('AUTH_CONFIG');
export const SERVER_IDENTITY = Symbol('SERVER_IDENTITY');
export const REDIS = Symbol('REDIS');
