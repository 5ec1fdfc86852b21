import { invalidRequest } from '@mfa/contracts';
import { openCursor, sealCursor, type CursorScope, type Keyring } from '@mfa/crypto';

/**
 * Keyset pages of users.list and oath.tokens.list: the cursor is the last key of a page (a user id,
 * a serial number), sealed and bound to the tenant and the query, so a cursor of another tenant or
 * listing is `invalid_request`.
 */
export function cursorAfter(keyring: Keyring, scope: CursorScope, cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  let value: unknown;
  try {
    value = openCursor(keyring, scope, cursor);
  } catch {
    throw invalidRequest('cursor: not a cursor this listing issued');
  }
  if (typeof value !== 'string') throw invalidRequest('cursor: not a cursor this listing issued');
  return value;
}

/** The next page's cursor, when there is a next page. */
export const nextCursor = (keyring: Keyring, scope: CursorScope, next: string | undefined): { nextCursor?: string } =>
  next !== undefined ? { nextCursor: sealCursor(keyring, scope, next) } : {};
