import { randomBytes } from 'node:crypto';
import type { CallRequest } from './twilio-voice.js';

/**
 * Development only (VOICE_PROVIDER=console, refused at boot in production): places no call, prints
 * it as one JSON line (who, and the TwiML URL to fetch), and answers a call id. The call then goes
 * as far as someone plays the phone against the webhooks (`npm run demo` does).
 */
export class ConsoleVoiceProvider {
  readonly name = 'console';

  constructor(private readonly write: (line: string) => void = (line) => process.stdout.write(line)) {}

  async placeCall(call: CallRequest): Promise<{ callSid: string }> {
    const callSid = `CAconsole${randomBytes(12).toString('hex')}`;
    this.write(
      `${JSON.stringify({ time: new Date().toISOString(), level: 'info', service: 'dispatch', msg: 'console call (development only: no call placed)', callSid, to: call.to, from: call.from, twiml: call.url })}\n`,
    );
    return { callSid };
  }
}
