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
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private idle: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failure: unknown;

  constructor(
    private readonly db: pg.Pool,
    private readonly tenantId: string,
  ) {}

  /** Starts timing one challenge's row from the moment its approval reached the IdP. */
  watch(challengeId: string, approvedAt: number, samples: Samples): void {
    this.waiting.set(challengeId, { approvedAt, samples });
    // One lookup at a time: a lookup under way schedules the next when it ends.
    if (!this.polling) this.timer ??= setTimeout(() => void this.poll(), POLL_MS);
  }

  /** Resolves once every challenge watched so far is timed or given up on; rejects if a lookup failed. */
  drained(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.waiting.size === 0 && !this.polling) return Promise.resolve();
    return new Promise((resolve, reject) => this.idle.push({ resolve, reject }));
  }

  private async poll(): Promise<void> {
    this.timer = undefined;
    const ids = [...this.waiting.keys()];
    this.polling = this.db
      // Unnamed, so planned for the challenges it names: a generic plan of a prepared statement
      // does not know how few rows the array selects, and may scan the tenant's rows instead.
      .query<{ challenge_id: string }>('SELECT challenge_id FROM signins WHERE tenant_id = $1 AND challenge_id = ANY($2::text[]) AND result IS NOT NULL', [this.tenantId, ids])
      .then(({ rows }) => {
        const now = performance.now();
        for (const { challenge_id } of rows) {
          const probe = this.waiting.get(challenge_id);
          if (!probe) continue;
          probe.samples.add(now - probe.approvedAt);
          this.waiting.delete(challenge_id);
        }
        for (const [id, probe] of this.waiting) if (now - probe.approvedAt > GIVE_UP_MS) this.waiting.delete(id);
      })
      .catch((error: unknown) => {
        this.failure = error;
        this.waiting.clear();
      });
    await this.polling;
    this.polling = undefined;
    if (this.waiting.size > 0) this.timer = setTimeout(() => void this.poll(), POLL_MS);
    else for (const { resolve, reject } of this.idle.splice(0)) this.failure === undefined ? resolve() : reject(this.failure);
  }
}
