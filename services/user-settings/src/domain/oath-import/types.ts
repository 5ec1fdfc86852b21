/**
 * What the import parsers (CSV and PSKC) hand the import job: one entry per token of the file, in
 * file order, each either a token to import or a row rejected with a reason. A bad row never stops
 * the others; only a file that cannot be read at all (not CSV / not XML, wrong header, wrong
 * password or pre-shared key for the whole file, too many rows) fails the job (ImportFileError).
 */

/** Hash function of the token's HMAC (RFC 6238 allows SHA-1, SHA-256 and SHA-512; we take the first two). */
export type OathAlgorithm = 'SHA1' | 'SHA256';

export interface ParsedToken {
  /** 1-based position of the token in the file: the CSV's data row (header not counted) or the PSKC KeyPackage. */
  row: number;
  serialNumber: string;
  /** The decoded secret; the job seals it and zeroes this buffer. */
  secret: Buffer;
  /** CSV `upn`: the user the token is for; absent when the row leaves it empty (the token waits unassigned). PSKC: never set. */
  userId?: string;
  algorithm: OathAlgorithm;
  digits: 6 | 8;
  /** Seconds per time step: 30 or 60. */
  period: 30 | 60;
  manufacturer?: string;
  model?: string;
}

export interface RejectedRow {
  row: number;
  /** What could be read of the row, for the error file (never the secret). */
  serialNumber?: string;
  userId?: string;
  /** Why the row was refused, one sentence (e.g. "secret key: not Base32 (RFC 4648)"). */
  reason: string;
}

export type ParsedRow = { ok: true; token: ParsedToken } | { ok: false; rejected: RejectedRow };

/** Zeroes the secret of a row that carries one (a refused row has none). */
export function zeroRow(row: ParsedRow): void {
  if (row.ok) row.token.secret.fill(0);
}

/**
 * Hands out rows a parser decoded together (a chunk's lines, keys held back until the key was
 * proven), one at a time. A reader that stops before the last one (an import interrupted, a
 * failure further on) never sees the rest: their secrets are zeroed here, since nobody else
 * holds them.
 */
export function* handOut(rows: ParsedRow[]): Generator<ParsedRow> {
  let next = 0;
  try {
    while (next < rows.length) yield rows[next++]!;
  } finally {
    for (let i = next; i < rows.length; i++) zeroRow(rows[i]!);
  }
}

/** The file as a whole cannot be imported; the job fails with this message. */
export class ImportFileError extends Error {
  override name = 'ImportFileError';
}

/** Tokens per file at most (one job). */
export const MAX_IMPORT_TOKENS = 200_000;
/** Longest Base32 secret accepted (the seeds' limit). */
export const MAX_SECRET_BASE32 = 128;
/** Shortest secret accepted, in bytes (RFC 4226 R6: at least 128 bits). */
export const MIN_SECRET_BYTES = 16;
/** Longest serial number, manufacturer or model. */
export const MAX_SERIAL_LENGTH = 64;
export const MAX_LABEL_FIELD_LENGTH = 64;
