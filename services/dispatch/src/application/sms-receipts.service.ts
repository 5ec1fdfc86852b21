import { EventSubjects } from '@mfa/contracts';
import { createEvent, eventIdOf, publishWithRetry, type EventPublisher } from '@mfa/messaging';
import { parseChallengeId } from '@mfa/projection';
import { counter, type Logger } from '@mfa/telemetry';
import type { SendGuard } from '../adapters/send-guard.js';
import { signedByTwilio } from '../adapters/twilio-webhook-signature.js';

const receipts = counter('mfa_sms_receipts_total', 'SMS delivery receipts by status', ['status']);


export interface ReceiptRequest {
  challengeId: string;
  url: string;
  signature: string | undefined;
  params: Record<string, string>;
}

/**
 * SMS delivery receipts: Twilio's status callback of a message (signed, else 403 and nothing
 * changes). `delivered` and `undelivered`/`failed` become SmsDeliveryReported (an id derived from
 * the message and status: a callback delivered again is stored once); an undelivered SMS makes the
 * challenge's status delivery_failed, with the user's other methods, as a send that failed does.
 * Intermediate statuses (queued, sending, sent) are acknowledged and not recorded.
 */
export class SmsReceiptsService {
  constructor(
    private readonly options: {
      authToken: string | undefined;
      tenantOf: (challengeId: string) => Promise<string | undefined>;
      publisher: EventPublisher;
      guard: Pick<SendGuard, 'undeliverable'>;
      log: Logger;
    },
  ) {
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  async receipt(req: ReceiptRequest): Promise<{ status: 204 | 403 | 404 }> {
    if (!signedByTwilio(this.options.authToken, req)) return { status: 403 };
    const { MessageSid: sid, MessageStatus: status, ErrorCode: errorCode } = req.params;
    if (!parseChallengeId(req.challengeId) || !sid) return { status: 404 };
    const final = status === 'delivered' ? 'delivered' : status === 'undelivered' || status === 'failed' ? 'undelivered' : undefined;
    if (!final) return { status: 204 };
    const tenantId = await this.options.tenantOf(req.challengeId);
    if (!tenantId) return { status: 404 };
    receipts.inc({ status: final });
    const event = createEvent('SmsDeliveryReported', 1, {
      id: eventIdOf(`sms-receipt:${sid}:${final}`, 4),
      tenantId,
      aggregateId: req.challengeId,
      now: new Date(),
      data: { challengeId: req.challengeId, provider: 'twilio', providerMessageId: sid, status: final, ...(errorCode ? { errorCode: errorCode.slice(0, 16) } : {}) },
    });
    await publishWithRetry(this.options.publisher, EventSubjects.smsReceipt, event, { attempts: 3, delayMs: 250 });
    if (final === 'undelivered') {
      const now = Date.now();
      await this.options.guard.undeliverable(req.challengeId, now, 'sms');
      this.options.log.warn('SMS undelivered (receipt)', { challengeId: req.challengeId, errorCode });
    }
    return { status: 204 };
  }
}
