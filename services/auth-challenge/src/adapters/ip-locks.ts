import { Inject, Injectable } from '@nestjs/common';
import type { ConsumerMessages, JsMsg } from '@nats-io/jetstream';
import { addressInRanges, EventSubjects, ipLockKey, parseEvent, Streams, type TenantSettings } from '@mfa/contracts';
import { followSubjects, type NatsClients } from '@mfa/messaging';
import { LOGGER, NATS } from '@mfa/service-kit';
import { counter, type Logger } from '@mfa/telemetry';

const dryRunStarts = counter('mfa_ip_lockout_dry_run_starts_total', 'Starts from a client address that per-IP lockout would have denied, had the dry run been off');

interface Lock {
  until: number;
  dryRun: boolean;
}

/** Throttles end by themselves within a window (minutes): a tenant's map never holds more than its busy addresses. */
type Throttles = Map<string, Map<string, number>>;

/** What folding needs of a followed message: its body is read inside the fold's guard (a non-JSON body is skipped, not thrown). */
type Followed = Pick<JsMsg, 'json' | 'seq'>;

/**
 * The fraud service's per-IP locks, held in memory by every instance from MFA_FRAUD (an ordered
 * consumer, last event of each address, then live), so that start checks a client IP without a
 * round trip. Not in Redis next to the user's keys: an address's lock concerns every user, and a
 * script may only touch keys of one hash slot (Redis Cluster). The locks present at boot are read
 * before the first request; one recorded later reaches every instance within milliseconds.
 */
@Injectable()
export class IpLocks {
  /** By tenant, then by lock key (ipLockKey). */
  private readonly locks = new Map<string, Map<string, Lock>>();
  /** fraud's per-IP throttles (IpThrottled): by tenant, then by lock key, the end (ms). */
  private readonly throttles: Throttles = new Map();
  private messages: ConsumerMessages | undefined;
  private throttleMessages: ConsumerMessages | undefined;

  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /**
   * Whether a start from `clientIp` must be denied: a lock of the address in force, the tenant's
   * lockout on and out of dry run, and the address not on its never-block list (as the settings
   * say now, not when the lock was recorded). The list is matched against the client's own address,
   * not its lock key: a never-block address is never refused, even by a lock of its /64 recorded
   * before it was listed, while the rest of that /64 stays locked. A tenant without locks costs
   * one map lookup; the list is read only for a lock in force.
   */
  locked(tenantId: string, settings: TenantSettings, clientIp: string | undefined, now: number): boolean {
    const tenant = this.locks.get(tenantId);
    if (!tenant || !clientIp || !settings.ipLockout.enabled) return false;
    const key = ipLockKey(clientIp);
    const lock = key === undefined ? undefined : tenant.get(key);
    if (!lock || lock.until <= now) return false;
    if (addressInRanges(clientIp, settings.ipLockout.neverBlock)) return false;
    if (lock.dryRun || settings.ipLockout.dryRun) {
      dryRunStarts.inc();
      return false;
    }
    return true;
  }

  /**
   * Until when starts that send something from `clientIp` answer rate_limited (ms), or undefined:
   * fraud's throttle of the address in force, unless the address itself is on the tenant's
   * never-block list (as for locks).
   */
  throttledUntil(tenantId: string, settings: TenantSettings, clientIp: string | undefined, now: number): number | undefined {
    const tenant = this.throttles.get(tenantId);
    if (!tenant || !clientIp) return undefined;
    const key = ipLockKey(clientIp);
    const until = key === undefined ? undefined : tenant.get(key);
    if (until === undefined || until <= now) return undefined;
    if (addressInRanges(clientIp, settings.ipLockout.neverBlock)) return undefined;
    return until;
  }

  private foldThrottle(msg: Followed): void {
    try {
      const event = parseEvent(msg.json());
      if (event.type !== 'IpThrottled') return;
      let tenant = this.throttles.get(event.tenantId);
      if (!tenant) this.throttles.set(event.tenantId, (tenant = new Map()));
      const until = Date.parse(event.data.until);
      // Events of one address arrive in order; an older end never shortens a later one.
      if ((tenant.get(event.data.ip) ?? 0) < until) tenant.set(event.data.ip, until);
      this.prune(Date.now());
    } catch (error) {
      this.log.error('unreadable per-IP throttle event skipped', { stream: Streams.throttles.name, seq: msg.seq, error });
    }
  }

  private fold(msg: Followed): void {
    try {
      const event = parseEvent(msg.json());
      if (event.type !== 'IpLocked' && event.type !== 'IpUnlocked') return;
      let tenant = this.locks.get(event.tenantId);
      if (event.type === 'IpLocked') {
        if (!tenant) this.locks.set(event.tenantId, (tenant = new Map()));
        tenant.set(event.data.ip, { until: Date.parse(event.data.until), dryRun: event.data.dryRun });
      } else {
        tenant?.delete(event.data.ip);
        if (tenant?.size === 0) this.locks.delete(event.tenantId);
      }
      this.prune(Date.now());
    } catch (error) {
      this.log.error('unreadable per-IP lock event skipped', { stream: Streams.fraud.name, seq: msg.seq, error });
    }
  }

  /** Drops locks that have ended (at most every minute), so memory holds only those in force. */
  private prunedAt = 0;
  private prune(now: number): void {
    if (now - this.prunedAt < 60_000) return;
    this.prunedAt = now;
    for (const [tenantId, tenant] of this.locks) {
      for (const [key, lock] of tenant) if (lock.until <= now) tenant.delete(key);
      if (tenant.size === 0) this.locks.delete(tenantId);
    }
    for (const [tenantId, tenant] of this.throttles) {
      for (const [key, until] of tenant) if (until <= now) tenant.delete(key);
      if (tenant.size === 0) this.throttles.delete(tenantId);
    }
  }

  async start(timeoutMs = 10_000): Promise<void> {
    this.messages = await followSubjects(
      this.nats.js,
      Streams.fraud.name,
      EventSubjects.allFraudIps,
      (msg) => this.fold(msg),
      timeoutMs,
      undefined,
      { lastPerSubject: true, log: this.log },
    );
    this.throttleMessages = await followSubjects(
      this.nats.js,
      Streams.throttles.name,
      EventSubjects.allIpThrottles,
      (msg) => this.foldThrottle(msg),
      timeoutMs,
      undefined,
      { lastPerSubject: true, log: this.log },
    );
  }

  async stop(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
    await this.throttleMessages?.close().catch(() => undefined);
  }
}
