import type { RedisClient } from '@mfa/projection';
import { execAll } from '@mfa/service-kit';

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
 * alert that comes while another is still mailing (a slow relay) leaves it alone. An outcome the
 * hash would not take is kept in a key of its own instead (`mfa:{alert:<alertId>}:outcome:<address>`,
 * same slot, `hold`), which the claim's renewals and release never touch: the next delivery that
 * claims the address finds it there, and copies it into the hash.
 */
export class MailLedger {
  constructor(private readonly redis: RedisClient) {}

  private key(alertId: string): string {
    return `mfa:{alert:${alertId}}:mail`;
  }

  private claimKey(alertId: string, to: string): string {
    return `mfa:{alert:${alertId}}:claim:${to.toLowerCase()}`;
  }

  private heldKey(alertId: string, to: string): string {
    return `mfa:{alert:${alertId}}:outcome:${to.toLowerCase()}`;
  }

  /**
   * Claims an address before sending to it: `claimed` (send, record, then release), `busy`
   * (another delivery holds it), or its outcome, from the hash or held apart. The claim and the
   * look-ups are one transaction, so an outcome recorded since `outcomes` was read is seen, never
   * sent again.
   */
  async claim(alertId: string, to: string): Promise<MailClaim> {
    const [[claimError, claimed], [readError, recorded], [heldError, held]] = (await this.redis
      .multi()
      .set(this.claimKey(alertId, to), '1', 'PX', MAIL_CLAIM_MS, 'NX')
      .hget(this.key(alertId), to.toLowerCase())
      .get(this.heldKey(alertId, to))
      .exec()) as [[Error | null, 'OK' | null], [Error | null, string | null], [Error | null, string | null]];
    if (claimError || readError || heldError) throw claimError ?? readError ?? heldError;
    const inLedger = recorded ? readOutcome(recorded) : undefined;
    const outcome = inLedger ?? (held ? readOutcome(held) : undefined);
    if (outcome) {
      if (claimed) await this.release(alertId, to);
      // Into the hash, where `outcomes` finds it; the held copy stays the record until then.
      if (!inLedger) await this.record(alertId, outcome).catch(() => undefined);
      return { outcome };
    }
    return claimed ? 'claimed' : 'busy';
  }

  /**
   * Keeps an outcome the hash would not take (a plain SET of one key, where the hash's write
   * failed), for as long as the hash would have: every later delivery of the alert finds the
   * address done, and none mails it again. The alert is delivered at most SMTP_MAX_ATTEMPTS times
   * (at most 40) while an address fails, and at most the consumer's maxDeliver (50) times in all,
   * 30 s apart at most (some 22 minutes of back-off for all 50): far inside the 7 days.
   */
  async hold(alertId: string, outcome: MailOutcome): Promise<void> {
    await this.redis.set(this.heldKey(alertId, outcome.to), JSON.stringify(outcome), 'EX', LEDGER_TTL_SECONDS);
  }

  /** Keeps a claim for another MAIL_CLAIM_MS. */
  async renew(alertId: string, to: string): Promise<void> {
    await this.redis.pexpire(this.claimKey(alertId, to), MAIL_CLAIM_MS);
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

  /** Rejects when Redis refused a command of the transaction (an error reply inside MULTI, such as OOM), not only when the transaction failed. */
  async record(alertId: string, outcome: MailOutcome): Promise<void> {
    await execAll(
      this.redis.multi().hset(this.key(alertId), outcome.to.toLowerCase(), JSON.stringify(outcome)).expire(this.key(alertId), LEDGER_TTL_SECONDS),
      'the e-mail outcome was not recorded',
    );
  }
}

/** An entry of the ledger (or an outcome held apart); an unreadable one is treated as not sent. */
function readOutcome(value: string): MailOutcome | undefined {
  try {
    const outcome = JSON.parse(value) as Partial<MailOutcome> | null;
    return outcome && typeof outcome === 'object' && typeof outcome.to === 'string' && typeof outcome.sent === 'boolean' ? (outcome as MailOutcome) : undefined;
  } catch {
    return undefined;
  }
}
