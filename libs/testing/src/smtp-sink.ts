import type { AddressInfo } from 'node:net';
import type { SMTPServer } from 'smtp-server';

export interface ReceivedMail {
  from: string;
  to: string[];
  subject: string;
  text: string;
  messageId: string | undefined;
  receivedAt: Date;
}

/**
 * How the server answers: `accept` every message; `refuse` every recipient with 550; `tempfail`
 * the next `n` messages with 451 then accept; `hang`: take the connection and never answer the
 * DATA command (what a stuck relay does).
 */
export type SmtpMode = { kind: 'accept' } | { kind: 'refuse' } | { kind: 'tempfail'; n: number } | { kind: 'hang' };

/**
 * A real SMTP server (the `smtp-server` package, RFC 5321 on a local port) that keeps what it
 * accepted, parsed with `mailparser`: the service's real nodemailer transport talks to it over
 * TCP, so tests see what an administrator's mailbox would. No TLS, no authentication.
 */
export class SmtpSink {
  readonly messages: ReceivedMail[] = [];
  /** DATA commands seen, accepted or not. */
  attempts = 0;
  mode: SmtpMode = { kind: 'accept' };
  private server: SMTPServer | undefined;
  private port = 0;

  async start(): Promise<void> {
    const { SMTPServer } = await import('smtp-server');
    const { simpleParser } = await import('mailparser');
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      closeTimeout: 500,
      onRcptTo: (_address, _session, callback) => {
        if (this.mode.kind === 'refuse') {
          const error = new Error('5.1.1 mailbox unavailable') as Error & { responseCode: number };
          error.responseCode = 550;
          callback(error);
          return;
        }
        callback();
      },
      onData: (stream, session, callback) => {
        this.attempts++;
        const mode = this.mode;
        if (mode.kind === 'hang') {
          stream.resume();
          return; // never answers
        }
        if (mode.kind === 'tempfail' && mode.n > 0) {
          mode.n--;
          stream.resume();
          stream.on('end', () => {
            const error = new Error('4.3.0 try again later') as Error & { responseCode: number };
            error.responseCode = 451;
            callback(error);
          });
          return;
        }
        simpleParser(stream)
          .then((parsed) => {
            this.messages.push({
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
              to: session.envelope.rcptTo.map((r) => r.address),
              subject: parsed.subject ?? '',
              text: parsed.text ?? '',
              messageId: parsed.messageId,
              receivedAt: new Date(),
            });
            callback();
          })
          .catch((error: Error) => callback(error));
      },
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = ((this.server as unknown as { server: { address(): AddressInfo } }).server.address()).port;
  }

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  env(): Record<string, string> {
    return { SMTP_URL: this.url };
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
