/** Injection tokens of reporting (classes are their own tokens; NATS, LOGGER come from @mfa/service-kit). */
export const PG_POOL = Symbol('PG_POOL');
