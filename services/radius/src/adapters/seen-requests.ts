import { createHash } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';

/** Whose request it is: the tenant and the client entry (its cidr as written) it came through. */
export interface RequestSender {
  tenantId: string;
  client: string;
}

/**
 * The Access-Requests already taken, by Request Authenticator: 16 octets the NAS draws anew for
 * every request (RFC 2865 §3: "globally and temporally unique"), kept the same only for its
 * retransmissions. The Message-Authenticator signs it with the rest of the packet, so nobody
 * without the secret can make a new request with it, but anyone who captured a request can send
 * it again, unchanged and still valid: from another source port, to another instance, or after
 * the in-memory duplicate cache forgot it. Each one seen here started a second challenge (a
 * second SMS, call or push to the user: a nuisance, toll costs and an MFA-fatigue lever), even
 * though its answer goes to the NAS, not to whoever sent it.
 *
 * So a request is taken once per client within `windowMs` across all instances (SET NX), in
 * Redis so that a restart or another instance does not forget it. Past the window the key
 * expires (a bound on Redis memory): a replay then starts a challenge again, as a new request
 * of the user would, within the tenant's throttles. One key per request, its own hash tag.
 */
export class SeenRequests {
  constructor(
    private readonly redis: RedisClient,
    private readonly windowMs: number,
  ) {}

  private key(sender: RequestSender, authenticator: Buffer): string {
    // Not secret (the authenticator travels in clear): a plain hash keeps the key short and
    // spreads the keys over the cluster's slots.
    const bound = JSON.stringify([sender.tenantId, sender.client, authenticator.toString('base64url')]);
    return `mfa:radius:seen:{${createHash('sha256').update(bound).digest('hex').slice(0, 32)}}`;
  }

  /** True the first time this client's request is seen within the window; false for a replay. */
  async firstSight(sender: RequestSender, authenticator: Buffer): Promise<boolean> {
    return (await this.redis.set(this.key(sender, authenticator), '1', 'PX', this.windowMs, 'NX')) === 'OK';
  }

  /**
   * Forgets a request this instance took but left unanswered (the challenge API or Redis did not
   * answer): the NAS may send the very same packet to its next server (RFC 2865 §2.5 allows it
   * when the servers share the secret, as the instances do), which must take it.
   */
  async forget(sender: RequestSender, authenticator: Buffer): Promise<void> {
    await this.redis.del(this.key(sender, authenticator));
  }
}
