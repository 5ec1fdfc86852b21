import {
  conflict,
  EventSubjects,
  ipLockKey,
  parseEvent,
  Streams,
  type EventOf,
  type FraudIpEvent,
  type FraudIpsListReply,
  type FraudIpsListRequest,
  type FraudIpsUnlockReply,
  type FraudIpsUnlockRequest,
  type TenantSettings,
} from '@mfa/contracts';
import { userTag, type Keyring } from '@mfa/crypto';
import { ConcurrencyError, readOnce, type NatsClients } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import type { FraudLog } from '../adapters/fraud-log.js';
import type { IpCounters } from '../adapters/ip-counters.js';
import type { UserDirectory } from '../adapters/user-directory.js';
import { decideIp, evolveIpLock, initialIpLockState, type IpCommand, type IpWindow } from '../domain/ip-lockout.js';
import type { Actor } from '../domain/user-block.js';
import type { BlocksService } from './blocks.service.js';

const MAX_APPEND_ATTEMPTS = 5;
/** How long a tenant's settings are reused while counting denials (an attack brings thousands a second). */
const SETTINGS_TTL_MS = 5_000;

const ipLocks = counter('mfa_ip_lockouts_total', 'Client addresses locked by the per-IP lockout (dry_run: recorded only)', ['dry_run']);
const ipDenials = counter('mfa_ip_denials_counted_total', 'Denials counted per client address for the per-IP lockout');

/** A denial of a challenge, as the challenge stream records it (wrong code, attempts used up, expired unanswered). */
export type DenialEvent = EventOf<'ChallengeCodeRejected' | 'ChallengeAttemptsExhausted' | 'ChallengeExpired'>;

/**
 * Per-IP lockout across users: every denial (wrong code, challenge expired unanswered) is counted
 * against the address the challenge was started from; when the tenant's threshold is reached
 * within its window the address's aggregate records IpLocked, which every auth-challenge instance
 * holds in memory and checks at start (no extra round trip). fraud.ips.list shows the locks,
 * fraud.ips.unlock lifts one.
 */
export class IpLockoutService {
  private readonly settings = new Map<string, { settings: TenantSettings | undefined; until: number }>();

  constructor(
    private readonly log: FraudLog,
    private readonly counters: IpCounters,
    private readonly directory: UserDirectory,
    private readonly blocks: BlocksService,
    private readonly nats: Pick<NatsClients, 'js'>,
    private readonly keyring: Keyring,
    private readonly logger: Logger,
  ) {}

  /** Counts one denial; locks the address when it reaches the tenant's threshold. */
  async countDenial(event: DenialEvent, now: Date): Promise<void> {
    const { clientIp, userId } = event.data;
    const ip = clientIp ? ipLockKey(clientIp) : undefined;
    if (!ip) return;
    const settings = await this.tenantSettings(event.tenantId, now);
    if (!settings?.ipLockout.enabled) return;
    const policy = settings.ipLockout;
    const at = new Date(event.occurredAt);
    // A denial older than the window (a consumer catching up) no longer counts.
    if (now.getTime() - at.getTime() > policy.windowMinutes * 60_000) return;
    // Idempotent (the event's id): counted again before a lock is recorded (execute).
    const count = () => this.counters.countDenial(event.tenantId, ip, event.id, userTag(this.keyring, event.tenantId, userId), at, now, policy.windowMinutes);
    const window = await count();
    ipDenials.inc();
    if (window.failures < policy.threshold) return;
    const [locked] = await this.execute(event.tenantId, ip, now, { type: 'CountDenial', data: { ip, window } }, policy, count);
    if (locked?.type === 'IpLocked') {
      ipLocks.inc({ dry_run: String(locked.data.dryRun) });
      this.logger.warn(locked.data.dryRun ? 'per-IP lockout (dry run): an address would be locked' : 'per-IP lockout: an address is locked', {
        tenantId: event.tenantId,
        ip,
        failures: window.failures,
        users: window.users,
        until: locked.data.until,
      });
    }
  }

