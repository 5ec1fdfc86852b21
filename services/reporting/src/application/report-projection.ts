import type { AnyEvent, ChallengeEvent, DispatchEvent, TenantEvent } from '@mfa/contracts';
import { histogram } from '@mfa/telemetry';
import {
  foldChallengeEvents,
  foldDispatchEvents,
  foldTenantEvents,
  type Sequenced,
} from '../domain/signin-projection.js';
import type { SigninsRepository } from '../adapters/signins.repository.js';

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
 */
export class ReportProjection {
  constructor(private readonly repository: SigninsRepository) {}

  async projectChallenges(items: readonly Sequenced<ChallengeEvent>[]): Promise<void> {
    await this.repository.applySignins(foldChallengeEvents(items));
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
}

function observeLag(stream: string, items: readonly Sequenced<AnyEvent>[]): void {
  const committedAt = Date.now();
  for (const { event } of items) {
    lag.observe({ stream }, Math.max(0, committedAt - Date.parse(event.occurredAt)) / 1000);
  }
}
