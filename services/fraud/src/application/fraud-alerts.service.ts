import { randomUUID } from 'node:crypto';
import {
  conflict,
  EventSubjects,
  forbidden,
  invalidRequest,
  unavailable,
  methodOf,
  notFound,
  rateLimited,
  type EventOf,
  type FraudReportReply,
  type FraudReportRequest,
} from '@mfa/contracts';
import { userTag, type Keyring } from '@mfa/crypto';
import { createEvent, eventIdOf, publishWithRetry, type EventPublisher } from '@mfa/messaging';
import { parseChallengeId } from '@mfa/projection';
import { counter } from '@mfa/telemetry';
import type { ChallengeDenial, ChallengeOrigin } from '../adapters/challenge-denial.js';
import { blockedUntil, fraudBlockUntil, type Actor } from '../domain/user-block.js';
import type { BlocksService } from './blocks.service.js';

const alerts = counter('mfa_fraud_alerts_total', 'Fraud alerts by source and what was done', ['source', 'challenge_denied', 'blocked']);
const completionsLeft = counter('mfa_fraud_alert_completions_deferred_total', 'Fraud alerts recorded whose report could not complete them: the alerts consumer does');

/**
 * fraud.report's limit per user: new alerts in any hour. A report that denies a challenge still
 * waiting is refused only past FRAUD_DENYING_REPORTS_PER_WINDOW (it counts all the same); a report
 * sent again is the same alert.
 */
export const FRAUD_REPORTS_PER_WINDOW = 10;
/** Reports that deny a challenge still waiting: challenges started in bulk and reported one by one are bounded too. */
export const FRAUD_DENYING_REPORTS_PER_WINDOW = 50;
export const FRAUD_REPORT_WINDOW_MS = 3_600_000;

