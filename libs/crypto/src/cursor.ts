import { createHmac, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Keyring } from './keyring.js';

/**
 * Authenticated pagination cursors: `<payload>.<tag>`, the payload JSON in base64url and the tag
 * an HMAC-SHA256 (keyring.cursorKey, truncated to 128 bits) over the payload and the cursor's
 * scope. A cursor opens only in the scope it was sealed for, so one tenant's cursor, or one
 * report's, is refused by every other; a forged, truncated or edited one is refused too. The
 * payload is readable by whoever holds the cursor (it is not encrypted): put in it only what
 * that caller has already seen, such as the position of the last row of a page.
 *
 *     const scope = { tenantId, kind: 'reports.audit' };
 *     reply.nextCursor = sealCursor(keyring, scope, [lastRow.at, lastRow.id]);
 *     const position = openCursor(keyring, scope, request.cursor); // unknown: validate its shape
 */
export interface CursorScope {
  /** The tenant whose data the cursor pages through. */
  readonly tenantId: string;
  /** The query it continues, e.g. `reports.signins`: one name per report or listing. */
  readonly kind: string;
}

/** A cursor this service did not issue for this scope (answer it with `invalid_request`). */
export class CursorError extends Error {
  override name = 'CursorError';
}

const TAG_BYTES = 16;
const CURSOR = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{22})$/;

function tag(key: KeyObject, scope: CursorScope, payload: string): Buffer {
  // A JSON array keeps the fields apart whatever characters they hold.
  return createHmac('sha256', key)
    .update(JSON.stringify(['open-mfa/cursor/v1', scope.kind, scope.tenantId, payload]))
    .digest()
    .subarray(0, TAG_BYTES);
}

/** A cursor carrying `payload` (anything JSON can hold), valid only in `scope`. */
export function sealCursor(keyring: Keyring, scope: CursorScope, payload: unknown): string {
  const body = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
  return `${body}.${tag(keyring.cursorKey, scope, body).toString('base64url')}`;
}

/**
 * The payload of a cursor sealed for `scope` by this key or a previous one (a cursor issued just
 * before a key rotation still works). Throws CursorError for anything else. The payload comes
 * back as `unknown`: check its shape before use.
 */
export function openCursor(keyring: Keyring, scope: CursorScope, cursor: string): unknown {
  const match = CURSOR.exec(cursor);
  if (!match) throw new CursorError('not a cursor this service issued');
  const body = match[1]!;
  // Compared as text, so the one canonical encoding of a tag is the only one accepted.
  const presented = Buffer.from(match[2]!, 'ascii');
  const issued = [keyring, ...keyring.previous].some((ring) =>
    timingSafeEqual(Buffer.from(tag(ring.cursorKey, scope, body).toString('base64url'), 'ascii'), presented),
  );
  if (!issued) throw new CursorError('not a cursor this service issued');
  try {
    return JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch (cause) {
    throw new CursorError('not a cursor this service issued', { cause });
  }
}
