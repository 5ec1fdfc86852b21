import type { Keyring } from '@mfa/crypto';
import {
  ResultDetail,
  type SigninItem,
  type SigninResult,
  type SigninsQueryReply,
} from '@mfa/contracts';
import { keysetCursors } from './keyset-cursor.js';

/**
 * The sign-in report as the query returns it: which stored rows are reported, how a row that
 * never got an outcome is reported, and the keyset cursor. Pure; the SQL lives in adapters/.
 */

/**
 * What a report row tells of one sign-in besides its time and outcome: who, by which method,
 * through which server (and which front: NATS or RADIUS), from where. The projection stores these fields and the reply item
 * carries them as they are.
 */
export type SigninDetails = Pick<
  SigninItem,
  'userId' | 'displayName' | 'email' | 'phoneNumber' | 'deviceToken' | 'authMethod' | 'serverName' | 'serverIp' | 'clientIp' | 'application' | 'via'
>;

/** A report row as read from the store, before it is turned into a reply item. */
export interface SigninRow extends SigninDetails {
  challengeId: string;
  occurredAt: Date;
  /** occurred_at with the store's full (microsecond) precision, for the cursor. */
  position: string;
  /**
   * The personal data as the start event sealed it, and the generation of the user's data key it
   * was sealed under; null for rows written in clear (v1 events) or without personal data. The
   * application opens it before the row becomes a reply item.
   */
  pii: { sealed: string; gen: number } | null;
  /** Null: the challenge never got an outcome event (the store only returns expired ones). */
  result: SigninResult | null;
  resultDetail: string | null;
  deliveryStatus: 'sent' | 'failed' | 'delivered' | 'undelivered' | null;
  deliveryProvider?: string | null;
  deliveryError?: string | null;
  /** Times the SMS code was sent again (challenge.resend). */
  resends?: number;
  /** Push: the device whose signed answer decided. */
  deviceId?: string | null;
}

/**
 * The reported result of a row. A challenge left without an outcome past its lifetime failed:
 * because its SMS, call or push never arrived when delivery failed (each method its own words),
 * by timing out otherwise. A timed-out
 * challenge whose SMS could not be delivered is reported as the delivery failure whether or not
 * the expiry event has been projected yet, so the detail does not change under the reader.
 * The store filters on the same rule: an unfinished row reported is a failure.
 */
export function deriveOutcome(row: Pick<SigninRow, 'result' | 'resultDetail' | 'deliveryStatus'> & { authMethod?: string | null }): {
  result: SigninResult;
  resultDetail: string;
} {
  const undelivered = row.deliveryStatus === 'failed' || row.deliveryStatus === 'undelivered';
  const notDelivered = row.authMethod === 'voice' ? ResultDetail.callNotAnswered : row.authMethod === 'push' ? ResultDetail.pushNotDelivered : ResultDetail.smsNotDelivered;
  if (row.result === null || row.resultDetail === null) {
    return { result: 'failure', resultDetail: undelivered ? notDelivered : ResultDetail.timedOut };
  }
  if (row.result === 'failure' && row.resultDetail === ResultDetail.timedOut && undelivered) {
    return { result: 'failure', resultDetail: notDelivered };
  }
  return { result: row.result, resultDetail: row.resultDetail };
}

export function toSigninItem(row: SigninRow): SigninItem {
  const { result, resultDetail } = deriveOutcome(row);
  return {
    challengeId: row.challengeId,
    occurredAt: row.occurredAt.toISOString(),
    userId: row.userId,
    displayName: row.displayName,
    email: row.email,
    phoneNumber: row.phoneNumber,
    // MISSION.md's "device token (app)": the authenticator app that decided a push, by its device id
    // (its push token is a secret, sealed, and never reported); null for every other sign-in.
    deviceToken: row.deviceToken ?? row.deviceId ?? null,
    authMethod: row.authMethod,
    result,
    resultDetail,
    serverName: row.serverName,
    serverIp: row.serverIp,
    clientIp: row.clientIp,
    application: row.application,
    via: row.via,
    ...(row.deliveryStatus ? { delivery: { status: row.deliveryStatus, provider: row.deliveryProvider ?? null, error: row.deliveryError ?? null } } : {}),
    ...(row.resends ? { resends: row.resends } : {}),
    ...(row.deviceId ? { deviceId: row.deviceId } : {}),
  };
}

/** A point in the report order (occurred_at DESC, challenge_id DESC): rows strictly after it. */
export interface ReportPosition {
  occurredAt: string;
  challengeId: string;
}

/** The query kind report cursors are bound to (with the tenant): no other report takes them. */
export const SIGNIN_CURSOR_KIND = 'reports.signins';

/** The cursors of one tenant's sign-in report (keyset-cursor.ts), positioned by challenge id. */
export function signinCursors(keyring: Keyring, tenantId: string) {
  const cursors = keysetCursors(keyring, tenantId, SIGNIN_CURSOR_KIND, (id) => id.length > 0);
  return {
    encode: (position: ReportPosition): string => cursors.encode({ occurredAt: position.occurredAt, id: position.challengeId }),
    decode: (cursor: string): ReportPosition => {
      const { occurredAt, id } = cursors.decode(cursor);
      return { occurredAt, challengeId: id };
    },
  };
}
export type SigninCursors = ReturnType<typeof signinCursors>;

/**
 * One page from `limit + 1` rows read in report order: the extra row only tells that more may
 * follow, and the cursor points at the last row returned.
 */
export function toPage(rows: readonly SigninRow[], limit: number, cursors: Pick<SigninCursors, 'encode'>): SigninsQueryReply {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const reply: SigninsQueryReply = { items: page.map(toSigninItem) };
  if (rows.length > limit && last) {
    reply.nextCursor = cursors.encode({ occurredAt: last.position, challengeId: last.challengeId });
  }
  return reply;
}
