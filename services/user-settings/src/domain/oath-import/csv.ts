/**
 * The seed file of hardware OATH tokens as CSV: a header row
 * `upn,serial number,secret key,time interval[,manufacturer[,model]]`, or
 * `serial number,secret key,time interval` for tokens left unassigned, then one token per row.
 * These files carry TOTP tokens with HMAC-SHA1 and 6 digits only; the secret is Base32.
 *
 * The file is read chunk by chunk. Lines are cut here rather than by csv-parse: csv-parse's own
 * size limit (max_record_size), once it fires with skip_records_with_error, loses the rest of the
 * chunk it was reading, and a stray quote would let one row swallow the rows after it. So each
 * line is bounded and its quoting checked first; csv-parse then splits and unquotes all of a
 * chunk's good lines in one call, one record per line. A quoted field never spans lines here:
 * no column may contain a line break anyway.
 */
import { OATH_CSV_HEADER } from '@mfa/contracts';
import { base32Decode } from '@mfa/crypto';
import { parse } from 'csv-parse/sync';
import { checkLabel, checkSerial, checkUserId, SerialRegister } from './fields.js';
import { chunksOf } from './input.js';
import {
  handOut,
  ImportFileError,
  MAX_IMPORT_TOKENS,
  MAX_SECRET_BASE32,
  MIN_SECRET_BYTES,
  type ParsedRow,
  type ParsedToken,
} from './types.js';

/** Longest line (record) read, in bytes; a longer one is refused without being kept in memory. */
export const MAX_CSV_LINE_BYTES = 4096;

const COLUMNS = OATH_CSV_HEADER.split(',');
const REQUIRED_COLUMNS = 4;
/** The contract's three-column form: no upn (the tokens wait unassigned), no manufacturer or model. */
const UNASSIGNED_COLUMNS = COLUMNS.slice(1, REQUIRED_COLUMNS);
const EXPECTED_HEADER =
  'the first row must be "upn,serial number,secret key,time interval", optionally followed by ",manufacturer" and ",model", or "serial number,secret key,time interval"';

/** What the header says of the rows: how many columns, and whether the first is `upn`. */
interface Layout {
  columns: number;
  upn: boolean;
}

/** One line of the file, without its line break; `oversize` when it was longer than MAX_CSV_LINE_BYTES (its bytes are dropped). */
interface Line {
  bytes: Buffer;
  oversize: boolean;
}

/** Cuts a byte stream into lines at LF, keeping at most MAX_CSV_LINE_BYTES of a line in memory. */
class LineCutter {
  private parts: Buffer[] = [];
  private length = 0;
  private oversize = false;

  *push(chunk: Buffer): Generator<Line> {
    let start = 0;
    for (let end = chunk.indexOf(0x0a, start); end !== -1; end = chunk.indexOf(0x0a, start)) {
      this.keep(chunk.subarray(start, end));
      yield this.cut();
      start = end + 1;
    }
    // The rest waits for the next chunk; copied, as the caller may reuse its buffer.
    this.keep(Buffer.from(chunk.subarray(start)));
  }

  *end(): Generator<Line> {
    if (this.length > 0 || this.oversize) yield this.cut();
  }

  private keep(piece: Buffer): void {
    if (this.oversize || piece.length === 0) return;
    if (this.length + piece.length > MAX_CSV_LINE_BYTES + 1) {
      // +1: the CR of a CRLF line ending does not count against the limit.
      this.oversize = true;
      this.parts = [];
      this.length = 0;
      return;
    }
    this.parts.push(piece);
    this.length += piece.length;
  }

  private cut(): Line {
    let bytes = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.length);
    if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
    const line = { bytes, oversize: this.oversize || bytes.length > MAX_CSV_LINE_BYTES };
    this.parts = [];
    this.length = 0;
    this.oversize = false;
    return line;
  }
}

/**
 * Why the line's quoting is not RFC 4180 (a quote opens a field only at its start, a quote
 * inside a quoted field is doubled, a closing quote is followed by a comma or the end), or
 * undefined when it is. This is exactly what csv-parse would refuse, so a line that passes here
 * gives csv-parse one record and no error.
 */
export function quotingProblem(line: string): string | undefined {
  if (!line.includes('"')) return undefined;
  const FIELD_START = 0;
  const UNQUOTED = 1;
  const QUOTED = 2;
  const QUOTE_IN_QUOTED = 3;
  let state = FIELD_START;
  for (const c of line) {
    if (state === FIELD_START) state = c === '"' ? QUOTED : c === ',' ? FIELD_START : UNQUOTED;
    else if (state === UNQUOTED) {
      if (c === '"') return 'a quote inside a field that does not start with one';
      if (c === ',') state = FIELD_START;
    } else if (state === QUOTED) {
      if (c === '"') state = QUOTE_IN_QUOTED;
    } else if (c === '"') state = QUOTED;
    else if (c === ',') state = FIELD_START;
    else return 'text after the closing quote of a field';
  }
  return state === QUOTED ? 'a quoted field is not closed on its line' : undefined;
}

