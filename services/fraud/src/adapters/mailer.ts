import { createTransport, type Transporter } from 'nodemailer';
import type { Logger } from '@mfa/telemetry';

export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
}

/** Sends one message; resolves with the id the server gave it, rejects with the SMTP error. */
export interface Mailer {
  readonly kind: 'smtp' | 'log';
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
 * Development without SMTP_URL: the message is written to the log (it holds no secret: no code,
 * no key), like the console SMS provider, so the notification flow runs end to end.
 */
export class LogMailer implements Mailer {
  readonly kind = 'log';
  private readonly transport = createTransport({ jsonTransport: true });

  constructor(private readonly from: string, private readonly log: Logger) {}

  async send(mail: OutgoingMail): Promise<{ messageId: string }> {
    const info = await this.transport.sendMail({ from: this.from, to: mail.to, subject: mail.subject, text: mail.text });
    this.log.info('fraud alert e-mail (no SMTP_URL: logged, not sent)', { to: mail.to, subject: mail.subject, text: mail.text });
    return { messageId: String(info.messageId) };
  }

  close(): void {
    this.transport.close();
  }
}
