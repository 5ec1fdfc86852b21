/** Injection tokens that libs/service-kit provides to every service (classes are their own tokens). */
export const NATS = Symbol('NATS');
export const LOGGER = Symbol('LOGGER');
export const REDIS = Symbol('REDIS');
export const HEALTH_CHECKS = Symbol('HEALTH_CHECKS');
