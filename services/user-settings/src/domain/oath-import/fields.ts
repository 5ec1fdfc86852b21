/**
 * Checks both import formats share: the text fields an administrator reads back (serial numbers,
 * user names, manufacturer and model), strict base64, and the serial numbers already seen.
 */
import { MAX_LABEL_FIELD_LENGTH, MAX_SERIAL_LENGTH } from './types.js';

/**
 * Characters no imported text may carry: controls (C0, C1, DEL), format characters (the bidi
 * embeddings, overrides and isolates, zero-width joiners, the BOM), line and paragraph
 * separators, private-use, unassigned and lone surrogate code points. They either break the
 * lists and error files the text ends up in, or make one serial number look like another.
 */
const HOSTILE = /[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}\p{Zl}\p{Zp}]/u;

/** Characters counted as code points, so a serial number of 64 accented letters fits. */
const codePoints = (text: string): number => {
  let count = 0;
  for (const _ of text) count++;
  return count;
};

/** Why `value` (already trimmed) cannot be stored as a text of at most `max` characters; undefined when it can. */
export function textProblem(value: string, max: number): string | undefined {
  if (codePoints(value) > max) return `longer than ${max} characters`;
  if (HOSTILE.test(value)) return 'contains control or invisible formatting characters';
  return undefined;
}

export type Checked = { ok: true; value: string | undefined } | { ok: false; reason: string };

/** A required serial number: 1 to MAX_SERIAL_LENGTH printable characters, surrounding spaces trimmed. */
export function checkSerial(raw: string | undefined): Checked {
  const value = raw?.trim() ?? '';
  if (value === '') return { ok: false, reason: 'serial number: missing' };
  const problem = textProblem(value, MAX_SERIAL_LENGTH);
  return problem ? { ok: false, reason: `serial number: ${problem}` } : { ok: true, value };
}

/** An optional label (manufacturer, model): empty or absent means none. */
export function checkLabel(column: string, raw: string | undefined): Checked {
  const value = raw?.trim() ?? '';
  if (value === '') return { ok: true, value: undefined };
  const problem = textProblem(value, MAX_LABEL_FIELD_LENGTH);
  return problem ? { ok: false, reason: `${column}: ${problem}` } : { ok: true, value };
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
