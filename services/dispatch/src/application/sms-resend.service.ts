import { unavailable, type DispatchEvent } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import type { ChallengeStarts } from '../adapters/challenge-starts.js';
import type { SendGuard } from '../adapters/send-guard.js';
import type { ProviderBreakers } from '../adapters/circuit-breakers.js';
import { resendProviders, resendSource } from '../domain/resend-policy.js';
import type { SmsDeliveryService } from './sms-delivery.service.js';
import { refuseDeletedTenant, TenantDeletedRefusal, type TenantsDeleted } from './tenant-deleted.js';

interface SmsResendOptions {
  starts: Pick<ChallengeStarts, 'read'>;
  guard: Pick<SendGuard, 'sendsBefore'>;
  delivery: Pick<SmsDeliveryService, 'send' | 'expiredBeforeResend' | 'refused'>;
  /** The deleted tenants: nothing is sent again for one (tenant-deleted.ts). */
  tenants: TenantsDeleted;
  /** SMS_PROVIDERS, in failover order. */
  providers: readonly string[];
  breakers?: Pick<ProviderBreakers, 'states'>;
  log: Logger;
  clock?: () => Date;
}

/**
 * Sends the code of a pending SMS challenge again (ChallengeResendRequested, from challenge.resend):
 * the same code, read back from the challenge's ChallengeStarted (at the stream sequence its
 * earlier sends recorded; the code is kept nowhere else), through the provider after the one that
 * sent last, open circuits skipped, then the usual failover. The send is SmsDeliveryService's, with
 * the resend's own claim (never sent twice), admission against the number's limits and outcome id.
 */
export class SmsResendService {
  private readonly clock: () => Date;

  constructor(private readonly options: SmsResendOptions) {
    this.clock = options.clock ?? (() => new Date());
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  /** The outcome recorded; undefined when nothing is sent nor recorded (the tenant is deleted). */
  async resend({ event, msg }: Delivery, signal?: AbortSignal): Promise<DispatchEvent | undefined> {
    if (event.type !== 'ChallengeResendRequested') throw new PoisonMessageError(`expected ChallengeResendRequested, got ${event.type}`);
    const { challengeId, resend } = event.data;
    try {
      // Before anything is read or recorded (an expired resend records a failure): dropped.
      await refuseDeletedTenant(this.options.tenants, event.tenantId);
    } catch (error) {
      if (!(error instanceof TenantDeletedRefusal)) throw error;
      this.options.delivery.refused(this.options.log.child({ eventId: event.id, tenantId: event.tenantId, challengeId, resend }));
      return undefined;
    }
    const { sends, failedSeq } = await this.options.guard.sendsBefore(challengeId, resend).catch((error: unknown) => {
      throw unavailable('the SMS send records (Redis) are unavailable; trying again later', error);
    });
    const source = resendSource(sends, failedSeq);
    if (source.kind === 'unsettled') {
      if (this.clock().getTime() >= Date.parse(event.data.expiresAt)) return this.options.delivery.expiredBeforeResend({ cause: event, resend }, msg);
      // An earlier send is under way, or the start's not taken up yet: once settled, it says where the code is.
      throw unavailable('an earlier send of this code has not settled yet; trying again later');
    }
    const started = await this.options.starts.read(source.startedSeq, event.tenantId, challengeId);
    const states = this.options.breakers?.states() ?? {};
    const open = new Set(Object.keys(states).filter((name) => states[name] === 'open'));
    const providers = resendProviders(this.options.providers, source.lastProvider, open);
    this.options.log.debug('resending an SMS code', { challengeId, resend, providers });
    return this.options.delivery.send({ started, startedSeq: source.startedSeq, cause: event, resend, providers }, msg, signal);
  }
}
