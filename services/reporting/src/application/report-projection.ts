import type { AnyEvent, ChallengeEvent, DispatchEvent, EventOf, TenantEvent } from '@mfa/contracts';
import type { UserDataKeys } from '@mfa/service-kit';
import { histogram } from '@mfa/telemetry';
import { foldChallengeEvents, foldDispatchEvents, foldTenantEvents, type Sequenced } from '../domain/signin-projection.js';
import type { ErasuresRepository } from '../adapters/erasures.repository.js';
import type { SigninsRepository } from '../adapters/signins.repository.js';
import type { Pseudonymizer } from './pseudonyms.js';

const lag = histogram(
  'mfa_report_lag_seconds',
  'Time from an event occurring to its projection into the report being committed',
  ['stream'],
  [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
);

/**
 * Projects batches of events into the sign-in report: each batch is folded into one patch per
 * row and written with one statement. Idempotent, so the consumers can re-deliver and a replay
 * from the start of the streams rebuilds the same report.
 *
 * Personal data of v2 start events stays sealed as the event carried it: the projection reads no
 * data key (PersonalDataReader opens it when a report is read). A user erased before their events
 * arrive is written by pseudonym, without it.
 */
export class ReportProjection {
  constructor(
    private readonly repository: SigninsRepository,
    /** The report reader's data key cache, which forgets an erased user at once. */
    private readonly keys: Pick<UserDataKeys, 'evict'>,
    /** The user's pseudonyms under every master key (knownPseudonyms). */
    private readonly pseudonymOf: Pseudonymizer,
    private readonly erasures: ErasuresRepository,
  ) {}

  async projectChallenges(items: readonly Sequenced<ChallengeEvent>[]): Promise<void> {
    const patches = foldChallengeEvents(items);
    await this.repository.applySignins(patches.map((p) => ({ ...p, pseudonym: this.pseudonymOf(p.tenantId, p.userId) })));
    observeLag('challenges', items);
  }

  async projectDispatch(items: readonly Sequenced<DispatchEvent>[]): Promise<void> {
    await this.repository.applyDeliveries(foldDispatchEvents(items));
    observeLag('dispatch', items);
  }

  /**
   * Tenants known to the report queries (TenantCreated), and offboarded: TenantDeleted makes the
   * tenant unknown (not_found), TenantErased deletes its report rows but for its erased users and
   * its audit trail, and a TenantCreated after it is a new tenant with an empty report. Once the
   * deletion is known, the other projections write nothing of the tenant from before it, nor, once
   * created again, from before that creation (ofCurrentTenant, SigninsRepository.applyTenants).
   */
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
      await this.erasures.erase({ tenantId, userId, pseudonyms: this.pseudonymOf(tenantId, userId), gen, erasedAt: event.occurredAt });
    }
  }
}

function observeLag(stream: string, items: readonly Sequenced<AnyEvent>[]): void {
  const committedAt = Date.now();
  for (const { event } of items) {
    lag.observe({ stream }, Math.max(0, committedAt - Date.parse(event.occurredAt)) / 1000);
  }
}
