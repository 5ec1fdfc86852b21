import { setTimeout as sleep } from 'node:timers/promises';
import { EventSubjects } from '@mfa/contracts';
import { createEvent, eventIdOf, publishWithRetry, type EventPublisher } from '@mfa/messaging';
import { parseChallengeId } from '@mfa/projection';
import { counter, type Logger } from '@mfa/telemetry';
import type { ReceiptRoutes } from '../adapters/receipt-routes.js';
import type { SendGuard } from '../adapters/send-guard.js';
import type { SmsReceipt } from '../adapters/sms/sms-provider.js';
import { signedByTwilio } from '../adapters/twilio-webhook-signature.js';

const receipts = counter(
  'mfa_sms_receipts_total',
  'SMS delivery receipts by provider and status (unmatched: no SMS of this service has that message id; superseded: a receipt of a send a resend replaced; ambiguous: the provider gave its message id to SMS of two challenges; mismatched: its submit date is not that of the SMS its id names now)',
  ['provider', 'status'],
);

/**
 * A receipt can overtake the record of its message: the SMSC may send it right after
 * submit_sm_resp, before the route is written. It looks again after these pauses.
 */
const ROUTE_WAITS_MS = [250, 1_000];

export interface ReceiptRequest {
  challengeId: string;
  url: string;
  signature: string | undefined;
  params: Record<string, string>;
}

/**
 * SMS delivery receipts, from Twilio's status callbacks (signed, else 403 and nothing changes) and
 * from providers' sessions (SMPP deliver_sm). `delivered` and `undelivered` become
 * SmsDeliveryReported, with an id derived from the message and status, so a receipt delivered
 * again is stored once; an undelivered SMS makes the challenge's status delivery_failed, with the
 * user's other methods, as a send that failed does. Intermediate statuses are not recorded.
 */
export class SmsReceiptsService {
  constructor(
    private readonly options: {
      authToken: string | undefined;
      tenantOf: (challengeId: string) => Promise<string | undefined>;
      routes: Pick<ReceiptRoutes, 'find'>;
      publisher: EventPublisher;
      guard: Pick<SendGuard, 'undeliveredReceipt' | 'smsSendOf'>;
      log: Logger;
    },
  ) {
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  /** Twilio's status callback of a message, which names its challenge in the URL. */
  async receipt(req: ReceiptRequest): Promise<{ status: 204 | 403 | 404 }> {
    if (!signedByTwilio(this.options.authToken, req)) return { status: 403 };
    const { MessageSid: sid, MessageStatus: status, ErrorCode: errorCode } = req.params;
    if (!parseChallengeId(req.challengeId) || !sid) return { status: 404 };
    const final = status === 'delivered' ? 'delivered' : status === 'undelivered' || status === 'failed' ? 'undelivered' : undefined;
    if (!final) return { status: 204 };
    const tenantId = await this.options.tenantOf(req.challengeId);
    if (!tenantId) return { status: 404 };
    // Twilio's message sids are unique across all its accounts.
    await this.record({ tenantId, challengeId: req.challengeId, provider: 'twilio', providerMessageId: sid, status: final, errorCode }, `sms-receipt:${sid}:${final}`);
    return { status: 204 };
  }

  /**
   * A final receipt from a provider's session, which names only the provider's message id: its
   * challenge is found through the route recorded at sending. A receipt of no known message is
   * logged and dropped; a failure (Redis, NATS) is thrown, so the provider has it sent again.
   */
  async reported(receipt: SmsReceipt): Promise<void> {
    const { provider, providerMessageId, status } = receipt;
    let found = await this.options.routes.find(provider, providerMessageId);
    for (const waitMs of ROUTE_WAITS_MS) {
      if (found) break;
      await sleep(waitMs);
      found = await this.options.routes.find(provider, providerMessageId);
    }
    if (!found) {
      receipts.inc({ provider, status: 'unmatched' });
      this.options.log.info('SMS receipt of an unknown message ignored (sent by another system, or its record expired)', { provider, providerMessageId });
      return;
    }
    // Recorded for neither challenge: a wrong delivery in one (maybe another tenant's) report, or
    // a challenge failed by another's SMS, is worse than a delivery left unknown.
    if (found.kind === 'ambiguous') {
      receipts.inc({ provider, status: 'ambiguous' });
      this.options.log.warn('SMS receipt ignored: the provider gave its message id to SMS of more than one challenge, so it cannot tell whose it is', { provider, providerMessageId, status });
      return;
    }
    const { route, sentAt } = found;
    // The id named an earlier SMS too (its route since expired, or written by another system on
    // the account): a receipt the SMSC says it took the message for at a time no time zone makes
    // the route's is of that other SMS. Only then: the SMSC's zone is unknown.
    if (sentAt !== undefined && receipt.submitted && (sentAt < receipt.submitted.from || sentAt > receipt.submitted.to)) {
      receipts.inc({ provider, status: 'mismatched' });
      this.options.log.warn("SMS receipt ignored: its submit date is not that of the SMS its message id names (the provider reused the id)", {
        provider,
        providerMessageId,
        status,
        challengeId: route.challengeId,
      });
      return;
    }
    // An SMSC's message ids are unique only for a while and only at that SMSC: the challenge makes the event id unique.
    await this.record({ ...receipt, ...route }, `sms-receipt:${provider}:${route.challengeId}:${providerMessageId}:${receipt.status}`);
  }

  private async record(receipt: SmsReceipt & { tenantId: string; challengeId: string }, idSeed: string): Promise<void> {
    const { tenantId, challengeId, provider, providerMessageId, status, errorCode } = receipt;
    // A late receipt of an SMS that a resend has replaced says nothing of the send the user
    // waits for now: it neither fails the challenge nor becomes its delivery in the report (which
    // shows the latest send's). Also while the resend is still being sent: auth-challenge counts
    // it when it accepts it.
    const { index, latest } = await this.options.guard.smsSendOf(challengeId, provider, providerMessageId);
    if (index !== undefined && index < latest) {
      receipts.inc({ provider, status: 'superseded' });
      this.options.log.info(`SMS ${status} (receipt) of an earlier send: a later send replaced it; the challenge and its report are left as they are`, { challengeId, provider, errorCode });
      return;
    }
    receipts.inc({ provider, status });
    const event = createEvent('SmsDeliveryReported', 1, {
      id: eventIdOf(idSeed, 4),
      tenantId,
      aggregateId: challengeId,
      now: new Date(),
      data: { challengeId, provider, providerMessageId, status, ...(errorCode ? { errorCode: errorCode.slice(0, 16) } : {}) },
    });
    await publishWithRetry(this.options.publisher, EventSubjects.smsReceipt, event, { attempts: 3, delayMs: 250 });
    if (status === 'undelivered') {
      // The event records the fact for the report; the challenge and the user's methods only
      // follow a receipt of a challenge still open (a late one changes nothing there).
      const open = await this.options.guard.undeliveredReceipt(challengeId, Date.now());
      this.options.log.warn(open ? 'SMS undelivered (receipt)' : 'SMS undelivered (receipt) of a challenge already decided or expired: SMS not marked failed for the user', { challengeId, provider, errorCode });
    }
  }
}
