/** Injection tokens of reporting (classes are their own tokens; NATS, LOGGER come from @mfa/service-kit). */
export const PG_POOL = Symbol('PG_POOL');
/** The pool report queries read from: DATABASE_READ_URL's replica, or PG_POOL itself. */
export const PG_READ_POOL = Symbol('PG_READ_POOL');
