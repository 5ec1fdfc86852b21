import { randomBytes } from 'node:crypto';
import type { SmsMessage, SmsProvider } from '../sms-provider.js';

/**
 * Development only (refused at boot in production): prints the message, code included, as one
 * JSON line on stdout so a developer can sign in without an SMS vendor.
 */
export class ConsoleSmsProvider implements SmsProvider {
  readonly name = 'console';

  constructor(private readonly write: (line: string) => void = (line) => process.stdout.write(line)) {}

  async send(message: SmsMessage): Promise<{ providerMessageId: string }> {
    const providerMessageId = `console-${randomBytes(8).toString('hex')}`;
    this.write(
      `${JSON.stringify({
        time: new Date().toISOString(),
        level: 'info',
        service: 'dispatch',
        msg: 'console SMS (development only)',
        providerMessageId,
        to: message.to,
        body: message.body,
      })}\n`,
    );
    return { providerMessageId };
  }
}
