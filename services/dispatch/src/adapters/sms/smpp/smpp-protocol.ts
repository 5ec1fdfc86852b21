import smpp from 'smpp';

/**
 * The parts of SMPP v3.4 the provider decides on without a connection: what an SMSC's error
 * status means for a retry, how a code message is encoded and addressed, and what a delivery
 * receipt (deliver_sm with the receipt bit of esm_class) says.
 */

/** command_status values (SMPP v3.4 §5.1.3) the provider treats specially. */
export const EsmeStatus = {
  OK: 0x0000,
  INVALID_COMMAND_ID: 0x0003,
  INCORRECT_BIND_STATUS: 0x0004,
  SYSTEM_ERROR: 0x0008,
  MESSAGE_QUEUE_FULL: 0x0014,
  THROTTLED: 0x0058,
  INVALID_EXPIRY: 0x0062,
  RECEIVER_TEMPORARY_ERROR: 0x0064,
} as const;

/**
 * Errors that may go away by themselves: the SMSC's window or queue is full, it is throttling
 * this account, it had an internal error, or the session is not (yet) bound as it thinks. Every
 * other status (an invalid destination or source address, a bad data coding, a prohibited
 * destination, a failed submit) is about the message: the next provider gets it at once.
 */
const TRANSIENT_STATUSES = new Set<number>([
  EsmeStatus.INCORRECT_BIND_STATUS,
  EsmeStatus.SYSTEM_ERROR,
  EsmeStatus.MESSAGE_QUEUE_FULL,
  EsmeStatus.THROTTLED,
  EsmeStatus.RECEIVER_TEMPORARY_ERROR,
]);

const STATUS_NAMES = new Map<number, string>(Object.entries(smpp.errors).map(([name, value]) => [value, name]));

/** `ESME_RTHROTTLED`, or `0x0000abcd` for a status the specification does not name. */
export function statusName(status: number): string {
  return STATUS_NAMES.get(status) ?? `0x${status.toString(16).padStart(8, '0')}`;
}

export function isTransientStatus(status: number): boolean {
  return TRANSIENT_STATUSES.has(status);
}

/** The longest relative validity_period written: 99 days (the DD field). */
const MAX_VALIDITY_SECONDS = 99 * 86_400;

/**
 * A validity_period of `seconds` from when the SMSC takes the message, in the relative time
 * format of SMPP v3.4 §7.1.1 (`YYMMDDhhmmss000R`: years, months, days, hours, minutes, seconds
 * to add): relative, so this host's clock and the SMSC's need not agree. The SMSC drops the
 * message once it has expired undelivered (receipt EXPIRED).
 */
export function smppValidityPeriod(seconds: number): string {
  let left = Math.min(Math.max(1, Math.ceil(seconds)), MAX_VALIDITY_SECONDS);
  const fields = [86_400, 3_600, 60, 1].map((unit) => {
    const n = Math.floor(left / unit);
    left -= n * unit;
    return String(n).padStart(2, '0');
  });
  return `0000${fields.join('')}000R`;
}

/**
 * validity_period as an absolute time in UTC, SMPP v3.4 §7.1.1 `YYMMDDhhmmsstnnp` (tenths of a
 * second, then the offset from UTC in quarter hours and its sign: `00+`), for SMSCs that refuse
 * the relative format. Unlike the relative one it needs the SMSC's clock to agree with this host's.
 */
export function smppAbsoluteTime(at: Date): string {
  const iso = at.toISOString();
  return `${iso.slice(2, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}${iso.slice(20, 21)}00+`;
}

/** How submit_sm carries a code's expiry (SMPP_VALIDITY_PERIOD). */
export const VALIDITY_FORMATS = ['relative', 'absolute', 'none'] as const;
export type ValidityFormat = (typeof VALIDITY_FORMATS)[number];

/** The validity_period of a message that expires at `expiresAt`, in `format`; undefined leaves the SMSC's default. */
export function smppValidity(format: ValidityFormat, expiresAt: Date | undefined, now: number): string | undefined {
  if (!expiresAt || format === 'none') return undefined;
  if (format === 'absolute') return smppAbsoluteTime(new Date(Math.max(expiresAt.getTime(), now + 1_000)));
  return smppValidityPeriod((expiresAt.getTime() - now) / 1000);
}

