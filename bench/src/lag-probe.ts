import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Samples } from './stats.js';

const POLL_MS = 20;
/** A row not complete this long after its approval is left to the run's row accounting. */
const GIVE_UP_MS = 8_000;

interface Probe {
  approvedAt: number;
  samples: Samples;
}

/**
 * Report lag, measured from outside: for the sampled challenges, the time from the IdP's
 * approval to the row being complete in Postgres. Every challenge waiting is looked up by one
 * statement every 20 ms: the measurement should cost the database it measures as little as it can
 * (one query per challenge and poll was about 260 statements a second at 1,200 pairs/s, charged
 * to the stack's Postgres).
 */
export class ReportLagProbe {
  private readonly waiting = new Map<string, Probe>();
  /** The polling loop while any challenge is waiting; it stays rejected if a lookup failed. */
  private loop: Promise<void> | undefined;

  constructor(
    private readonly db: pg.Pool,
    private readonly tenantId: string,
  ) {}

  /** Starts timing one challenge's row from the moment its approval reached the IdP. */
  watch(challengeId: string, approvedAt: number, samples: Samples): void {
    this.waiting.set(challengeId, { approvedAt, samples });
    if (!this.loop) {
      this.loop = this.poll();
      // A failed lookup is reported by drained(), at the end of the run.
      this.loop.catch(() => undefined);
    }
  }

  /** Resolves once every challenge watched so far is timed or given up on; rejects if a lookup failed. */
  drained(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /** One lookup at a time, every 20 ms, until no challenge is waiting. */
  private async poll(): Promise<void> {
    while (this.waiting.size > 0) {
      await sleep(POLL_MS);
      // Unnamed, so planned for the challenges it names: a generic plan of a prepared statement
      // does not know how few rows the array selects, and may scan the tenant's rows instead.
      const { rows } = await this.db.query<{ challenge_id: string }>(
        'SELECT challenge_id FROM signins WHERE tenant_id = $1 AND challenge_id = ANY($2::text[]) AND result IS NOT NULL',
        [this.tenantId, [...this.waiting.keys()]],
      );
      const now = performance.now();
      for (const { challenge_id } of rows) {
        const probe = this.waiting.get(challenge_id);
        if (!probe) continue;
        probe.samples.add(now - probe.approvedAt);
        this.waiting.delete(challenge_id);
      }
      for (const [id, probe] of this.waiting) if (now - probe.approvedAt > GIVE_UP_MS) this.waiting.delete(id);
    }
    this.loop = undefined;
  }
}
