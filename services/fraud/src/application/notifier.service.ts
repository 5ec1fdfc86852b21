import { EventSubjects, type AnyEvent, type EventOf } from '@mfa/contracts';
import { createEvent, eventIdOf, type EventPublisher } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import { MAIL_CLAIM_MS, type MailLedger, type MailOutcome } from '../adapters/mail-ledger.js';
import { MailerNotConfigured, type Mailer, type OutgoingMail } from '../adapters/mailer.js';
import type { UserDirectory } from '../adapters/user-directory.js';
import { alertMail } from '../domain/alert-mail.js';

/**
 * Tries to record an outcome: three in the ledger's hash, then three held apart (MailLedger.hold),
 * 0.1 s doubling between them (about 3 s in all).
 */
const RECORD_TRIES = 6;
/** Outcomes Redis took nowhere, kept in memory for the alert's later deliveries: at most this many (the oldest go). */
const MAX_UNRECORDED = 10_000;

const notifications = counter('mfa_fraud_notifications_total', "Fraud alerts' e-mails by outcome (sent, logged, failed, retried)", ['outcome']);

/** Thrown while some addresses failed and tries remain: the consumer naks the alert with back-off. */
export class MailRetry extends Error {
  override name = 'MailRetry';
}

/**
 * One e-mail per fraud alert to every address of the tenant's `notificationEmails` (as they are
 * when the alert is handled). Each address is tried on every delivery of the alert until it is
 * sent, or until `maxAttempts` deliveries, when the failure is recorded; either outcome is an
 * event (FraudNotificationSent, FraudNotificationFailed) whose id derives from the alert and the
 * address, and an address already sent to is never sent to again (MailLedger). An address is
 * claimed while it is sent to: a delivery of the alert that overlaps another (redelivered while a
 * slow relay held the first) leaves it to the other and is retried until its outcome is known.
 */
export class NotifierService {
  /** Outcomes Redis would take neither in the ledger nor held apart (alert id and address → outcome): what this instance knows of them. */
  private readonly unrecorded = new Map<string, MailOutcome>();

  constructor(
    private readonly mailer: Mailer,
    private readonly ledger: MailLedger,
    private readonly directory: UserDirectory,
    private readonly publisher: EventPublisher,
    private readonly maxAttempts: number,
    private readonly log: Logger,
  ) {}

  /** `working`: tells JetStream the delivery is in progress (msg.working()), so it is not redelivered while a relay is slow. */
  async notify(event: EventOf<'FraudReported'>, delivery: number, working: () => void = () => undefined): Promise<void> {
    const settings = await this.directory.tenantSettings(event.tenantId);
    const addresses = settings?.notificationEmails ?? [];
    if (addresses.length === 0) return;
    const { alertId } = event.data;
    const known = await this.ledger.outcomes(alertId);
    const mail = alertMail(event);
    const unsent: string[] = [];
    for (const to of addresses) {
      let outcome = known.get(to.toLowerCase()) ?? (await this.recordedLate(alertId, to));
      if (!outcome) {
        const claim = await this.ledger.claim(alertId, to);
        // Busy: another delivery is mailing it; this one is retried until its outcome is recorded.
        outcome = claim === 'busy' ? undefined : claim === 'claimed' ? await this.send(alertId, { to, ...mail, alertId }, delivery, working) : claim.outcome;
        if (!outcome) {
          unsent.push(to);
          continue;
        }
      }
      // Recorded again on a redelivery (the same id): a failure to publish it never loses it.
      await this.publisher.publish(EventSubjects.fraudMail(event.tenantId), this.outcomeEvent(event, outcome));
    }
    if (unsent.length > 0) throw new MailRetry(`${unsent.length} of ${addresses.length} fraud alert e-mails not sent yet`);
  }

