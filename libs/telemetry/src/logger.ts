import { trace } from '@opentelemetry/api';

/**
 * Structured JSON logs, one line each, with the active trace id. Field names that may carry a
 * secret are redacted wherever they appear, so a careless `log.info({...request})` cannot leak a
 * code, secret or key.
 */
type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/**
 * Field names that carry a secret or personal data, by their shape rather than a list, since the
 * contracts keep adding them (activationCode, pushToken, rememberToken, appPassword, newPin, …):
 * names ending in code, token, pin, password, passcode, passphrase, secret or key (and their
 * plurals but for keys), sealed anything, anything about a phone, an email, an activation, a QR code or an
 * otpauth URI, and the exact names otp, authorization and cookie.
 */
const SECRET_KEYS =
  /(?:codes?|tokens?|pins?|passwords?|passcodes?|passphrases?|secrets?|key)$|^sealed|phone|e-?mail|^activation|^qr|otpauth|msisdn|^(?:otp|authorization|cookie|set-cookie)$/i;
/**
 * Names that match the above but are not secrets: identifiers (challengeId, tokenId, keyId, …),
 * and codes that name an outcome, not a credential (a provider's errorCode, an HTTP statusCode).
 */
const NOT_SECRET = /(?:^id|Id|ID|_id)s?$|^(?:error|status|reason|exit|response|result|http|country|currency|language|locale)_?codes?$/i;
/** Keys under which an object is an error, whose `code` is an error code (ECONNREFUSED, invalid_request). */
const ERROR_KEYS = /^(?:error|err|cause|failure|reason)$/i;
/**
 * URLs with a scheme and userinfo or a query, wherever they are in a text (a value, an error's
 * message, `REDIS_URL=redis://…` in a sentence): only such URLs may carry credentials. Texts
 * without `://` are not searched.
 */
const URLS_IN_TEXT = /(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]*/gi;
/** Error messages are cut as string values are, before their URLs are looked for. */
const MAX_TEXT = 2000;
/** Punctuation that ends a sentence after a URL, not part of it: `redis://…:6379.` */
const TRAILING_PUNCTUATION = new Set(['.', ',', ';', ':', '!', ')', ']', '}']);
/** An otpauth URI anywhere in a text: its secret is the TOTP seed. */
const OTPAUTH_IN_TEXT = /otpauth:\/\/[^\s"'<>]*/gi;

/**
 * A text with the credentials of every URL in it masked (maskUrl). The pattern takes a URL from
 * its scheme, which no scheme character precedes, to the next space or quote: one pass over the
 * text (a scheme that could start anywhere in a long run of letters made it quadratic).
 */
function maskText(text: string): string {
  if (!text.includes('://')) return text;
  return text.replace(OTPAUTH_IN_TEXT, '[redacted]').replace(URLS_IN_TEXT, (url) => (url.includes('@') || url.includes('?') ? maskUrl(url) : url));
}

const isSecret = (key: string): boolean => SECRET_KEYS.test(key) && !NOT_SECRET.test(key);

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

function redact(value: unknown, depth = 0, errorLike = false): unknown {
  if (depth > 6) return '[depth]';
  if (value instanceof Error) {
    const message = value.message.length > MAX_TEXT ? `${value.message.slice(0, MAX_TEXT)}…` : value.message;
    const out: Record<string, unknown> = { name: value.name, message: maskText(message) };
    // A system error's code (ECONNREFUSED) or a ContractError's (invalid_request) says what failed.
    const code = (value as { code?: unknown }).code;
    if (typeof code === 'string' || typeof code === 'number') out.code = code;
    if (value.cause !== undefined) out.cause = redact(value.cause, depth + 1, true);
    return out;
  }
  if (Array.isArray(value)) return value.slice(0, 50).map((v) => redact(v, depth + 1));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const keep = errorLike && k === 'code' && (typeof v === 'string' || typeof v === 'number');
      out[k] = !keep && isSecret(k) ? '[redacted]' : redact(v, depth + 1, ERROR_KEYS.test(k));
    }
    return out;
  }
  if (typeof value === 'string') {
    const text = value.length > MAX_TEXT ? `${value.slice(0, MAX_TEXT)}…` : value;
    return maskText(text);
  }
  return value;
}

/**
 * A URL's credentials masked: the password of its userinfo (or the user alone, which is how a NATS
 * token is given), the query parameters named like a secret, and the whole of an otpauth URI
 * (its secret is the TOTP seed). The punctuation of a sentence it ends is left out of it; one that
 * does not parse still has its userinfo masked.
 */
function maskUrl(text: string): string {
  if (/^otpauth:/i.test(text)) return '[redacted]';
  // A URL at the end of a sentence: its punctuation is put back after it, masked or not.
  let end = text.length;
  while (end > 0 && TRAILING_PUNCTUATION.has(text[end - 1]!)) end--;
  const tail = text.slice(end);
  const core = text.slice(0, end);
  let url: URL;
  try {
    url = new URL(core);
  } catch {
    // Not a URL the parser takes (a port out of range, a character it refuses): its userinfo, if
    // any, is masked as text all the same.
    return `${core.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#\s]*@/i, '$1***@')}${tail}`;
  }
  let masked = false;
  if (url.password) {
    url.password = '***';
    masked = true;
  } else if (url.username) {
    url.username = '***';
    masked = true;
  }
  for (const name of [...url.searchParams.keys()]) {
    if (!isSecret(name)) continue;
    url.searchParams.set(name, '***');
    masked = true;
  }
  // Unchanged, the text is left as written (URL's serialisation would re-encode and add slashes).
  return masked ? `${url.toString()}${tail}` : text;
}

interface LoggerOptions {
  /** Lowest level written; services pass their validated LOG_LEVEL. */
  level?: LogLevel;
  /** Fields on every line (e.g. the instance name). */
  fields?: Record<string, unknown>;
}

export function createLogger(service: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  const base = options.fields ?? {};
  const threshold = ORDER[level];
  const write = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    const span = trace.getActiveSpan()?.spanContext();
    const line: Record<string, unknown> = {
      time: new Date().toISOString(),
      level,
      service,
      msg,
      ...(redact(base) as Record<string, unknown>),
      ...(fields ? (redact(fields) as Record<string, unknown>) : {}),
    };
    if (span) line.traceId = span.traceId;
    (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(`${JSON.stringify(line)}\n`);
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => createLogger(service, { level, fields: { ...base, ...fields } }),
  };
}