/** Bind refusals an operator must fix (credentials, account), named so the log says which. */
export function bindRefusalHint(status: number): string {
  switch (statusName(status)) {
    case 'ESME_RINVPASWD':
      return 'wrong password (SMPP_URL)';
    case 'ESME_RINVSYSID':
      return 'unknown system_id (SMPP_URL)';
    case 'ESME_RALYBND':
      return 'already bound: the SMSC allows no more sessions for this account';
    case 'ESME_RBINDFAIL':
      return 'the SMSC refused the bind (credentials, address range or allowed IP addresses)';
    default:
      return 'the SMSC refused the bind';
  }
}

const TON = { UNKNOWN: 0, INTERNATIONAL: 1, NETWORK_SPECIFIC: 3, ALPHANUMERIC: 5 } as const;
const NPI = { UNKNOWN: 0, ISDN: 1 } as const;

/**
 * An address as submit_sm carries it. E.164 numbers go without their `+` as international ISDN
 * numbers; short codes are network-specific; anything with a letter is an alphanumeric sender ID.
 */
export function smppAddress(address: string): { addr: string; ton: number; npi: number } {
  if (/^\+\d+$/.test(address)) return { addr: address.slice(1), ton: TON.INTERNATIONAL, npi: NPI.ISDN };
  if (/^\d{3,8}$/.test(address)) return { addr: address, ton: TON.NETWORK_SPECIFIC, npi: NPI.UNKNOWN };
  return { addr: address, ton: TON.ALPHANUMERIC, npi: NPI.UNKNOWN };
}

/** data_coding 0: the SMSC's default alphabet, GSM 03.38 (unpacked, one septet per octet); 8: UCS-2. */
export const DataCoding = { GSM: 0x00, UCS2: 0x08 } as const;

/** GSM 03.38 characters that take an escape and a second septet. */
const GSM_EXTENDED = /[\f^{}\\[~\]|€]/g;

/** short_message holds at most 254 octets; a longer text goes in the message_payload TLV. */
const SHORT_MESSAGE_MAX_OCTETS = 254;

/**
 * The message fields of a text: GSM 03.38 when every character is in it (the code texts in
 * English, French and Swedish are: é, å, ä, ö are GSM characters), else UCS-2, which every
 * handset shows but which holds 70 characters per segment instead of 160.
 */
export function encodeText(text: string): { data_coding: number; short_message?: { message: string }; message_payload?: { message: string } } {
  const gsm = smpp.encodings.ASCII.match(text);
  const octets = gsm ? text.length + (text.match(GSM_EXTENDED)?.length ?? 0) : text.length * 2;
  const data_coding = gsm ? DataCoding.GSM : DataCoding.UCS2;
  // The library encodes `{message}` by data_coding: GSM 03.38 for 0, UTF-16BE for 8.
  return octets <= SHORT_MESSAGE_MAX_OCTETS ? { data_coding, short_message: { message: text } } : { data_coding, message_payload: { message: text } };
}

/** esm_class bits 2–5: the message type; 0b0001 is an SMSC delivery receipt. */
const ESM_MESSAGE_TYPE = 0x3c;
const ESM_DELIVERY_RECEIPT = 0x04;

/** message_state TLV values (SMPP v3.4 §5.2.28) and the receipt text's `stat:` words. */
const FINAL_STATES: Record<string, 'delivered' | 'undelivered'> = {
  '2': 'delivered',
  DELIVRD: 'delivered',
  '3': 'undelivered',
  EXPIRED: 'undelivered',
  '4': 'undelivered',
  DELETED: 'undelivered',
  '5': 'undelivered',
  UNDELIV: 'undelivered',
  '8': 'undelivered',
  REJECTD: 'undelivered',
};

const NETWORK_TYPES: Record<number, string> = { 1: 'ANSI-136', 2: 'IS-95', 3: 'GSM' };

/** The instants, ms, the SMSC may have taken a message at, by its receipt's `submit date`. */
export interface SubmitWindow {
  from: number;
  to: number;
}

export type ParsedReceipt =
  /** A final state: the handset got it, or the network gave up. */
  | { kind: 'final'; messageId: string; status: 'delivered' | 'undelivered'; errorCode?: string; submitted?: SubmitWindow }
  /** ENROUTE, ACCEPTD, UNKNOWN…: nothing to record. */
  | { kind: 'intermediate'; messageId: string; state: string }
  /** A message from a handset (mobile-originated), not a receipt. */
  | { kind: 'not_a_receipt' }
  /** A receipt that names no message or no state we can read. */
  | { kind: 'malformed'; reason: string };

/** SMSC message ids are C-octet strings of at most 65 octets; anything else is not one. */
const MESSAGE_ID = /^[\x21-\x7e]{1,65}$/;