/** The fields of each line (lines already checked by quotingProblem), one record per line. */
function splitFields(lines: readonly string[]): string[][] {
  if (lines.length === 0) return [];
  let records: string[][];
  try {
    records = parse(lines.join('\n') + '\n', { record_delimiter: '\n', relax_column_count: true, bom: false, trim: false });
  } catch (error) {
    throw new ImportFileError(`the file could not be read as CSV: ${(error as Error).message}`);
  }
  // The checks above make this impossible; if it happened, rows would be matched to the wrong lines.
  if (records.length !== lines.length) throw new ImportFileError('the file could not be read as CSV: its records do not match its lines');
  return records;
}

function checkHeader(fields: readonly string[]): Layout {
  const names = fields.map((name) => name.trim().toLowerCase());
  if (names.length === UNASSIGNED_COLUMNS.length && names.every((name, i) => name === UNASSIGNED_COLUMNS[i])) return { columns: names.length, upn: false };
  const fits = names.length >= REQUIRED_COLUMNS && names.length <= COLUMNS.length && names.every((name, i) => name === COLUMNS[i]);
  if (!fits) throw new ImportFileError(`not the expected CSV header: ${EXPECTED_HEADER}`);
  return { columns: names.length, upn: true };
}

const BASE32 = /^[A-Za-z2-7]+=*$/;
/** Lengths (mod 8) a Base32 text without padding can have: 0, 2, 4, 5 or 7 characters of a last group. */
const BASE32_GROUP_ENDS = new Set([0, 2, 4, 5, 7]);

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * `body` with the bits of its last character beyond the last whole byte cleared. An encoder leaves
 * them zero, but vendors' files do not always, and oathtool and Python's b32decode drop them: so
 * do we, rather than refuse a secret they read.
 */
function withoutLeftoverBits(body: string): string {
  const leftover = (body.length * 5) % 8;
  if (leftover === 0) return body;
  const last = BASE32_ALPHABET.indexOf(body[body.length - 1]!.toUpperCase());
  return body.slice(0, -1) + BASE32_ALPHABET[last & ~((1 << leftover) - 1)];
}

/** The secret of the `secret key` column: RFC 4648 Base32, no spaces, at most MAX_SECRET_BASE32 characters. */
export function decodeSecretKey(raw: string): { ok: true; secret: Buffer } | { ok: false; reason: string } {
  const text = raw.trim();
  if (text === '') return { ok: false, reason: 'secret key: missing' };
  if (text.length > MAX_SECRET_BASE32) return { ok: false, reason: `secret key: longer than ${MAX_SECRET_BASE32} characters` };
  if (!BASE32.test(text)) return { ok: false, reason: 'secret key: not Base32 (RFC 4648: letters A-Z and digits 2-7 only, "=" only at the end)' };
  const body = text.replace(/=+$/, '');
  const padding = text.length - body.length;
  const groupEnd = body.length % 8;
  if (!BASE32_GROUP_ENDS.has(groupEnd) || (padding > 0 && padding !== 8 - groupEnd)) {
    return { ok: false, reason: 'secret key: not Base32 (RFC 4648): its length or padding cannot end a Base32 text' };
  }
  const secret = base32Decode(withoutLeftoverBits(body));
  if (secret.length < MIN_SECRET_BYTES) {
    secret.fill(0);
    return { ok: false, reason: `secret key: shorter than ${MIN_SECRET_BYTES} bytes (${Math.ceil((MIN_SECRET_BYTES * 8) / 5)} Base32 characters)` };
  }
  return { ok: true, secret };
}

function checkInterval(raw: string): { ok: true; period: 30 | 60 } | { ok: false; reason: string } {
  const value = raw.trim();
  if (value === '30') return { ok: true, period: 30 };
  if (value === '60') return { ok: true, period: 60 };
  return { ok: false, reason: 'time interval: must be 30 or 60 (seconds)' };
}

/** One data row as a token or a refusal; the first problem in column order is the reason. */
export function readRow(row: number, given: readonly string[], layout: Layout): ParsedRow {
  if (given.length !== layout.columns) {
    return { ok: false, rejected: { row, reason: `wrong number of columns: ${given.length} instead of ${layout.columns}` } };
  }
  // Without a upn column, a row reads as the seeds' form with an empty upn.
  const fields = layout.upn ? given : ['', ...given];
  const upn = checkUserId(fields[0]);
  const serial = checkSerial(fields[1]);
  // What could be read of the row, for the error file: valid fields only.
  const known = {
    ...(serial.ok ? { serialNumber: serial.value } : {}),
    ...(upn.ok && upn.value !== undefined ? { userId: upn.value } : {}),
  };
  const reject = (reason: string): ParsedRow => ({ ok: false, rejected: { row, ...known, reason } });
  if (!upn.ok) return reject(upn.reason);
  if (!serial.ok) return reject(serial.reason);
  const manufacturer = checkLabel('manufacturer', fields[4]);
  if (!manufacturer.ok) return reject(manufacturer.reason);
  const model = checkLabel('model', fields[5]);
  if (!model.ok) return reject(model.reason);
  const interval = checkInterval(fields[3]!);
  if (!interval.ok) return reject(interval.reason);
  const secret = decodeSecretKey(fields[2]!);
  if (!secret.ok) return reject(secret.reason);
  const token: ParsedToken = {
    row,
    serialNumber: serial.value!,
    secret: secret.secret,
    ...(upn.value !== undefined ? { userId: upn.value } : {}),
    algorithm: 'SHA1',
    digits: 6,
    period: interval.period,
    ...(manufacturer.value !== undefined ? { manufacturer: manufacturer.value } : {}),
    ...(model.value !== undefined ? { model: model.value } : {}),
  };
  return { ok: true, token };
}

