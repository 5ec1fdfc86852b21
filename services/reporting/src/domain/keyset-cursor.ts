import { invalidRequest } from '@mfa/contracts';
import { openCursor, sealCursor, type Keyring } from '@mfa/crypto';

const MICROSECOND_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** Rejects calendar overflow such as 31 February, which Date.parse silently rolls over. */
function isRealInstant(iso: string): boolean {
  const ms = Date.parse(iso);
  return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 23) === iso.slice(0, 23);
}

/** A point in a report's keyset order (occurred_at DESC, id DESC): rows strictly after it. */
export interface KeysetPosition {
  /** occurred_at with the store's full (microsecond) precision. */
  occurredAt: string;
  id: string;
}

/**
 * The cursors of one tenant's report of one kind: the position of the last row returned, sealed
 * with the keyring (HMAC, see @mfa/crypto cursor.ts) and bound to tenant and kind. A cursor that
 * this report did not issue for this tenant, or whose content is not a position, is
 * `invalid_request`.
 */
export function keysetCursors(keyring: Keyring, tenantId: string, kind: string, isId: (id: string) => boolean) {
  const scope = { tenantId, kind };
  const bad = () => invalidRequest('cursor: not a cursor this report issued');
  return {
    encode: (position: KeysetPosition): string => sealCursor(keyring, scope, [position.occurredAt, position.id]),
    decode: (cursor: string): KeysetPosition => {
      let value: unknown;
      try {
        value = openCursor(keyring, scope, cursor);
      } catch {
        throw bad();
      }
      if (!Array.isArray(value) || value.length !== 2) throw bad();
      const [occurredAt, id] = value as unknown[];
      if (typeof occurredAt !== 'string' || !MICROSECOND_UTC.test(occurredAt) || !isRealInstant(occurredAt)) throw bad();
      if (typeof id !== 'string' || !isId(id)) throw bad();
      return { occurredAt, id };
    },
  };
}