function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  if (typeof value === 'object' && value !== null && 'message' in value) return textOf((value as { message: unknown }).message);
  return '';
}

/**
 * What a deliver_sm says, from its decoded fields. The receipted_message_id and message_state
 * TLVs (SMPP v3.4) win over the text of the short message (`id:… sub:… dlvrd:… submit date:…
 * done date:… stat:DELIVRD err:000 text:…`, Appendix B, which SMSCs fill in for older clients).
 */
export function parseReceipt(pdu: Record<string, unknown>): ParsedReceipt {
  const esmClass = typeof pdu.esm_class === 'number' ? pdu.esm_class : 0;
  if ((esmClass & ESM_MESSAGE_TYPE) !== ESM_DELIVERY_RECEIPT) return { kind: 'not_a_receipt' };
  const text = textOf(pdu.message_payload) || textOf(pdu.short_message);
  const field = (name: string) => new RegExp(`(?:^|\\s)${name}:(\\S*)`, 'i').exec(text)?.[1];

  const messageId = typeof pdu.receipted_message_id === 'string' && pdu.receipted_message_id !== '' ? pdu.receipted_message_id : field('id');
  if (!messageId || !MESSAGE_ID.test(messageId)) return { kind: 'malformed', reason: 'no message id' };
  const state = typeof pdu.message_state === 'number' ? String(pdu.message_state) : field('stat')?.toUpperCase();
  if (!state) return { kind: 'malformed', reason: 'no message state' };
  const status = FINAL_STATES[state];
  if (!status) return { kind: 'intermediate', messageId, state };
  const submitted = submitWindow(field('submit date'));
  const errorCode = status === 'undelivered' ? (networkError(pdu.network_error_code) ?? textError(field('err'))) : undefined;
  return { kind: 'final', messageId, status, ...(errorCode ? { errorCode } : {}), ...(submitted ? { submitted } : {}) };
}

/**
 * UTC offsets in use run from -12:00 to +14:00. The receipt's dates are the SMSC's wall clock in a
 * zone SMPP leaves to the SMSC (Appendix B), and nothing in the receipt says which: read as UTC,
 * the instant they denote lies up to 14 h before, or 12 h after.
 */
const ZONE_EARLIER_MS = 14 * 3600_000;
const ZONE_LATER_MS = 12 * 3600_000;
/**
 * Beyond the zone: an SMSC clock an hour off (a daylight-saving change it did not make), minutes
 * of drift, and the time the submit took. Generous: the window only has to tell a message from
 * one a day older (an id reused after its route expired), never a legitimate receipt's.
 */
const SMSC_CLOCK_SLACK_MS = 2 * 3600_000;

/**
 * When the SMSC took the message, from the receipt text's `submit date:YYMMDDhhmm` (or with
 * seconds, as some SMSCs write it): every instant it can denote in any time zone, with slack for
 * the SMSC's clock. Undefined when absent or not a date (nothing is then checked against it).
 */
export function submitWindow(value: string | undefined): SubmitWindow | undefined {
  const match = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?$/.exec(value ?? '');
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1).map((n) => Number(n ?? 0)) as [number, number, number, number, number, number];
  const reading = Date.UTC(2000 + year, month - 1, day, hour, minute, second);
  const date = new Date(reading);
  // Date.UTC rolls 31 February over into March, 25 hours into the next day: not a date, then.
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || date.getUTCHours() !== hour || minute > 59 || second > 59) return undefined;
  // A date written to the minute may be any second of it.
  const resolution = match[6] === undefined ? 60_000 : 1_000;
  return { from: reading - ZONE_EARLIER_MS - SMSC_CLOCK_SLACK_MS, to: reading + resolution + ZONE_LATER_MS + SMSC_CLOCK_SLACK_MS };
}

/** network_error_code: one octet of network type, two of its error code (e.g. GSM 34). */
function networkError(value: unknown): string | undefined {
  if (!Buffer.isBuffer(value) || value.length !== 3) return undefined;
  const code = value.readUInt16BE(1);
  if (code === 0) return undefined;
  return `${NETWORK_TYPES[value[0]!] ?? `net${value[0]}`} ${code}`;
}

/** `err:` of the receipt text, SMSC-specific (three digits in the specification's example); 000 is none. */
function textError(value: string | undefined): string | undefined {
  if (!value || /^0+$/.test(value) || !/^[\w-]{1,16}$/.test(value)) return undefined;
  return value;
}
