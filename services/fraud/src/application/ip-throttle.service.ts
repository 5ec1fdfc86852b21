import { EventSubjects, ipLockKey, lockKeyInRanges, type EventOf } from '@mfa/contracts';
import { createEvent, eventIdOf, type EventPublisher } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import type { IpCounters } from '../adapters/ip-counters.js';
import type { IpLockoutService } from './ip-lockout.service.js';

const throttled = counter('mfa_ip_throttles_total', 'Client addresses whose starts that send something reached the per-IP limit (IpThrottled recorded)');
const counted = counter('mfa_ip_starts_counted_total', 'Starts that send something counted per client address for per-IP throttling');

export interface IpThrottlePolicy {
  /** Starts that send something (SMS, voice, push) per client address in any window; 0: off. */
  maxStarts: number;
  windowSeconds: number;
}

/**
 * Per-IP throttling across users: every start that sends something (an SMS, a call, a push) is
 * counted against its client address in a sliding window (Redis). When the window holds the
 * operator's maximum, IpThrottled records until when the address is full: until the oldest start
 * leaves the window. Every auth-challenge instance holds these in memory (IpLocks) and its start
 * script answers such starts rate_limited until then, with the time to wait. Counted after the
 * fact, from the challenge stream: the few starts decided while an IpThrottled is on its way (a
 * few milliseconds) pass; the per-user and per-phone limits bound what they can cost.
 */
export class IpThrottleService {
  constructor(
    private readonly policy: IpThrottlePolicy,
    private readonly counters: IpCounters,
    private readonly lockout: Pick<IpLockoutService, 'tenantSettings'>,
    private readonly publisher: EventPublisher,
    private readonly logger: Logger,
  ) {}

  async countStart(event: EventOf<'ChallengeStarted'>, now: Date): Promise<void> {
    const { maxStarts, windowSeconds } = this.policy;
    if (maxStarts === 0) return;
    const clientIp = event.data.clientIp;
    const ip = clientIp ? ipLockKey(clientIp) : undefined;
    if (!ip) return;
    const at = new Date(event.occurredAt);
    // A start older than the window (a consumer catching up) no longer counts.
    if (now.getTime() - at.getTime() > windowSeconds * 1000) return;
    const window = await this.counters.countStart(event.tenantId, ip, event.id, at, now, windowSeconds);
    counted.inc();
    if (window.starts < maxStarts) return;
    const settings = await this.lockout.tenantSettings(event.tenantId, now);
    // The tenant's never-block list (its own gateways) is never throttled either.
    if (settings && lockKeyInRanges(ip, settings.ipLockout.neverBlock)) return;
    const until = new Date(window.oldestMs + windowSeconds * 1000);
    if (until.getTime() <= now.getTime()) return;
    const subject = EventSubjects.ipThrottle(event.tenantId, ip);
    const recorded = createEvent('IpThrottled', 1, {
      // One event per address and end: a redelivered start, or another instance, records it once.
      id: eventIdOf(`ip-throttle:${subject}:${until.getTime()}`, 4),
      tenantId: event.tenantId,
      aggregateId: ip,
      now,
      metadata: { causationId: event.id },
      data: { ip, until: until.toISOString(), starts: window.starts, windowSeconds },
    });
    await this.publisher.publish(subject, recorded);
    throttled.inc();
    this.logger.warn('per-IP throttle: an address reached its limit of starts that send something', {
      tenantId: event.tenantId,
      ip,
      starts: window.starts,
      until: recorded.data.until,
    });
  }
}
