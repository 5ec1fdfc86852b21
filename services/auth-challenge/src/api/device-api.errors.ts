import { Catch, HttpException, Logger, type ArgumentsHost } from '@nestjs/common';
import { HttpErrors } from '@mfa/service-kit';
import type { Request, Response } from 'express';

/** The device API's routes (DeviceApiController). */
const DEVICE_API = '/device/';

/**
 * What Express and its body parser refuse before the device API's handlers run (malformed JSON,
 * a body over the parser's limit, an unknown Content-Encoding or charset, a malformed percent
 * escape in the path, an unknown route) is answered in the device API's own shape,
 * `{"error": {"code", "message"}}` (docs/device-api.md), not Nest's; and, being the client's
 * fault, is not logged as an error of the service, which any anonymous caller could otherwise
 * fill the error log with (counted in mfa_http_client_errors_total instead). Every other route
 * gets the handling of every service's HTTP port (HttpErrors).
 */
@Catch()
export class DeviceApiErrors extends HttpErrors {
  private readonly log = new Logger('DeviceApi');

  override catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const req = http.getRequest<Request | undefined>();
    // Express matches routes without regard to case: /Device/v1/… reaches the device API too.
    if (host.getType() !== 'http' || !req?.originalUrl?.toLowerCase().startsWith(DEVICE_API)) return super.catch(exception, host);
    const res = http.getResponse<Response>();
    if (res.headersSent) {
      res.end();
      return;
    }
    const status = statusOf(exception);
    if (status >= 500) {
      this.log.error('device API request failed', exception instanceof Error ? exception.stack : String(exception));
      res.status(500).json({ error: { code: 'internal', message: 'something went wrong' } });
      return;
    }
    this.countClientError(status);
    const [code, message] =
      status === 404
        ? ['not_found', 'no such route']
        : status === 413
          ? ['invalid_request', 'the body is too large']
          : status === 415
            ? ['invalid_request', 'a Content-Encoding or charset the service does not read']
            : ['invalid_request', 'the request could not be read (its body, encoding or path)'];
    res.status(status).json({ error: { code, message } });
  }
}

/** The status of a refusal: Nest's exceptions, and body-parser's errors (`status` 4xx). */
function statusOf(exception: unknown): number {
  if (exception instanceof HttpException) return exception.getStatus();
  const status = (exception as { status?: unknown; statusCode?: unknown } | undefined)?.status ?? (exception as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : 500;
}
