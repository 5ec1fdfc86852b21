import { openCursor, sealCursor, type Keyring } from '@mfa/crypto';
import {
  invalidRequest,
  ResultDetail,
  type SigninItem,
  type SigninResult,
  type SigninsQueryReply,
} from '@mfa/contracts';

/**
 * The sign-in report as the query returns it: which stored rows are reported, how a row that
 * never got an outcome is reported, and the keyset cursor. Pure; the SQL lives in adapters/.
 */

/**
 * What a report row tells of one sign-in besides its time and outcome: who, by which method,
 * through which server, from where. The projection stores these fields and the reply item
 * carries them as they are.
 */
export type SigninDetails = Pick<
  SigninItem,
  'userId' | 'displayName' | 'email' | 'phoneNumber' | 'deviceToken' | 'authMethod' | 'serverName' | 'serverIp' | 'clientIp' | 'application'
>;

/** A report row as read from the store, before it is turned into a reply item. */
export interface SigninRow extends SigninDetails {
  challengeId: string;
  occurredAt: Date;
  /** occurred_at with the store's full (microsecond) precision, for the cursor. */
  position: string;
  /** Null: the challenge never got an outcome event (the store only returns expired ones). */
  result: SigninResult | null;
  resultDetail: string | null;
  deliveryStatus: 'sent' | 'failed' | null;
}

/**
 * The reported result of a row. A challenge left without an outcome past its lifetime failed:
 * because its SMS never arrived when delivery failed, by timing out otherwise. A timed-out
 * challenge whose SMS could not be delivered is reported as the delivery failure whether or not
 * the expiry event has been projected yet, so the detail does not change under the reader.
 * The store filters on the same rule: an unfinished row reported is a failure.
 */
export function deriveOutcome(row: Pick<SigninRow, 'result' | 'resultDetail' | 'deliveryStatus'>): {
  result: SigninResult;
  resultDetail: string;
} {
  const undelivered = row.deliveryStatus === 'failed';
  if (row.result === null || row.resultDetail === null) {
    return { result: 'failure', resultDetail: undelivered ? ResultDetail.smsNotDelivered : ResultDetail.timedOut };
  }
  if (row.result === 'failure' && row.resultDetail === ResultDetail.timedOut && undelivered) {
    return { result: 'failure', resultDetail: ResultDetail.smsNotDelivered };
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
    deviceToken: row.deviceToken,
    authMethod: row.authMethod,
    result,
    resultDetail,
    serverName: row.serverName,
    serverIp: row.serverIp,
    clientIp: row.clientIp,
    application: row.application,
  };
}

/** A point in the report order (occurred_at DESC, challenge_id DESC): rows strictly after it. */
export interface ReportPosition {
  occurredAt: string;
  challengeId: string;
}

const MICROSECOND_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** Rejects calendar overflow such as 31 February, which Date.parse silently rolls over. */
function isRealInstant(iso: string): boolean {
  const ms = Date.parse(iso);
  return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 23) === iso.slice(0, 23);
}

/** The query kind report cursors are bound to (with the tenant): no other report takes them. */
export const SIGNIN_CURSOR_KIND = 'reports.signins';

/**
 * The cursors of one tenant's sign-in report: the position of the last row returned, sealed with
 * the keyring (HMAC, see @mfa/crypto cursor.ts). A cursor that this report did not issue for this
 * tenant, or whose content is not a position, is `invalid_request`.
 */
export function signinCursors(keyring: Keyring, tenantId: string) {
  const scope = { tenantId, kind: SIGNIN_CURSOR_KIND };
  const bad = () => invalidRequest('cursor: not a cursor this report issued');
  return {
    encode: (position: ReportPosition): string => sealCursor(keyring, scope, [position.occurredAt, position.challengeId]),
    decode: (cursor: string): ReportPosition => {
      let value: unknown;
      try {
        value = openCursor(keyring, scope, cursor);
      } catch {
        throw bad();
      }
      if (!Array.isArray(value) || value.length !== 2) throw bad();
      const [occurredAt, challengeId] = value as unknown[];
      if (typeof occurredAt !== 'string' || !MICROSECOND_UTC.test(occurredAt) || !isRealInstant(occurredAt)) throw bad();
      if (typeof challengeId !== 'string' || challengeId.length === 0) throw bad();
      return { occurredAt, challengeId };
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
