import { EventSubjects, type AnyEvent, type EventOf } from '@mfa/contracts';
import { createEvent, eventIdOf, type EventPublisher } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import { MAIL_CLAIM_MS, type MailLedger, type MailOutcome } from '../adapters/mail-ledger.js';
import { MailerNotConfigured, type Mailer, type OutgoingMail } from '../adapters/mailer.js';
import type { UserDirectory } from '../adapters/user-directory.js';
import { alertMail } from '../domain/alert-mail.js';

/** How long an address whose outcome Redis did not record stays claimed: past every redelivery of its alert (at most 20, 30 s apart at most). */
const HELD_AFTER_LOST_RECORD_MS = 15 * 60_000;

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
      let outcome = known.get(to.toLowerCase());
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
      // must not make the alert fail, or its redelivery would mail the address again. Tried three
      // times; then the outcome is still published (the alert completes) and the claim is kept for
      // as long as the alert may be redelivered (another address still failing), so that no
      // delivery mails this address again.
      if (!(await this.recordOutcome(alertId, outcome))) {
        keepClaim = true;
        await this.ledger.renew(alertId, to, HELD_AFTER_LOST_RECORD_MS).catch(() => undefined);
      }
      notifications.inc({ outcome: outcome.sent ? (outcome.logged ? 'logged' : 'sent') : 'failed' });
      return outcome;
    } finally {
      clearInterval(beating);
      // A claim not released (Redis unreachable) lapses by itself within MAIL_CLAIM_MS.
      if (!keepClaim) await this.ledger.release(alertId, to).catch(() => undefined);
    }
  }

  /** Records an outcome in the ledger, three tries; false when Redis would not take it. */
  private async recordOutcome(alertId: string, outcome: MailOutcome): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.ledger.record(alertId, outcome);
        return true;
      } catch (error) {
        if (attempt >= 3) {
          this.log.warn('a fraud alert e-mail outcome could not be recorded in Redis; the outcome event records it', { alertId, error: describe(error) });
          return false;
        }
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
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
