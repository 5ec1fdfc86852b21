import type { AnyEvent, ChallengeEvent, DispatchEvent, EventOf, TenantEvent } from '@mfa/contracts';
import { dataKeyGeneration, SealError } from '@mfa/crypto';
import { PoisonMessageError } from '@mfa/messaging';
import { openPersonalData, type UserDataKeys } from '@mfa/service-kit';
import { counter, histogram } from '@mfa/telemetry';
import {
  foldChallengeEvents,
  foldDispatchEvents,
  foldTenantEvents,
  type OpenedPersonalData,
  type Sequenced,
} from '../domain/signin-projection.js';
import type { ErasuresRepository } from '../adapters/erasures.repository.js';
import type { SigninsRepository } from '../adapters/signins.repository.js';
import type { Pseudonymizer } from './pseudonyms.js';

const lag = histogram(
  'mfa_report_lag_seconds',
  'Time from an event occurring to its projection into the report being committed',
  ['stream'],
  [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
);

const unreadable = counter(
  'mfa_report_personal_data_unreadable_total',
  'Start events whose sealed personal data had no data key in MFA_USER_KEYS: reported without it',
);

/**
 * Projects batches of events into the sign-in report: each batch is folded into one patch per
 * row and written with one statement. Idempotent, so the consumers can re-deliver and a replay
 * from the start of the streams rebuilds the same report.
 *
 * Personal data of v2 start events is opened with the user's data key (the keys of a batch are
 * looked up in parallel, through a cache); a user erased meanwhile is written by pseudonym.
 */
export class ReportProjection {
  constructor(
    private readonly repository: SigninsRepository,
    private readonly keys: Pick<UserDataKeys, 'get' | 'evict'>,
    private readonly pseudonymOf: Pseudonymizer,
    private readonly erasures: ErasuresRepository,
  ) {}

  async projectChallenges(items: readonly Sequenced<ChallengeEvent>[]): Promise<void> {
    const opened = await this.openPersonalData(items);
    const patches = foldChallengeEvents(items, (eventId) => opened.get(eventId));
    await this.repository.applySignins(patches.map((p) => ({ ...p, pseudonym: this.pseudonymOf(p.tenantId, p.userId) })));
    observeLag('challenges', items);
  }

  async projectDispatch(items: readonly Sequenced<DispatchEvent>[]): Promise<void> {
    await this.repository.applyDeliveries(foldDispatchEvents(items));
    observeLag('dispatch', items);
  }

  async projectTenants(items: readonly Sequenced<TenantEvent>[]): Promise<void> {
    await this.repository.applyTenants(foldTenantEvents(items));
    observeLag('tenants', items);
  }

  /** UserErased: the user's rows keep only the pseudonym, now and when their events come later. */
  async projectErasures(items: readonly Sequenced<EventOf<'UserErased'>>[]): Promise<void> {
    for (const { event } of items) {
      const { tenantId } = event;
      const { userId, gen } = event.data;
      this.keys.evict(tenantId, userId);
      await this.erasures.erase({ tenantId, userId, pseudonym: this.pseudonymOf(tenantId, userId), gen, erasedAt: event.occurredAt });
    }
  }

  /** The sealed personal data of the batch's v2 start events, opened; each user's key looked up once. */
  private async openPersonalData(items: readonly Sequenced<ChallengeEvent>[]): Promise<Map<string, OpenedPersonalData>> {
    const sealed = items.flatMap(({ event }) =>
      (event.type === 'ChallengeStarted' || event.type === 'ChallengeRegistrationRequired') && event.version === 2 && event.data.pii
        ? [{ event, pii: event.data.pii, gen: dataKeyGeneration(event.data.pii)! }]
        : [],
    );
    const lookups = new Map<string, ReturnType<UserDataKeys['get']>>();
    for (const { event, gen } of sealed) {
      const id = `${event.tenantId}\u0000${event.data.userId}\u0000${gen}`;
      if (!lookups.has(id)) lookups.set(id, this.keys.get(event.tenantId, event.data.userId, gen));
    }
    await Promise.all(lookups.values());
    const opened = new Map<string, OpenedPersonalData>();
    for (const { event, pii, gen } of sealed) {
      const { tenantId } = event;
      const { userId } = event.data;
      const key = await lookups.get(`${tenantId}\u0000${userId}\u0000${gen}`)!;
      if (key === 'erased') {
        opened.set(event.id, { erased: true, gen, pseudonym: this.pseudonymOf(tenantId, userId) });
      } else if (!key) {
        // Not even the stream leader knows the key (the key stream was lost or restored from an
        // older backup): the sign-in is still reported, without personal data.
        unreadable.inc();
        opened.set(event.id, { erased: false, gen, data: {} });
      } else {
        try {
          opened.set(event.id, { erased: false, gen, data: openPersonalData(key, { tenantId, userId, purpose: 'challenge' }, pii) });
        } catch (cause) {
          if (cause instanceof SealError) throw new PoisonMessageError('the sealed personal data of a challenge does not open', { cause });
          throw cause;
        }
      }
    }
    return opened;
  }
}

function observeLag(stream: string, items: readonly Sequenced<AnyEvent>[]): void {
  const committedAt = Date.now();
  for (const { event } of items) {
    lag.observe({ stream }, Math.max(0, committedAt - Date.parse(event.occurredAt)) / 1000);
  }
}
