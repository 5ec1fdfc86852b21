import { randomUUID } from 'node:crypto';
import {
  conflict,
  EventSubjects,
  forbidden,
  unavailable,
  methodOf,
  notFound,
  type FraudReportReply,
  type FraudReportRequest,
} from '@mfa/contracts';
import { userTag, type Keyring } from '@mfa/crypto';
import { createEvent, eventIdOf, publishWithRetry, type EventPublisher } from '@mfa/messaging';
import { parseChallengeId } from '@mfa/projection';
import { counter } from '@mfa/telemetry';
import type { ChallengeDenial, ChallengeOrigin } from '../adapters/challenge-denial.js';
import type { Actor } from '../domain/user-block.js';
import type { BlocksService } from './blocks.service.js';

const alerts = counter('mfa_fraud_alerts_total', 'Fraud alerts by source and what was done', ['source', 'challenge_denied', 'blocked']);

/**
 * fraud.report: a user (from the app, or pressing the fraud code in a call) or the IdP says a
 * sign-in was not theirs. The pending challenge named is denied (`fraud_reported`), the tenant's
 * auto-block blocks the user for 90 days, and the alert is recorded (FraudReported) with what was
 * done. A retry of the same report (same challenge) changes nothing more and records nothing twice:
 * the challenge is already denied, the block already stands, and the events' ids derive from the
 * challenge.
 */
export class FraudAlertsService {
  constructor(
    private readonly blocks: BlocksService,
    private readonly denial: ChallengeDenial,
    private readonly publisher: EventPublisher,
    private readonly keyring: Keyring,
    private readonly server: { name: string; ip: string },
    /** false in production without SMTP_URL: an alert that should be mailed is refused rather than lost. */
    private readonly canMail: boolean,
  ) {}

  async report(request: FraudReportRequest, now: Date, by?: Actor): Promise<FraudReportReply> {
    const { tenantId, userId } = request;
    const settings = await this.blocks.requireTenant(tenantId);
    if (!settings.fraudAlert.enabled) throw forbidden('fraud alerts are turned off for this tenant (fraudAlert.enabled)');
    if (!this.canMail && settings.notificationEmails.length > 0) {
      throw unavailable('fraud alerts of this tenant are e-mailed (notificationEmails), but no SMTP server is configured (SMTP_URL)');
    }
    await this.blocks.requireRegistered(tenantId, userId);

    let denied: { method: string } | undefined;
    let origin: ChallengeOrigin = {};
    if (request.challengeId !== undefined) {
      const id = parseChallengeId(request.challengeId);
      // A challenge of another user (or tenant) is unknown here, as everywhere.
      if (!id || id.tag !== userTag(this.keyring, tenantId, userId)) throw notFound('unknown challenge');
      const outcome = await this.blocks.dependency(() => this.denial.denyPending(id.tag, id.nonce, tenantId, userId, now));
      if (outcome.kind === 'not_found') throw notFound('unknown challenge');
      // The authenticator app's report is an answer to a push still waiting (docs/device-api.md):
      // one that another device answered first, or that expired, is refused before anything is
      // recorded or anyone blocked. Other sources report a sign-in after the fact as well.
      if (outcome.kind === 'completed' && request.source === 'app') throw conflict('the challenge is not waiting for an answer');
      if (outcome.kind !== 'completed') denied = { method: outcome.method };
      origin = outcome.origin;
    }
    const alertId = request.challengeId !== undefined ? eventIdOf(`${request.challengeId}:fraud`) : randomUUID();
    const block = settings.fraudAlert.autoBlock ? await this.blocks.blockForFraud(tenantId, userId, now, by) : undefined;

    const reported = createEvent('FraudReported', 1, {
      tenantId,
      aggregateId: userId,
      now,
      id: alertId,
      data: {
        userId,
        alertId,
        ...(request.challengeId !== undefined ? { challengeId: request.challengeId } : {}),
        source: request.source,
        ...(request.comment !== undefined ? { comment: request.comment } : {}),
        ...origin,
        challengeDenied: denied !== undefined,
        blocked: block !== undefined,
        ...(block ? { blockedUntil: block.until } : {}),
        ...(by ? { by } : {}),
      },
    });
    await this.blocks.dependency(() => publishWithRetry(this.publisher, EventSubjects.fraudAlert(tenantId, userId), reported, { attempts: 3, delayMs: 100 }));
    const method = denied ? methodOf(denied.method) : undefined;
    if (request.challengeId !== undefined && method) {
      const outcome = createEvent('ChallengeFraudReported', 1, {
        tenantId,
        aggregateId: request.challengeId,
        now,
        id: eventIdOf(`${request.challengeId}:fraud_reported`),
        data: { challengeId: request.challengeId, userId, method, server: this.server, alertId },
      });
      await this.blocks.dependency(() => publishWithRetry(this.publisher, EventSubjects.challengeFraudReported, outcome, { attempts: 3, delayMs: 100 }));
    }
    alerts.inc({ source: request.source, challenge_denied: String(denied !== undefined), blocked: String(block !== undefined) });
    return {
      alertId,
      challengeDenied: denied !== undefined,
      blocked: block !== undefined,
      ...(block ? { blockedUntil: block.until } : {}),
    };
  }
}