/** A line as the reader sees it: skipped, refused whole, or text to split into fields. */
type LineText = { kind: 'blank' } | { kind: 'oversize' } | { kind: 'not-utf8' } | { kind: 'text'; text: string };

/** A data row on its way: refused before csv-parse sees it, or its text for csv-parse. */
type Pending = { row: number; reason: string } | { row: number; text: string };

/** The file's state between chunks: the header's layout, rows so far and serial numbers taken. */
class CsvReader {
  private layout: Layout | undefined;
  private rows = 0;
  private atStart = true;
  private readonly serials = new SerialRegister();
  // ignoreBOM: a BOM is dropped at the start of the file only (below); anywhere else it is a character to refuse.
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  /** The rows of a batch of lines, in file order. */
  read(lines: Iterable<Line>): ParsedRow[] {
    const pending: Pending[] = [];
    for (const line of lines) {
      const read = this.decode(line);
      if (read.kind === 'blank') continue;
      if (this.layout === undefined) {
        this.layout = this.header(read);
        continue;
      }
      const row = ++this.rows;
      if (row > MAX_IMPORT_TOKENS) throw new ImportFileError(`the file has more than ${MAX_IMPORT_TOKENS} rows; split it into several imports`);
      pending.push(toPending(row, read));
    }
    const records = splitFields(pending.flatMap((entry) => ('text' in entry ? [entry.text] : [])));
    let next = 0;
    return pending.map((entry) => {
      if (!('text' in entry)) return { ok: false, rejected: { row: entry.row, reason: entry.reason } };
      return this.unique(readRow(entry.row, records[next++]!, this.layout!));
    });
  }

  /** Throws when the file ended before a header. */
  end(): void {
    if (this.layout === undefined) throw new ImportFileError(`the file is empty: ${EXPECTED_HEADER}`);
  }

  private decode(line: Line): LineText {
    let bytes = line.bytes;
    if (this.atStart) {
      this.atStart = false;
      if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
    }
    if (line.oversize) return { kind: 'oversize' };
    let text: string;
    try {
      text = this.utf8.decode(bytes);
    } catch {
      return { kind: 'not-utf8' };
    }
    return text.trim() === '' ? { kind: 'blank' } : { kind: 'text', text };
  }

  private header(read: LineText): Layout {
    if (read.kind !== 'text' || quotingProblem(read.text) !== undefined) throw new ImportFileError(`not the expected CSV header: ${EXPECTED_HEADER}`);
    return checkHeader(splitFields([read.text])[0]!);
  }

  /** A later row with a serial number an earlier imported row has is refused. */
  private unique(parsed: ParsedRow): ParsedRow {
    if (!parsed.ok) return parsed;
    const duplicate = this.serials.claim(parsed.token.serialNumber, parsed.token.row);
    if (duplicate === undefined) return parsed;
    const { row, serialNumber, userId, secret } = parsed.token;
    secret.fill(0);
    return { ok: false, rejected: { row, serialNumber, ...(userId !== undefined ? { userId } : {}), reason: duplicate } };
  }
}

function toPending(row: number, read: Exclude<LineText, { kind: 'blank' }>): Pending {
  if (read.kind === 'oversize') return { row, reason: `row longer than ${MAX_CSV_LINE_BYTES} bytes` };
  if (read.kind === 'not-utf8') return { row, reason: 'row is not UTF-8 text' };
  const problem = quotingProblem(read.text);
  return problem ? { row, reason: `row is not valid CSV: ${problem}` } : { row, text: read.text };
}

/**
 * The tokens of a CSV seed file, in file order. Row numbers count data rows (blank lines and
 * the header are not rows). A row's problem refuses that row only; a missing or wrong header,
 * or more than MAX_IMPORT_TOKENS rows, fails the file (ImportFileError).
 */
export async function* parseCsv(input: AsyncIterable<Buffer> | Buffer): AsyncGenerator<ParsedRow> {
  const cutter = new LineCutter();
  const reader = new CsvReader();
  for await (const chunk of chunksOf(input)) yield* handOut(reader.read(cutter.push(chunk)));
  yield* handOut(reader.read(cutter.end()));
  reader.end();
}
