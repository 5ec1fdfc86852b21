import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, type FraudIpEvent, type FraudUserEvent } from '@mfa/contracts';
import { createEvent, type EventPublisher } from '@mfa/messaging';
import { evolveIpLock, initialIpLockState, type IpLockState } from '../domain/ip-lockout.js';
import { evolveBlock, initialBlockState, type BlockState, type Decided } from '../domain/user-block.js';

/**
 * The fraud service's event log of one user, and of one client address (MFA_FRAUD, one subject
 * each). Every event carries the aggregate's whole state, so loading is one direct get of the
 * subject's last message; appending is conditional on that message (optimistic concurrency).
 */
export class FraudLog {
  constructor(
    private readonly jsm: JetStreamManager,
    private readonly publisher: EventPublisher,
  ) {}

  async load(tenantId: string, userId: string): Promise<{ state: BlockState; lastSeq: number }> {
    const last = await this.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudUser(tenantId, userId) });
    if (!last) return { state: initialBlockState(), lastSeq: 0 };
    const event = parseEvent(last.json()) as FraudUserEvent;
    return { state: evolveBlock(initialBlockState(), event), lastSeq: last.seq };
  }

  /** Appends what was decided, each event with its stream sequence; a ConcurrencyError when the user's subject moved on since `expectedLastSeq`. */
  async append(tenantId: string, userId: string, decided: readonly Decided[], expectedLastSeq: number): Promise<Array<{ event: FraudUserEvent; seq: number }>> {
    const appended: Array<{ event: FraudUserEvent; seq: number }> = [];
    let expected = expectedLastSeq;
    for (const { event, at } of decided) {
      const envelope = createEvent(event.type, 1, { tenantId, aggregateId: userId, now: at, data: event.data as never }) as FraudUserEvent;
      const ack = await this.publisher.publish(EventSubjects.fraudUser(tenantId, userId), envelope, { expectedLastSubjectSequence: expected });
      expected = ack.seq;
      appended.push({ event: envelope, seq: ack.seq });
    }
    return appended;
  }

  async loadIp(tenantId: string, ip: string): Promise<{ state: IpLockState; lastSeq: number }> {
    const last = await this.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudIp(tenantId, ip) });
    if (!last) return { state: initialIpLockState(), lastSeq: 0 };
    return { state: evolveIpLock(initialIpLockState(), parseEvent(last.json()) as FraudIpEvent), lastSeq: last.seq };
  }

  /** Appends an address's event; a ConcurrencyError when its subject moved on since `expectedLastSeq`. */
  async appendIp(tenantId: string, ip: string, event: Pick<FraudIpEvent, 'type' | 'data'>, at: Date, expectedLastSeq: number): Promise<FraudIpEvent> {
    const envelope = createEvent(event.type, 1, { tenantId, aggregateId: ip, now: at, data: event.data as never }) as FraudIpEvent;
    await this.publisher.publish(EventSubjects.fraudIp(tenantId, ip), envelope, { expectedLastSubjectSequence: expectedLastSeq });
    return envelope;
  }
}