/**
 * fraud.report: a user (from the app, or pressing the fraud code in a call) or the IdP says a
 * sign-in was not theirs. The challenge named is denied first, atomically, if it is still waiting
 * (nothing can approve it after that, as before alerts were recorded first); then the alert is
 * recorded (FraudReported, with what it does: the challenge denied, the tenant's auto-block for 90
 * days or the block in force), then completed: here at once, and by the alerts consumer on every
 * delivery, so a report that fails halfway (an election, a timeout, a crash) is completed all the
 * same, and neither does anything twice (`complete`). The same report again (same challenge) finds its alert on the
 * challenge (named by a completion, or after the place the first report noted before recording it,
 * however long ago: past the stream's de-duplication window too): it changes nothing more, records
 * nothing twice and answers the same.
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

  /**
   * `deviceId`: the authenticator app that reported (InternalSubjects.fraudFromApp, from the device
   * API, which checked the device's signature); recorded in the alert, and by its completion in the
   * challenge's ChallengeFraudReported, so that the report names the app as for its other answers.
   */
  async report(request: FraudReportRequest, now: Date, by?: Actor, deviceId?: string): Promise<FraudReportReply> {
    const { tenantId, userId } = request;
    const settings = await this.blocks.requireTenant(tenantId);
    if (!settings.fraudAlert.enabled) throw forbidden('fraud alerts are turned off for this tenant (fraudAlert.enabled)');
    if (!this.canMail && settings.notificationEmails.length > 0) {
      throw unavailable('fraud alerts of this tenant are e-mailed (notificationEmails), but no SMTP server is configured (SMTP_URL)');
    }
    await this.blocks.requireRegistered(tenantId, userId);
    const tag = userTag(this.keyring, tenantId, userId);
    // Another user's device is no answer of this one. Its id carries the user's tag when it was
    // activated, which an earlier master key may have given (an app keeps its id across a
    // rotation): the user's devices say, not the tag.
    if (deviceId !== undefined && !(await this.blocks.dependency(() => this.denial.isDeviceOf(tag, deviceId)))) throw invalidRequest('deviceId: not a device of this user');

    let waiting = false;
    let origin: ChallengeOrigin = {};
    const id = request.challengeId !== undefined ? parseChallengeId(request.challengeId) : undefined;
    if (request.challengeId !== undefined) {
      // A challenge of another user (or tenant) is unknown here, as everywhere.
      if (!id || id.tag !== tag) throw notFound('unknown challenge');
      const seen = await this.blocks.dependency(() => this.denial.look(id.tag, id.nonce, tenantId, userId, now));
      if (seen.kind === 'not_found') throw notFound('unknown challenge');
      const recorded = seen.alertSeq !== undefined ? await this.blocks.alertAt(seen.alertSeq) : undefined;
      if (recorded?.data.challengeId === request.challengeId) return this.repeat(recorded, seen.alertSeq!);
      // A report for it was about to record its alert, and no completion named it here yet (none
      // ran, or it failed): the copy recorded first is the alert, however long ago (past the
      // stream's de-duplication window a publish would record a second copy).
      const earlier =
        seen.alertAfter !== undefined ? await this.blocks.findAlert(tenantId, userId, eventIdOf(`${request.challengeId}:fraud`), seen.alertAfter) : undefined;
      if (earlier) return this.repeat(earlier.alert, earlier.seq);
      if (seen.kind === 'denied_for_fraud' && !seen.pending) {
        // Denied by a report of the time before alerts were recorded first: that report did what it did.
        const until = settings.fraudAlert.autoBlock ? blockedUntil(await this.blocks.blockState(tenantId, userId), now) : undefined;
        return { alertId: eventIdOf(`${request.challengeId}:fraud`), challengeDenied: true, blocked: until !== undefined, ...(until !== undefined ? { blockedUntil: new Date(until).toISOString() } : {}) };
      }
      // The authenticator app's report is an answer to a push still waiting (docs/device-api.md):
      // one that another device answered first, or that expired, is refused before anything is
      // recorded or anyone blocked. Other sources report a sign-in after the fact as well.
      if (seen.kind === 'ended' && request.source === 'app') throw conflict('the challenge is not waiting for an answer');
      // Denied first by this report (sent again after its alert failed to be recorded): still to record.
      waiting = seen.kind === 'waiting' || seen.kind === 'denied_for_fraud';
      origin = seen.origin;
    }
    const alertId = request.challengeId !== undefined ? eventIdOf(`${request.challengeId}:fraud`) : randomUUID();
    const admitted = await this.blocks.dependency(() =>
      this.denial.admitReport(tag, alertId, now, { max: FRAUD_REPORTS_PER_WINDOW, windowMs: FRAUD_REPORT_WINDOW_MS, denies: waiting, maxDenying: FRAUD_DENYING_REPORTS_PER_WINDOW }),
    );
    if (admitted.retryAt !== undefined) {
      const seconds = Math.max(1, Math.ceil((admitted.retryAt - now.getTime()) / 1000));
      throw rateLimited(`too many fraud reports for this user; try again in ${seconds} s`, seconds);
    }
    if (id && waiting) {
      // Denied now, before anything is recorded: a verify, a call's keys or another device's answer
      // that comes after this cannot approve the sign-in its user disowned. One that came first
      // stands, and the alert says the challenge was not denied.
      const denied = await this.blocks.dependency(() => this.denial.denyPending(id.tag, id.nonce, tenantId, userId, now));
      if (denied.kind === 'not_found') throw notFound('unknown challenge');
      if (denied.kind === 'completed') {
        if (request.source === 'app') {
          await this.denial.forgetReport(tag, alertId).catch(() => undefined);
          throw conflict('the challenge is not waiting for an answer');
        }
        waiting = false;
      }
    }
    // Where this alert will be, for the report sent again (above): noted before it is published.
    if (id) {
      const after = await this.blocks.lastAlertSeq(tenantId, userId);
      await this.blocks.dependency(() => this.denial.noteReport(id.tag, id.nonce, tenantId, userId, after));
    }
    const until = settings.fraudAlert.autoBlock ? fraudBlockUntil(await this.blocks.blockState(tenantId, userId), now) : undefined;

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
        challengeDenied: waiting,
        blocked: until !== undefined,
        ...(until !== undefined ? { blockedUntil: new Date(until).toISOString() } : {}),
        ...(by ? { by } : {}),
        ...(deviceId !== undefined ? { deviceId } : {}),
      },
    });
    const ack = await this.blocks
      .dependency(() => publishWithRetry(this.publisher, EventSubjects.fraudAlert(tenantId, userId), reported, { attempts: 3, delayMs: 100 }))
      .catch(async (error: unknown) => {
        // Not recorded: a report without a challenge is retried under a new id, which must find
        // its place in the window (one naming a challenge keeps its id, and its denial stands).
        if (request.challengeId === undefined) await this.denial.forgetReport(tag, alertId).catch(() => undefined);
        throw error;
      });
    // The same report twice at once (a retry while the first was on its way): the alert stored first is the one.
    const alert = (ack.duplicate ? await this.blocks.alertAt(ack.seq) : undefined) ?? reported;
    if (!ack.duplicate) alerts.inc({ source: request.source, challenge_denied: String(waiting), blocked: String(until !== undefined) });
    await this.completeNow(alert, ack.seq);
    return replyOf(alert);
  }

  /** A report already recorded, sent again: its alert completed if it was not yet, and its answer. */
  private async repeat(alert: EventOf<'FraudReported'>, seq: number): Promise<FraudReportReply> {
    await this.completeNow(alert, seq);
    return replyOf(alert);
  }

  /** The report's own completion of its alert: what fails here is left to the alerts consumer, the alert being recorded. */
  private async completeNow(alert: EventOf<'FraudReported'>, seq: number): Promise<void> {
    try {
      await this.complete(alert, seq);
    } catch (error) {
      completionsLeft.inc();
      this.blocks.logger.warn('fraud alert recorded but not completed yet: the alerts consumer completes it', { alertId: alert.data.alertId, error });
    }
  }

  /**
   * Does what the alert recorded at MFA_FRAUD sequence `seq` says, once, whoever runs it and
   * however often (the report, then the alerts consumer): names the alert on its challenge and
   * denies the challenge if it was waiting when reported (Redis, atomically; the report's time
   * decides whether it had expired), publishes ChallengeFraudReported once (the challenge notes it),
   * and blocks the user once for the alert (BlocksService.blockForAlert).
   */
  async complete(alert: EventOf<'FraudReported'>, seq: number, now = new Date()): Promise<void> {
    const { tenantId } = alert;
    const { userId, alertId, challengeId, by, deviceId } = alert.data;
    const reportedAt = new Date(alert.occurredAt);
    const id = challengeId !== undefined ? parseChallengeId(challengeId) : undefined;
    if (challengeId !== undefined && id) {
      const outcome = await this.denial.denyPending(id.tag, id.nonce, tenantId, userId, reportedAt, { seq });
      const method = (outcome.kind === 'denied' || outcome.kind === 'already') && !outcome.recorded ? methodOf(outcome.method) : undefined;
      if (method) {
        const denied = createEvent('ChallengeFraudReported', 1, {
          tenantId,
          aggregateId: challengeId,
          now: reportedAt,
          id: eventIdOf(`${challengeId}:fraud_reported`),
          data: { challengeId, userId, method, server: this.server, alertId, ...(deviceId !== undefined ? { deviceId } : {}) },
        });
        await publishWithRetry(this.publisher, EventSubjects.challengeFraudReported, denied, { attempts: 3, delayMs: 100 });
        await this.denial.markRecorded(id.tag, id.nonce);
      }
    }
    if (alert.data.blocked && alert.data.blockedUntil !== undefined) {
      await this.blocks.blockForAlert({ tenantId, userId, alertId, seq, until: Date.parse(alert.data.blockedUntil), ...(by ? { by } : {}) }, now);
    }
  }
}

const replyOf = (alert: EventOf<'FraudReported'>): FraudReportReply => ({
  alertId: alert.data.alertId,
  challengeDenied: alert.data.challengeDenied,
  blocked: alert.data.blocked,
  ...(alert.data.blockedUntil !== undefined ? { blockedUntil: alert.data.blockedUntil } : {}),
});
