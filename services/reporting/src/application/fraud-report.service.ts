import {
  notFound,
  type BlockedQueryReply,
  type BlockedQueryRequest,
  type EventOf,
  type FraudItem,
  type FraudQueryReply,
  type FraudQueryRequest,
  type UsageQueryReply,
  type UsageQueryRequest,
} from '@mfa/contracts';
import { userTag, type Keyring } from '@mfa/crypto';
import type { FraudReportRepository, StoredAlert } from '../adapters/fraud-report.repository.js';
import type { SigninsRepository } from '../adapters/signins.repository.js';
import type { UsageRepository } from '../adapters/usage.repository.js';
import { foldFraudEvents, type FraudStreamEvent } from '../domain/fraud-projection.js';
import { keysetCursors } from '../domain/keyset-cursor.js';
import type { Sequenced } from '../domain/signin-projection.js';
import { periodsOf, toUsagePage, usageCursors } from '../domain/usage-report.js';
import type { PersonalDataReader } from './personal-data.reader.js';
import type { Pseudonymizer } from './pseudonyms.js';
import { OUTCOME_GRACE_MS } from './signin-report.service.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The fraud service's reports: fraud alerts (`reports.fraud.query`), the history of blocks and
 * IP locks (`reports.blocked.query`), projected from MFA_FRAUD; and usage per day or month
 * (`reports.usage.query`) from the sign-in report and the users' lifetimes.
 */
export class FraudReportService {
  constructor(
    private readonly repository: FraudReportRepository,
    private readonly usage: UsageRepository,
    private readonly signins: Pick<SigninsRepository, 'tenantExists'>,
    private readonly personalData: Pick<PersonalDataReader, 'open'>,
    private readonly pseudonymOf: Pseudonymizer,
    private readonly keyring: Keyring,
  ) {}

  project(items: readonly Sequenced<FraudStreamEvent>[]): Promise<void> {
    return this.repository.apply(foldFraudEvents(items), this.pseudonymOf);
  }

  /** Registrations and erasures, by a keyed hash of the user id. */
  projectUsers(items: readonly Sequenced<EventOf<'UserRegistered' | 'UserErased'>>[]): Promise<void> {
    // Stored under the current key's hash; one stored before a rotation of the master key, under a
    // previous key's, is found by these and not stored twice.
    const lifetime = ({ event }: Sequenced<EventOf<'UserRegistered' | 'UserErased'>>) => ({
      tenantId: event.tenantId,
      userKey: userTag(this.keyring, event.tenantId, event.data.userId),
      at: event.occurredAt,
      previousKeys: this.keyring.previous.map((keyring) => userTag(keyring, event.tenantId, event.data.userId)),
    });
    return this.usage.applyLifetimes(
      items.filter(({ event }) => event.type === 'UserRegistered').map(lifetime),
      items.filter(({ event }) => event.type === 'UserErased').map(lifetime),
    );
  }

  async fraud(request: FraudQueryRequest): Promise<FraudQueryReply> {
    const cursors = keysetCursors(this.keyring, request.tenantId, 'reports.fraud', (id) => id.length > 0 && id.length <= 128);
    const after = request.cursor === undefined ? undefined : cursors.decode(request.cursor);
    await this.requireTenant(request.tenantId);
    const rows = await this.repository.findAlerts({ ...request, after, limit: request.limit + 1 });
    const page = await this.personalData.open(request.tenantId, rows.slice(0, request.limit));
    const reply: FraudQueryReply = { items: page.map(toFraudItem) };
    const last = page.at(-1);
    if (rows.length > request.limit && last) reply.nextCursor = cursors.encode({ occurredAt: last.position, id: last.alertId });
    return reply;
  }

  async blocked(request: BlockedQueryRequest): Promise<BlockedQueryReply> {
    const cursors = keysetCursors(this.keyring, request.tenantId, 'reports.blocked', (id) => UUID.test(id));
    const after = request.cursor === undefined ? undefined : cursors.decode(request.cursor);
    await this.requireTenant(request.tenantId);
    const rows = await this.repository.findBlocks({ ...request, after, limit: request.limit + 1 });
    const page = rows.slice(0, request.limit);
    const reply: BlockedQueryReply = {
      items: page.map(({ eventId: _id, position: _p, occurredAt, ...row }) => ({ occurredAt: occurredAt.toISOString(), ...row })),
    };
    const last = page.at(-1);
    if (rows.length > request.limit && last) reply.nextCursor = cursors.encode({ occurredAt: last.position, id: last.eventId });
    return reply;
  }

  async usageReport(request: UsageQueryRequest, now: Date): Promise<UsageQueryReply> {
    const cursors = usageCursors(this.keyring, request.tenantId, request.granularity);
    const after = request.cursor === undefined ? undefined : cursors.decode(request.cursor);
    await this.requireTenant(request.tenantId);
    const to = new Date(request.to);
    const periods = periodsOf(new Date(request.from), to, request.granularity, after, request.limit + 1);
    const page = periods.slice(0, request.limit);
    if (page.length === 0) return { items: [] };
    // The first and last periods may be partial: only [from, to) is counted.
    const first = new Date(Math.max(page[0]!.getTime(), Date.parse(request.from)));
    // Up to the next page's first period, or the end of the range.
    const end = periods.length > request.limit ? periods[request.limit]! : to;
    const counts = await this.usage.counts(request.tenantId, first, end, request.granularity, new Date(now.getTime() - OUTCOME_GRACE_MS));
    return toUsagePage(page, counts, periods.length > request.limit, cursors, request.granularity);
  }

  private async requireTenant(tenantId: string): Promise<void> {
    if (!(await this.signins.tenantExists(tenantId))) throw notFound('unknown tenant');
  }
}

function toFraudItem(row: StoredAlert): FraudItem {
  return {
    alertId: row.alertId,
    occurredAt: row.occurredAt.toISOString(),
    userId: row.userId,
    displayName: row.displayName,
    email: row.email,
    phoneNumber: row.phoneNumber,
    deviceId: row.deviceId,
    source: row.source,
    clientIp: row.clientIp,
    application: row.application,
    challengeId: row.challengeId,
    comment: row.comment,
    challengeDenied: row.challengeDenied,
    blocked: row.blocked,
    blockedUntil: row.blockedUntil,
    reportedBy: row.reportedBy,
    notifications: { sent: row.mailsSent, failed: row.mailsFailed },
  };
}
