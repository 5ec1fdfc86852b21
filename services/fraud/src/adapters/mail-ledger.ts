import type { RedisClient } from '@mfa/projection';

/** How long an alert's e-mail outcomes are remembered: well past the last redelivery. */
const LEDGER_TTL_SECONDS = 7 * 86_400;
/**
 * How long a claim on an address holds unless renewed. Its holder renews it while the send lasts
 * (NotifierService, every third of it): it outlives any send of a live process, whatever the relay's
 * pace, and lapses within a minute of a process that died, before the alert is redelivered (ack wait 120 s).
 */
export const MAIL_CLAIM_MS = 60_000;

export interface MailOutcome {
  to: string;
  sent: boolean;
  /** The SMTP message id when sent, the last error when not. */
  detail: string;
  attempts: number;
  logged?: true;
}

/** An address claimed to be sent to, held by another delivery of the alert, or already done. */
export type MailClaim = 'claimed' | 'busy' | { outcome: MailOutcome };

/**
 * What became of each address of an alert's e-mail, in Redis (`mfa:{alert:<alertId>}:mail`, one
 * hash per alert): an address is sent to at most once, however often the alert is redelivered,
 * and the outcome event can be recorded again after a failure to publish it. An address is claimed
 * while it is being sent to (`mfa:{alert:<alertId>}:claim:<address>`, same slot): a delivery of the
 * alert that comes while another is still mailing (a slow relay) leaves it alone.
 */
export class MailLedger {
  constructor(private readonly redis: RedisClient) {}

  private key(alertId: string): string {
    return `mfa:{alert:${alertId}}:mail`;
  }

  private claimKey(alertId: string, to: string): string {
    return `mfa:{alert:${alertId}}:claim:${to.toLowerCase()}`;
  }

  /**
   * Claims an address before sending to it: `claimed` (send, record, then release), `busy`
   * (another delivery holds it), or its outcome. The claim and the look-up are one transaction,
   * so an outcome recorded since `outcomes` was read is seen, never sent again.
   */
  async claim(alertId: string, to: string): Promise<MailClaim> {
    const [[claimError, claimed], [readError, recorded]] = (await this.redis
      .multi()
      .set(this.claimKey(alertId, to), '1', 'PX', MAIL_CLAIM_MS, 'NX')
      .hget(this.key(alertId), to.toLowerCase())
      .exec()) as [[Error | null, 'OK' | null], [Error | null, string | null]];
    if (claimError || readError) throw claimError ?? readError;
    const outcome = recorded ? readOutcome(recorded) : undefined;
    if (outcome) {
      if (claimed) await this.release(alertId, to);
      return { outcome };
    }
    return claimed ? 'claimed' : 'busy';
  }

  /** Keeps a claim for another MAIL_CLAIM_MS (or `ms`). */
  async renew(alertId: string, to: string, ms = MAIL_CLAIM_MS): Promise<void> {
    await this.redis.pexpire(this.claimKey(alertId, to), ms);
  }

  async release(alertId: string, to: string): Promise<void> {
    await this.redis.del(this.claimKey(alertId, to));
  }

  async outcomes(alertId: string): Promise<Map<string, MailOutcome>> {
    const raw = await this.redis.hgetall(this.key(alertId));
    const out = new Map<string, MailOutcome>();
    for (const [to, value] of Object.entries(raw)) {
      const outcome = readOutcome(value);
      if (outcome) out.set(to, outcome);
    }
    return out;
  }

  async record(alertId: string, outcome: MailOutcome): Promise<void> {
    await this.redis.multi().hset(this.key(alertId), outcome.to.toLowerCase(), JSON.stringify(outcome)).expire(this.key(alertId), LEDGER_TTL_SECONDS).exec();
  }
}

/** An entry of the ledger; an unreadable one is treated as not sent. */
function readOutcome(value: string): MailOutcome | undefined {
  try {
    return JSON.parse(value) as MailOutcome;
  } catch {
    return undefined;
  }
}