  /**
   * Sends to a claimed address and records the outcome; undefined when it failed and tries remain.
   * While the relay takes its time the claim is renewed and the delivery kept in progress; the
   * claim is released after.
   */
  private async send(alertId: string, mail: OutgoingMail, delivery: number, working: () => void): Promise<MailOutcome | undefined> {
    const { to } = mail;
    const inProgress = () => {
      try {
        working();
      } catch {
        // NATS closing: a redelivery may come, and finds the address claimed.
      }
    };
    inProgress();
    const beating = setInterval(() => {
      inProgress();
      // One renewal lost to a Redis hiccup leaves two more before the claim lapses.
      this.ledger.renew(alertId, to).catch(() => undefined);
    }, MAIL_CLAIM_MS / 3);
    let keepClaim = false;
    try {
      let outcome: MailOutcome;
      try {
        const { messageId } = await this.mailer.send(mail);
        outcome = { to, sent: true, detail: messageId, attempts: delivery, ...(this.mailer.kind === 'log' ? { logged: true as const } : {}) };
      } catch (error) {
        const reason = describe(error);
        // No SMTP server (production without SMTP_URL): recorded as failed at once, no try can do better.
        if (delivery < this.maxAttempts && !(error instanceof MailerNotConfigured)) {
          notifications.inc({ outcome: 'retried' });
          this.log.warn('a fraud alert e-mail could not be sent; will try again', { alertId, attempt: delivery, of: this.maxAttempts, error: reason });
          return undefined;
        }
        outcome = { to, sent: false, detail: reason, attempts: delivery };
        this.log.error('a fraud alert e-mail could not be sent; giving up', { alertId, attempts: delivery, error: reason });
      }
      // The mail is gone (or given up on) whatever Redis says now: a ledger that cannot record it
      // must not make the alert fail, or its redelivery would mail the address again. The outcome
      // goes into the ledger, or else into a key of its own for as long as the ledger would have
      // kept it (every later delivery finds the address done and copies it into the ledger).
      // Where Redis takes neither, the outcome is still published (the alert completes), kept in
      // this instance's memory for the alert's later deliveries, and the claim is left to lapse
      // (it holds off other instances a minute more).
      if (!(await this.recordOutcome(alertId, outcome))) {
        keepClaim = true;
        this.remember(alertId, outcome);
      }
      notifications.inc({ outcome: outcome.sent ? (outcome.logged ? 'logged' : 'sent') : 'failed' });
      return outcome;
    } finally {
      clearInterval(beating);
      // A claim not released (Redis unreachable) lapses by itself within MAIL_CLAIM_MS.
      if (!keepClaim) await this.ledger.release(alertId, to).catch(() => undefined);
    }
  }

  /** Records an outcome in the ledger, or else held apart (RECORD_TRIES); false when Redis would take it in neither. */
  private async recordOutcome(alertId: string, outcome: MailOutcome): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        if (attempt <= 3) await this.ledger.record(alertId, outcome);
        else await this.ledger.hold(alertId, outcome);
        return true;
      } catch (error) {
        if (attempt >= RECORD_TRIES) {
          this.log.warn('a fraud alert e-mail outcome could not be recorded in Redis; the outcome event records it', { alertId, error: describe(error) });
          return false;
        }
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** (attempt - 1)));
      }
    }
  }

  private remember(alertId: string, outcome: MailOutcome): void {
    this.unrecorded.set(`${alertId}\n${outcome.to.toLowerCase()}`, outcome);
    if (this.unrecorded.size > MAX_UNRECORDED) this.unrecorded.delete(this.unrecorded.keys().next().value!);
  }

  /**
   * An outcome Redis took nowhere when this instance mailed the address: recorded now if Redis
   * takes it (then forgotten here), and the address is done either way.
   */
  private async recordedLate(alertId: string, to: string): Promise<MailOutcome | undefined> {
    const key = `${alertId}\n${to.toLowerCase()}`;
    const outcome = this.unrecorded.get(key);
    if (!outcome) return undefined;
    try {
      await this.ledger.record(alertId, outcome);
      this.unrecorded.delete(key);
    } catch {
      // Tried again with the next delivery; meanwhile the address is not mailed again.
    }
    return outcome;
  }

  private outcomeEvent(event: EventOf<'FraudReported'>, outcome: MailOutcome): AnyEvent {
    const { alertId, userId } = event.data;
    const base = { tenantId: event.tenantId, aggregateId: alertId, now: new Date(), id: eventIdOf(`${alertId}:mail:${outcome.to.toLowerCase()}`) };
    return outcome.sent
      ? createEvent('FraudNotificationSent', 1, {
          ...base,
          data: { alertId, userId, to: outcome.to, messageId: outcome.detail, attempts: outcome.attempts, ...(outcome.logged ? { logged: true as const } : {}) },
        })
      : createEvent('FraudNotificationFailed', 1, { ...base, data: { alertId, userId, to: outcome.to, error: outcome.detail, attempts: outcome.attempts } });
  }
}

/** An SMTP error as the server said it (code and response), never longer than an event holds. */
function describe(error: unknown): string {
  const e = error as { message?: string; code?: string; responseCode?: number; response?: string };
  const parts = [e.code, e.responseCode, e.response ?? e.message].filter((p) => p !== undefined && p !== '');
  return (parts.length > 0 ? parts.join(' ') : String(error)).slice(0, 1000);
}
