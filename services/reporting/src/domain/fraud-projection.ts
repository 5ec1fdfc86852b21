import type { EventOf } from '@mfa/contracts';
import type { Sequenced } from './signin-projection.js';

/** Every event of MFA_FRAUD, as the fraud report projects it. */
export type FraudStreamEvent = EventOf<
  'UserBlocked' | 'UserUnblocked' | 'FraudReported' | 'IpLocked' | 'IpUnlocked' | 'FraudNotificationSent' | 'FraudNotificationFailed'
>;

export interface AlertRow {
  alertId: string;
  tenantId: string;
  occurredAt: string;
  userId: string;
  source: 'app' | 'phone' | 'idp';
  challengeId: string | null;
  clientIp: string | null;
  application: string | null;
  comment: string | null;
  challengeDenied: boolean;
  blocked: boolean;
  blockedUntil: string | null;
  reportedBy: string | null;
  seq: number;
}

export interface NotificationRow {
  eventId: string;
  tenantId: string;
  alertId: string;
  recipient: string;
  sent: boolean;
  detail: string;
  attempts: number;
  occurredAt: string;
}

export type BlockAction = 'block' | 'unblock' | 'auto_unblock' | 'ip_lock' | 'ip_unlock';
export interface BlockRow {
  eventId: string;
  tenantId: string;
  occurredAt: string;
  action: BlockAction;
  userId: string | null;
  ip: string | null;
  reason: string | null;
  source: 'admin' | 'fraud_report' | 'ip_lockout' | null;
  actor: { clientId?: string; operator?: string } | null;
  until: string | null;
  dryRun: boolean;
  seq: number;
}

export interface FraudRows {
  alerts: AlertRow[];
  notifications: NotificationRow[];
  blocks: BlockRow[];
}

const actorOf = (by: { clientId?: string | undefined; operator?: string | undefined } | undefined) => {
  if (!by) return null;
  const actor: { clientId?: string; operator?: string } = {};
  if (by.clientId) actor.clientId = by.clientId;
  if (by.operator) actor.operator = by.operator;
  return Object.keys(actor).length > 0 ? actor : null;
};

/**
 * The rows a batch of fraud events makes: every event is one row of its table, keyed by the
 * event's (or alert's) id, so a replay writes the same rows again and changes nothing.
 */
export function foldFraudEvents(items: readonly Sequenced<FraudStreamEvent>[]): FraudRows {
  const rows: FraudRows = { alerts: [], notifications: [], blocks: [] };
  for (const { event, seq } of items) {
    const base = { eventId: event.id, tenantId: event.tenantId, occurredAt: event.occurredAt, seq };
    switch (event.type) {
      case 'FraudReported': {
        const d = event.data;
        rows.alerts.push({
          alertId: d.alertId,
          tenantId: event.tenantId,
          occurredAt: event.occurredAt,
          userId: d.userId,
          source: d.source,
          challengeId: d.challengeId ?? null,
          clientIp: d.clientIp ?? null,
          application: d.application ?? null,
          comment: d.comment ?? null,
          challengeDenied: d.challengeDenied,
          blocked: d.blocked,
          blockedUntil: d.blockedUntil ?? null,
          reportedBy: d.by?.clientId ?? null,
          seq,
        });
        break;
      }
      case 'FraudNotificationSent':
      case 'FraudNotificationFailed': {
        const d = event.data;
        rows.notifications.push({
          eventId: event.id,
          tenantId: event.tenantId,
          alertId: d.alertId,
          recipient: d.to,
          sent: event.type === 'FraudNotificationSent',
          detail: event.type === 'FraudNotificationSent' ? event.data.messageId : event.data.error,
          attempts: d.attempts,
          occurredAt: event.occurredAt,
        });
        break;
      }
      case 'UserBlocked':
        rows.blocks.push({
          ...base,
          action: 'block',
          userId: event.data.userId,
          ip: null,
          reason: event.data.reason,
          source: event.data.source,
          actor: actorOf(event.data.by),
          until: event.data.until,
          dryRun: false,
        });
        break;
      case 'UserUnblocked':
        rows.blocks.push({
          ...base,
          action: event.data.automatic ? 'auto_unblock' : 'unblock',
          userId: event.data.userId,
          ip: null,
          reason: event.data.reason ?? (event.data.automatic ? 'the block ended' : null),
          source: null,
          actor: actorOf(event.data.by),
          until: null,
          dryRun: false,
        });
        break;
      case 'IpLocked':
        rows.blocks.push({
          ...base,
          action: 'ip_lock',
          userId: null,
          ip: event.data.ip,
          reason: `${event.data.failures} denials from ${event.data.users} users within ${event.data.windowMinutes} min`,
          source: 'ip_lockout',
          actor: null,
          until: event.data.until,
          dryRun: event.data.dryRun,
        });
        break;
      case 'IpUnlocked':
        rows.blocks.push({
          ...base,
          action: 'ip_unlock',
          userId: null,
          ip: event.data.ip,
          reason: event.data.reason,
          source: null,
          actor: actorOf(event.data.by),
          until: null,
          dryRun: false,
        });
        break;
    }
  }
  return rows;
}
