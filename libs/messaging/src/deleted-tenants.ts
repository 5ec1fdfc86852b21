import type { ConsumerMessages, JsMsg, StoredMsg } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, type AnyEvent } from '@mfa/contracts';
import { createLogger, type Logger } from '@mfa/telemetry';
import type { NatsClients } from './connection.js';
import { followSubjects } from './follow.js';
import { isNoMessageFound } from './jetstream-errors.js';

/**
 * Nothing from the follower (no message, no heartbeat: one comes about every second) for this
 * long: the memory may be behind the log, and tenants are asked for again until it is heard from.
 */
const SILENCE_MS = 3_000;
/** While the memory is not current, how long one read of a tenant's last event answers for it. */
const ASKED_FOR_MS = 1_000;

/**
 * The tenants deleted (tenants.delete: TenantDeleted, then TenantErased, as their last event) and
 * not created again, in memory, from the tenant subjects of MFA_USER_SETTINGS through an ordered
 * consumer: the last event of each tenant at start, then every new one. For the services that act
 * for a tenant's challenges without owning tenants (dispatch: no SMS, call or push once its tenant
 * is deleted), without a round trip per question. Only the deleted set is kept, not the settings.
 *
 * Never answers from partial state: until the events present at start are folded in, after a
 * NATS disconnection until the follower is heard from again, and while the follower is silent
 * (its server gone: it is being made again), a tenant not known deleted is read from the log
 * (its last event, a stream get), at most once a second per tenant. A read that fails throws: the
 * caller tries again later rather than acting for a tenant it could not check.
 */
export class DeletedTenants {
  private readonly deleted = new Set<string>();
  /** Answers read from the log while the memory is not current, by tenant, and when they were asked. */
  private readonly asked = new Map<string, { at: number; answer: Promise<boolean> }>();
  private messages: ConsumerMessages | undefined;
  private caughtUp = false;
  /** Disconnected since the follower was last heard from: what it missed may still be on its way. */
  private disconnected = false;
  private lastHeard = Date.now();
  private stopped = false;
  private readonly log: Logger;

  constructor(
    private readonly nats: NatsClients,
    log?: Logger,
  ) {
    this.log = log ?? createLogger('messaging');
  }

  /** Whether the memory holds every tenant event up to about now (otherwise isDeleted reads the log). */
  get current(): boolean {
    return this.caughtUp && !this.disconnected && Date.now() - this.lastHeard < SILENCE_MS;
  }

  /** Whether the memory holds the tenant as deleted, without reading the log. */
  knownDeleted(tenantId: string): boolean {
    return this.deleted.has(tenantId);
  }

  /** Whether the tenant is deleted: from memory, or, while the memory is not current, from its last event in the log. */
  async isDeleted(tenantId: string): Promise<boolean> {
    if (this.deleted.has(tenantId)) return true;
    if (this.current) {
      this.asked.clear();
      return false;
    }
    const now = Date.now();
    let asked = this.asked.get(tenantId);
    if (!asked || now - asked.at >= ASKED_FOR_MS) {
      const entry = { at: now, answer: this.read(tenantId) };
      this.asked.set(tenantId, entry);
      // A read that failed is not kept: the next question reads again.
      entry.answer.catch(() => this.asked.get(tenantId) === entry && this.asked.delete(tenantId));
      asked = entry;
    }
    return (await asked.answer) || this.deleted.has(tenantId);
  }

  /** Resolves once the events present at start are folded in (or after `timeoutMs`: isDeleted reads the log until then). */
  async start(timeoutMs = 10_000): Promise<void> {
    void this.watchConnection();
    this.messages = await followSubjects(
      this.nats.js,
      Streams.userSettings.name,
      EventSubjects.allTenants,
      (msg) => this.fold(msg),
      timeoutMs,
      () => {
        this.caughtUp = true;
      },
      { lastPerSubject: true, log: this.log },
    );
    void this.watchFollower(this.messages);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.messages?.close().catch(() => undefined);
  }

  private fold(msg: JsMsg): void {
    this.apply(parseEvent(msg.json()));
    // Caught up only with the last message the server had for the follower: after a gap (a
    // reconnection, a follower made again) the first messages are the start of a backlog, which
    // may still hold a deletion.
    if (msg.info.pending === 0) this.heard();
  }

  private apply(event: AnyEvent): void {
    if (event.type === 'TenantDeleted' || event.type === 'TenantErased') this.deleted.add(event.tenantId);
    // Created again: a new tenant with nothing of the old one.
    else if (event.type === 'TenantCreated' || event.type === 'TenantSettingsChanged') this.deleted.delete(event.tenantId);
  }

  private async read(tenantId: string): Promise<boolean> {
    let last: StoredMsg | null;
    try {
      last = await this.nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: EventSubjects.tenant(tenantId) });
    } catch (error) {
      if (!isNoMessageFound(error)) throw error;
      last = null;
    }
    if (!last) return false;
    const event = parseEvent(last.json());
    return event.type === 'TenantDeleted' || event.type === 'TenantErased';
  }

  private heard(): void {
    this.lastHeard = Date.now();
    this.disconnected = false;
  }

  /** The follower's last pending message, or a heartbeat: the server has handed it what there was. */
  private async watchFollower(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const status of messages.status()) {
        if (status.type === 'heartbeat') this.heard();
      }
    } catch {
      // The follower closed.
    }
  }

  /**
   * A disconnection: events published meanwhile reach the follower only after the reconnection,
   * perhaps after a challenge's request does (another consumer). Not current until it is heard from.
   */
  private async watchConnection(): Promise<void> {
    try {
      for await (const status of this.nats.nc.status()) {
        if (this.stopped) return;
        if (status.type === 'disconnect' || status.type === 'reconnect') this.disconnected = true;
      }
    } catch {
      // The connection closed.
    }
  }
}
