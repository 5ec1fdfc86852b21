import { Readable } from 'node:stream';
import { parse, type CsvError } from 'csv-parse';
import { Label, OATH_CSV_HEADER, SerialNumber, UserId } from '@mfa/contracts';
import { base32Decode } from '@mfa/crypto';
import { ImportFileError, MAX_IMPORT_TOKENS, MAX_SECRET_BASE32, MIN_SECRET_BYTES, type ParsedRow, type RejectedRow } from './types.js';

/** Longest record read (a row is ~200 bytes; a huge field is a hostile file's, refused by the parser). */
const MAX_RECORD_BYTES = 4096;
const COLUMNS = OATH_CSV_HEADER.split(',');
const REQUIRED = COLUMNS.slice(0, 4);
/** RFC 4648 Base32, any case, `=` padding at the end only. */
const BASE32 = /^[A-Za-z2-7]+=*$/;

/**
 * The seeds' CSV (`upn,serial number,secret key,time interval,manufacturer,model`) through
 * csv-parse: a UTF-8 BOM, CRLF and RFC 4180 quoting are handled there, blank lines skipped. Each
 * data row becomes a token or a row refused with its reason, in file order; a row the parser cannot
 * read (an unterminated quote, a field past MAX_RECORD_BYTES) fails the file, since nothing after
 * it can be trusted to line up.
 */
export async function* parseCsv(input: AsyncIterable<Buffer> | Buffer): AsyncGenerator<ParsedRow> {
  const source = Buffer.isBuffer(input) ? Readable.from([input]) : Readable.from(input);
  const parser = source.pipe(
    parse({ bom: true, skip_empty_lines: true, relax_column_count: true, max_record_size: MAX_RECORD_BYTES, trim: false }),
  );
  let header: string[] | undefined;
  let row = 0;
  const seen = new Map<string, number>();
  try {
    for await (const record of parser as AsyncIterable<string[]>) {
      if (!header) {
        header = record.map((h) => h.trim().toLowerCase());
        const named = header.length >= 4 && header.length <= COLUMNS.length && header.every((h, i) => h === COLUMNS[i]);
        if (!named) throw new ImportFileError(`the first line must be the header "${OATH_CSV_HEADER}" (manufacturer and model may be left out)`);
        continue;
      }
      row++;
      if (row > MAX_IMPORT_TOKENS) throw new ImportFileError(`more than ${MAX_IMPORT_TOKENS} tokens in one file: split it`);
      yield csvRow(row, record, header.length, seen);
    }
  } catch (error) {
    if (error instanceof ImportFileError) throw error;
    const csv = error as CsvError;
    throw new ImportFileError(`not a readable CSV file${csv.code ? ` (${csv.code} near data row ${row + 1})` : ''}`);
  }
  if (!header) throw new ImportFileError(`the file is empty: it must start with the header "${OATH_CSV_HEADER}"`);
}

function csvRow(row: number, record: string[], columns: number, seen: Map<string, number>): ParsedRow {
  const [upn = '', serial = '', secretText = '', interval = '', manufacturer = '', model = ''] = record.map((f) => f.trim());
  const partial: RejectedRow = { row, reason: '' };
  const reject = (reason: string): ParsedRow => ({ ok: false, rejected: { ...partial, reason } });
  if (record.length !== columns) return reject(`has ${record.length} fields, the header ${columns}`);
  const serialNumber = SerialNumber.safeParse(serial);
  if (!serialNumber.success) return reject(`serial number: ${serialNumber.error.issues[0]?.message ?? 'invalid'}`);
  partial.serialNumber = serialNumber.data;
  if (upn !== '') {
    const userId = UserId.safeParse(upn);
    if (!userId.success) return reject(`upn: ${userId.error.issues[0]?.message ?? 'invalid'}`);
    partial.userId = userId.data;
  }
  const first = seen.get(serialNumber.data);
  if (first !== undefined) return reject(`duplicate serial number (first at row ${first})`);
  seen.set(serialNumber.data, row);
  if (secretText.length > MAX_SECRET_BASE32) return reject(`secret key: longer than ${MAX_SECRET_BASE32} characters`);
  if (!BASE32.test(secretText)) return reject('secret key: not Base32 (RFC 4648: letters A-Z and digits 2-7)');
  const secret = base32Decode(secretText);
  if (secret.length < MIN_SECRET_BYTES) {
    secret.fill(0);
    return reject(`secret key: shorter than ${MIN_SECRET_BYTES} bytes (${Math.ceil((MIN_SECRET_BYTES * 8) / 5)} Base32 characters)`);
  }
  if (interval !== '30' && interval !== '60') {
    secret.fill(0);
    return reject('time interval: must be 30 or 60 (seconds)');
  }
  for (const [name, value] of [['manufacturer', manufacturer], ['model', model]] as const) {
    if (value !== '' && !Label.safeParse(value).success) {
      secret.fill(0);
      return reject(`${name}: at most 64 characters, no control or invisible characters`);
    }
  }
  return {
    ok: true,
    token: {
      row,
      serialNumber: serialNumber.data,
      secret,
      ...(partial.userId !== undefined ? { userId: partial.userId } : {}),
      algorithm: 'SHA1',
      digits: 6,
      period: interval === '60' ? 60 : 30,
      ...(manufacturer ? { manufacturer } : {}),
      ...(model ? { model } : {}),
    },
  };
}
