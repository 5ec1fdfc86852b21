import { createTransport, type Transporter } from 'nodemailer';
import type { Logger } from '@mfa/telemetry';

export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
  /** The fraud alert it tells of: what LogMailer names instead of the message. */
  alertId?: string;
}

/** Sends one message; resolves with the id the server gave it, rejects with the SMTP error. */
export interface Mailer {
  readonly kind: 'smtp' | 'log' | 'none';
  send(mail: OutgoingMail): Promise<{ messageId: string }>;
  close(): void;
}

/**
 * Real SMTP through nodemailer, pooled connections to `SMTP_URL`. Every exchange is bounded by
 * `timeoutSeconds` (connection, greeting, idle socket): a server that hangs fails the try.
 */
export class SmtpMailer implements Mailer {
  readonly kind = 'smtp';
  private readonly transport: Transporter;

  constructor(url: string, private readonly from: string, timeoutSeconds: number) {
    const ms = timeoutSeconds * 1000;
    this.transport = createTransport({ url, pool: true, maxConnections: 2, connectionTimeout: ms, greetingTimeout: ms, socketTimeout: ms });
  }

  async send(mail: OutgoingMail): Promise<{ messageId: string }> {
    const info = await this.transport.sendMail({ from: this.from, to: mail.to, subject: mail.subject, text: mail.text });
    const rejected = (info.rejected as unknown[] | undefined) ?? [];
    if (rejected.length > 0) throw new Error(`the SMTP server refused the recipient: ${String(info.response ?? '')}`);
    return { messageId: String(info.messageId) };
  }

  close(): void {
    this.transport.close();
  }
}

/**
 * Development without SMTP_URL: the notification flow runs end to end (the outcome recorded as
 * sent, `logged`), and a line says a message would have gone. The line names the alert and how
 * many recipients, not the message: its text holds the user id, the client IP and the requester's
 * free-text comment, and development logs are shipped and shared too. The alert itself is in the
 * fraud report. Never used in production (app.module.ts): there the mail is UnconfiguredMailer's.
 */
export class LogMailer implements Mailer {
  readonly kind = 'log';
  private readonly transport = createTransport({ jsonTransport: true });

  constructor(private readonly from: string, private readonly log: Logger) {}

  async send(mail: OutgoingMail): Promise<{ messageId: string }> {
    const info = await this.transport.sendMail({ from: this.from, to: mail.to, subject: mail.subject, text: mail.text });
    this.log.info('fraud alert e-mail not sent (no SMTP_URL)', { alertId: mail.alertId, recipients: 1, chars: mail.text.length });
    return { messageId: String(info.messageId) };
  }

  close(): void {
    this.transport.close();
  }
}

/** Why UnconfiguredMailer refuses: no try can succeed until SMTP_URL is set, so none is repeated. */
export class MailerNotConfigured extends Error {
  override name = 'MailerNotConfigured';
  constructor() {
    super('not sent: no SMTP server is configured (SMTP_URL)');
  }
}

/**
 * Production without SMTP_URL. fraud.report refuses the alerts of a tenant with notificationEmails
 * then, but the addresses are read again when the alert is handled (a tenant that added some since,
 * a backlog of alerts from before SMTP_URL was removed): each such e-mail fails, and is recorded as
 * failed (FraudNotificationFailed, in the fraud report) rather than written to the log, which is
 * not where an alert's recipients, user and comment belong. The alert's denial and block stand.
 */
export class UnconfiguredMailer implements Mailer {
  readonly kind = 'none';

  send(): Promise<{ messageId: string }> {
    return Promise.reject(new MailerNotConfigured());
  }

  close(): void {}
}
