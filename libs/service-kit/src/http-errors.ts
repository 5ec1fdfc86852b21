import { STATUS_CODES } from 'node:http';
import { Catch, HttpException, NotFoundException, type ArgumentsHost } from '@nestjs/common';
import { BaseExceptionFilter } from '@nestjs/core';
import { counter } from '@mfa/telemetry';

/**
 * Client errors answered on a service's HTTP port, by status. Bounded: only 4xx statuses, at most
 * a hundred series, whatever the requests say.
 */
const clientErrors = counter('mfa_http_client_errors_total', 'HTTP requests refused as the client\'s fault (4xx), by status; not logged', ['status']);

/**
 * The HTTP exception filter runService installs on every service. What Express and its body
 * parser refuse before any handler runs (malformed JSON, a body over the limit, an unknown
 * Content-Encoding or charset, a malformed percent escape) reaches Nest as an error that is not an
 * HttpException, which Nest's own handler logs at error level: any anonymous caller of a port that
 * faces the internet (dispatch's Twilio webhooks, the device API) could fill the error log with
 * them. Such refusals, and Nest's HttpExceptions of status 4xx, are answered with Nest's small JSON
 * body and their status, and counted in mfa_http_client_errors_total instead of logged. Everything
 * else (5xx, errors of code) keeps Nest's handling, which logs the unknown ones.
 *
 * A service's more specific filter (runService's httpFilters, tried first) extends this one and
 * calls super.catch for what it does not answer itself, as DeviceApiErrors does.
 */
@Catch()
export class HttpErrors extends BaseExceptionFilter {
  override catch(exception: unknown, host: ArgumentsHost): void {
    const status = clientErrorStatus(exception);
    if (host.getType() !== 'http' || status === undefined) return super.catch(exception, host);
    this.countClientError(status);
    const res = host.getArgByIndex<unknown>(1);
    const adapter = this.applicationRef ?? this.httpAdapterHost?.httpAdapter;
    if (!adapter || adapter.isHeadersSent(res)) {
      adapter?.end(res);
      return;
    }
    adapter.reply(res, bodyOf(exception, status, host.getArgByIndex<{ method?: unknown } | undefined>(0)?.method), status);
  }

  /** Counts a client error answered without a log line (for subclasses answering in their own shape). */
  protected countClientError(status: number): void {
    clientErrors.inc({ status: String(status) });
  }
}

/**
 * The 4xx status of a refusal: an HttpException's, or the `status` / `statusCode` of an
 * http-errors error (body-parser's, Express's); undefined for anything else.
 */
export function clientErrorStatus(exception: unknown): number | undefined {
  const status =
    exception instanceof HttpException
      ? exception.getStatus()
      : ((exception as { status?: unknown } | null | undefined)?.status ?? (exception as { statusCode?: unknown } | null | undefined)?.statusCode);
  return typeof status === 'number' && Number.isInteger(status) && status >= 400 && status < 500 ? status : undefined;
}

/**
 * Nest's body for the same refusal: an HttpException's response, or `{statusCode, message}`. The
 * request is not echoed back: Nest's router says `Cannot <METHOD> <the whole URL>` of an unknown
 * route, and Express's quotes a path parameter it cannot decode, which let any caller have a
 * service's port answer up to 16 KB of text of its choosing. Those name the route or parameter no
 * more; any other message is cut at 200 characters.
 */
function bodyOf(exception: unknown, status: number, method: unknown): unknown {
  if (exception instanceof HttpException) {
    const response = exception.getResponse();
    const body = typeof response === 'object' && response !== null ? (response as Record<string, unknown>) : { statusCode: status, message: response };
    if (typeof body.message !== 'string') return body;
    const unknownRoute = exception instanceof NotFoundException && typeof method === 'string' && body.message.startsWith(`Cannot ${method} `);
    return { ...body, message: unknownRoute ? 'no such route' : withoutEcho(body.message) };
  }
  // http-errors marks whether its message may reach the client; a parser's message (the JSON
  // syntax error, the encoding named) is short, but only an exposed one is sent.
  const error = exception as { expose?: unknown; message?: unknown };
  const message = error.expose !== false && typeof error.message === 'string' ? withoutEcho(error.message) : (STATUS_CODES[status] ?? 'Bad Request');
  return { statusCode: status, message };
}

/** V8's JSON.parse quotes the body around the error: `Unexpected token 'x', "{"a": xxxx"... is not valid JSON`. */
const QUOTING_JSON_ERROR = / is not valid JSON$/;

const withoutEcho = (message: string): string => {
  if (message.startsWith('Failed to decode param ')) return 'a path parameter is not valid percent-encoding';
  if (QUOTING_JSON_ERROR.test(message)) return 'the body is not valid JSON';
  return message.slice(0, 200);
};
