import { trace } from '@opentelemetry/api';

/**
 * Structured JSON logs, one line each, with the active trace id. Field names that may carry a
 * secret are redacted wherever they appear, so a careless `log.info({...request})` cannot leak a
 * code, secret or key.
 */
type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEYS = /^(code|secret|sealed.*|.*secret|otp|password|token|authToken|auth_token|key|.*Key|authorization|pin)$/i;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

function redact(value: unknown, depth = 0): unknown {
  if (depth > 6) return '[depth]';
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    if (value.cause !== undefined) out.cause = redact(value.cause, depth + 1);
    return out;
  }
  if (Array.isArray(value)) return value.slice(0, 50).map((v) => redact(v, depth + 1));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEYS.test(k) && k !== 'tokenId' ? '[redacted]' : redact(v, depth + 1);
    }
    return out;
  }
  if (typeof value === 'string' && value.length > 2000) return `${value.slice(0, 2000)}…`;
  return value;
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
