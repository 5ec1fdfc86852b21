import type { RedisClient } from '@mfa/projection';

/** How long an alert's e-mail outcomes are remembered: well past the last redelivery. */
const LEDGER_TTL_SECONDS = 7 * 86_400;

export interface MailOutcome {
  to: string;
  sent: boolean;
  /** The SMTP message id when sent, the last error when not. */
  detail: string;
  attempts: number;
  logged?: true;
}

/**
 * What became of each address of an alert's e-mail, in Redis (`mfa:{alert:<alertId>}:mail`, one
 * hash per alert): an address is sent to at most once, however often the alert is redelivered,
 * and the outcome event can be recorded again after a failure to publish it.
 */
export class MailLedger {
  constructor(private readonly redis: RedisClient) {}

  private key(alertId: string): string {
    return `mfa:{alert:${alertId}}:mail`;
  }

  async outcomes(alertId: string): Promise<Map<string, MailOutcome>> {
    const raw = await this.redis.hgetall(this.key(alertId));
    const out = new Map<string, MailOutcome>();
    for (const [to, value] of Object.entries(raw)) {
      try {
        out.set(to, JSON.parse(value) as MailOutcome);
      } catch {
        // An unreadable entry is treated as not sent.
      }
    }
    return out;
  }

  async record(alertId: string, outcome: MailOutcome): Promise<void> {
    await this.redis.multi().hset(this.key(alertId), outcome.to.toLowerCase(), JSON.stringify(outcome)).expire(this.key(alertId), LEDGER_TTL_SECONDS).exec();
  }
}
