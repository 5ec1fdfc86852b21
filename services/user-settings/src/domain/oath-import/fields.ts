/**
 * Checks both import formats share: the text fields an administrator reads back (serial numbers,
 * user names, manufacturer and model), strict base64, and the serial numbers already seen.
 */
import { Label, SerialNumber, UserId } from '@mfa/contracts';
import type { z } from 'zod';

/** A field as the service's own schema reads it: the value, or the reason naming the column (never the value). */
function checked(column: string, schema: z.ZodType<string>, value: string): Checked {
  const result = schema.safeParse(value);
  return result.success ? { ok: true, value: result.data } : { ok: false, reason: `${column}: ${result.error.issues[0]?.message ?? 'invalid'}` };
}

export type Checked = { ok: true; value: string | undefined } | { ok: false; reason: string };

/**
 * A required serial number, surrounding spaces trimmed: what `oath.tokens.assign` and the rest of
 * the API accept (SerialNumber: at most 64 characters, no control, bidi or zero-width characters),
 * so that every imported token can be named again.
 */
export function checkSerial(raw: string | undefined): Checked {
  const value = raw?.trim() ?? '';
  if (value === '') return { ok: false, reason: 'serial number: missing' };
  return checked('serial number', SerialNumber, value);
}

/** An optional user id (the CSV's `upn`): empty or absent means none. */
export function checkUserId(raw: string | undefined): Checked {
  const value = raw?.trim() ?? '';
  return value === '' ? { ok: true, value: undefined } : checked('upn', UserId, value);
}

/** An optional label (manufacturer, model): empty or absent means none. */
export function checkLabel(column: string, raw: string | undefined): Checked {
  const value = raw?.trim() ?? '';
  return value === '' ? { ok: true, value: undefined } : checked(column, Label, value);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Strict base64 (RFC 4648 §4) as XML's base64Binary carries it: whitespace anywhere is ignored,
 * anything else must be the alphabet with correct padding. Node's own decoder skips characters it
 * does not know and stops at a truncation without a word, which would turn a damaged secret into
 * a different secret; undefined here instead.
 */
export function decodeBase64(text: string): Buffer | undefined {
  const compact = text.replace(/[ \t\r\n]+/g, '');
  if (compact === '' || !BASE64.test(compact)) return undefined;
  return Buffer.from(compact, 'base64');
}

/** The serial numbers a file has imported so far, so that a later row with the same one is refused. */
export class SerialRegister {
  private readonly firstRow = new Map<string, number>();

  /** Records `serial` for `row`; the reason to refuse the row if an earlier row took it. */
  claim(serial: string, row: number): string | undefined {
    const first = this.firstRow.get(serial);
    if (first !== undefined) return `duplicate serial number (first at row ${first})`;
    this.firstRow.set(serial, row);
    return undefined;
  }
}
