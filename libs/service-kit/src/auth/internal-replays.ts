import { unavailable } from '@mfa/contracts';
import { INTERNAL_SIGNATURE_MAX_AGE_MS } from '@mfa/crypto';
import type { RedisClient } from '@mfa/projection';

/**
 * Each signed internal request is answered once. A signature (`Mfa-Internal`, libs/crypto
 * internal-requests.ts) is good for INTERNAL_SIGNATURE_MAX_AGE_MS either side of the receiver's
 * clock, so a copy of a request, sent again by whoever could read it on NATS, would be answered
 * again within that window: a wrong voice PIN counted a second time, an activation tried twice. The
 * signature's tag is kept in Redis (`mfa:{int:<tag>}:seen`, one key in its own slot) until no
 * receiver whose clock is within INTERNAL_SIGNATURE_MAX_AGE_MS of this one could accept it; a request that finds it already there is refused.
 *
 * The senders never send one signature twice: a request that met no responders reached nobody, and
 * a request sent again after a timeout is signed again.
 */
export class InternalReplays {
  constructor(private readonly redis: RedisClient) {}

  /** Whether this is the first request with `signature` (a header already checked); records it. */
  async firstUse(signature: string, now: number): Promise<boolean> {
    const [, at, tag] = signature.split('.') as [string, string, string];
    // Accepted up to INTERNAL_SIGNATURE_MAX_AGE_MS past its time by a receiver on time, and later by
    // one whose clock is behind: kept as long again, for the receivers within that much of this one.
    const ttlMs = Math.max(Number(at) + 2 * INTERNAL_SIGNATURE_MAX_AGE_MS - now, 1_000);
    let reply: string | null;
    try {
      reply = await this.redis.set(`mfa:{int:${tag}}:seen`, '1', 'PX', ttlMs, 'NX');
    } catch (error) {
      throw unavailable('cannot record the internal request; try again', error);
    }
    return reply === 'OK';
  }
}
