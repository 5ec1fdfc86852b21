import { Catch, NotFoundException, type ArgumentsHost, type HttpServer } from '@nestjs/common';
import type { Response } from 'express';
import { HttpErrors } from '@mfa/service-kit';
import type { Views } from './views.js';
import type { WebRequest } from './web.js';

/**
 * The console's answer to a URL it does not have: an operator's browser (a request that prefers
 * HTML to JSON, as a navigation does) gets the console's "not found" page, with a link home;
 * anything else (the page scripts' fetch, curl, a monitor: any type, or JSON, first) keeps the JSON 404
 * every service answers. Every other error is HttpErrors's.
 */
@Catch()
export class ConsoleErrors extends HttpErrors {
  constructor(
    private readonly views: Views,
    adapter: HttpServer,
  ) {
    super(adapter);
  }

  override catch(exception: unknown, host: ArgumentsHost): void {
    if (host.getType() === 'http' && exception instanceof NotFoundException) {
      const [req, res] = [host.getArgByIndex<WebRequest>(0), host.getArgByIndex<Response>(1)];
      if (!res.headersSent && wantsPage(req)) {
        this.countClientError(404);
        // The layout shows who is signed in (and the sign-out form, with its CSRF token): the session middleware ran.
        this.views.send(res, 'error.njk', { operator: req.session?.operator, csrf: req.session?.csrf, code: 'not_found', message: 'the console has no such page' }, 404);
        return;
      }
    }
    super.catch(exception, host);
  }
}

/** A browser's navigation (Accept: text/html first); JSON wins a tie, as with an Accept of any type. */
export const wantsPage = (req: Pick<WebRequest, 'accepts'>): boolean => req.accepts(['application/json', 'text/html']) === 'text/html';