  async list(request: FraudIpsListRequest, now: Date): Promise<FraudIpsListReply> {
    await this.blocks.requireTenant(request.tenantId);
    // By subject (one per address): a read whose consumer was made again, or that reaches a
    // message recorded meanwhile, hands over an address already handed over with its newer
    // message, which then stands alone (a lock renewed, lifted or unreadable).
    const items = new Map<string, FraudIpsListReply['items'][number]>();
    // A request's read gives up (unavailable) well before its caller does; the default bound is for rebuilds.
    await this.blocks.dependency(() =>
      readOnce(this.nats.js, Streams.fraud.name, EventSubjects.fraudIpsOfTenant(request.tenantId), { policy: 'last_per_subject' }, (msg) => {
        items.delete(msg.subject);
        let event: FraudIpEvent;
        try {
          event = parseEvent(msg.json()) as FraudIpEvent;
        } catch {
          return;
        }
        const state = evolveIpLock(initialIpLockState(), event);
        if (event.type !== 'IpLocked' || !state.locked || state.until <= now.getTime()) return;
        items.set(msg.subject, {
          ip: event.data.ip,
          lockedAt: event.occurredAt,
          until: event.data.until,
          failures: event.data.failures,
          users: event.data.users,
          dryRun: event.data.dryRun,
        });
      }, { unreachableMs: 5_000 }),
    );
    return { items: [...items.values()].sort((a, b) => b.lockedAt.localeCompare(a.lockedAt)) };
  }

  /**
   * Lifts a lock: the address's count starts over before IpUnlocked is recorded (execute), so an
   * unlock that fails between the two leaves the lock in force, and its retry resets the count
   * again; never an unlock recorded over a count that the next denial would lock again with.
   */
  async unlock(request: FraudIpsUnlockRequest, now: Date, by?: Actor): Promise<FraudIpsUnlockReply> {
    const settings = await this.blocks.requireTenant(request.tenantId);
    const ip = ipLockKey(request.ip)!;
    await this.execute(request.tenantId, ip, now, { type: 'Unlock', data: { ip, reason: request.reason, ...(by ? { by } : {}) } }, settings.ipLockout);
    return { ip };
  }

  /**
   * Decides on the address's state as the event log has it and appends the event. `recount`
   * counts a denial's window again once that state is read, before a lock is recorded: an unlock
   * the state shows reset the count before it was recorded, and denials from before it count no
   * more (IpCounters), so a window counted before an unlock (another instance, a moment earlier)
   * never locks the address again. One more Redis call per lock, none per denial.
   */
  private async execute(
    tenantId: string,
    ip: string,
    now: Date,
    command: IpCommand,
    policy: TenantSettings['ipLockout'],
    recount?: () => Promise<IpWindow>,
  ): Promise<FraudIpEvent[]> {
    for (let attempt = 1; attempt <= MAX_APPEND_ATTEMPTS; attempt++) {
      const { state, lastSeq } = await this.blocks.dependency(() => this.log.loadIp(tenantId, ip));
      // At most one event: a lock, or an unlock.
      let [decided] = decideIp(command, policy, state, now);
      if (decided?.type === 'IpLocked' && recount) {
        const window = await recount();
        [decided] = decideIp({ type: 'CountDenial', data: { ip, window } }, policy, state, now);
      }
      if (!decided) return [];
      // The count starts over before the unlock is recorded (its time is the unlock's): a denial
      // counted after the reset finds the address still locked, one counted after the unlock finds
      // the count started over. Run again on every try, and by a retried unlock.
      if (decided.type === 'IpUnlocked') await this.blocks.dependency(() => this.counters.reset(tenantId, ip, now));
      try {
        return [await this.blocks.dependency(() => this.log.appendIp(tenantId, ip, decided, now, lastSeq))];
      } catch (error) {
        // Another instance recorded the address's lock meanwhile: decided again on its state.
        if (!(error instanceof ConcurrencyError)) throw error;
      }
    }
    // A denial's lock gives way to what the others recorded; an unlock recorded nothing, and must not answer that it did.
    if (command.type === 'Unlock') throw conflict('the address changed concurrently too often; try again');
    return [];
  }

  /** The tenant's settings, reused for a few seconds (an attack brings thousands of events a second). */
  async tenantSettings(tenantId: string, now: Date): Promise<TenantSettings | undefined> {
    const hit = this.settings.get(tenantId);
    if (hit && hit.until > now.getTime()) return hit.settings;
    const settings = await this.blocks.dependency(() => this.directory.tenantSettings(tenantId));
    this.settings.set(tenantId, { settings, until: now.getTime() + SETTINGS_TTL_MS });
    if (this.settings.size > 10_000) this.settings.delete(this.settings.keys().next().value!);
    return settings;
  }
}
