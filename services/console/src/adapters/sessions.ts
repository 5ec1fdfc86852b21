import { createHash, randomBytes } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';

/** The operator signed in: who, with which roles, and the CSRF token of their forms. */
export interface Session {
  operator: { sub: string; email?: string; name?: string };
  roles: string[];
  csrf: string;
  createdAt: number;
  /** How they signed in: the identity provider, or the development form. */
  via: 'oidc' | 'dev';
  /** The identity provider's ID token, the hint of the sign-out there (OIDC_END_SESSION). */
  idToken?: string;
}

const ABSOLUTE_MS = 12 * 3_600_000;

/**
 * Operators' sessions in Redis, keyed by a SHA-256 of the session id (the cookie's value, 256 bits
 * from the CSPRNG), so a Redis dump holds no usable session. A session ends after the idle time,
 * 12 hours after sign-in in any case, or at sign-out; every console instance sees the same ones.
 */
export class Sessions {
  constructor(
    private readonly redis: RedisClient,
    private readonly idleSeconds: number,
  ) {}

  private key(id: string): string {
    return `mfa:console:session:${createHash('sha256').update(id).digest('base64url')}`;
  }

  async create(session: Omit<Session, 'csrf' | 'createdAt'>, now: number): Promise<string> {
    const id = randomBytes(32).toString('base64url');
    const record: Session = { ...session, csrf: randomBytes(32).toString('base64url'), createdAt: now };
    await this.redis.set(this.key(id), JSON.stringify(record), 'EX', this.idleSeconds);
    return id;
  }

  /** The session of this id, its idle time renewed; undefined when unknown, expired or malformed. */
  async load(id: string | undefined, now: number): Promise<Session | undefined> {
    if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return undefined;
    const key = this.key(id);
    const raw = await this.redis.getex(key, 'EX', this.idleSeconds);
    if (!raw) return undefined;
    const session = JSON.parse(raw) as Session;
    if (now - session.createdAt > ABSOLUTE_MS) {
      await this.redis.del(key);
      return undefined;
    }
    return session;
  }

  async destroy(id: string | undefined): Promise<void> {
    if (id && /^[A-Za-z0-9_-]{43}$/.test(id)) await this.redis.del(this.key(id));
  }
}
