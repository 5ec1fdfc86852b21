import type { RedisClient } from '@mfa/projection';
import { randomBytes } from 'node:crypto';
import { hashCode, type Keyring } from '@mfa/crypto';
import type { Method } from '@mfa/contracts';

/** What an Access-Challenge's State stands for: one code to type, for one user, of one client and tenant. */
export interface PendingCode {
  tenantId: string;
  /** The client's range (RADIUS_CLIENTS cidr): a State is only good from the client it was given to. */
  client: string;
  userId: string;
  challengeId: string;
  method: Method;
  expiresAt: string;
}

/** Who may present a State: the tenant, client and user it was given to. */
export type StateOwner = Pick<PendingCode, 'tenantId' | 'client' | 'userId'>;

/**
 * The States of Access-Challenges, in Redis so that any instance can take the answer (the NAS
 * may send it to another server of its list). A State is 16 random octets; Redis keeps it only
 * under a keyed hash of the State together with its tenant, client and user, so a copy of Redis
 * gives no usable State, and a State presented by another user, client or tenant finds nothing
 * (it is refused, and stays good for its own user). Taking one deletes it (GETDEL): single use,
 * also between instances. It expires with its challenge. One key per State, hash tag included:
 * one slot on Redis Cluster.
 */
export class StateStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
  ) {}

  private key(state: Buffer, owner: StateOwner): string {
    const bound = JSON.stringify([owner.tenantId, owner.client, owner.userId, state.toString('base64url')]);
    return `mfa:radius:{${hashCode(this.keyring, 'radius-state', bound).toString('hex').slice(0, 32)}}`;
  }

  /** A new State for `code`, alive until the challenge expires (undefined when it already has). */
  async issue(code: PendingCode, now: number): Promise<Buffer | undefined> {
    const ttl = Date.parse(code.expiresAt) - now;
    if (!(ttl > 0)) return undefined;
    const state = randomBytes(16);
    await this.redis.set(this.key(state, code), JSON.stringify(code), 'PX', ttl);
    return state;
  }

  /**
   * The code a State stands for, taken (never again), or undefined: unknown, already used,
   * expired, or given to another owner (then left as it is).
   */
  async take(state: Buffer, owner: StateOwner): Promise<PendingCode | undefined> {
    if (state.length === 0 || state.length > 253) return undefined;
    const value = await this.redis.getdel(this.key(state, owner));
    if (value === null) return undefined;
    try {
      return JSON.parse(value) as PendingCode;
    } catch {
      return undefined;
    }
  }

  /**
   * Puts a taken State back when its answer could not be decided (the challenge API did not
   * answer): the user's retry with a new request still finds it. Only for what remains of its life.
   */
  async restore(state: Buffer, code: PendingCode, now: number): Promise<void> {
    const ttl = Date.parse(code.expiresAt) - now;
    if (ttl > 0) await this.redis.set(this.key(state, code), JSON.stringify(code), 'PX', ttl, 'NX');
  }
}
