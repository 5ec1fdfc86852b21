import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Response } from 'express';
import nunjucks from 'nunjucks';
import { ContractError, UsersListMethod } from '@mfa/contracts';

export const VIEWS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../views');
export const PUBLIC_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../public');

const STATUS: Record<string, number> = { invalid_request: 400, not_found: 404, conflict: 409, forbidden: 403, rate_limited: 429, unavailable: 503 };

/**
 * Server-rendered pages (Nunjucks, every value escaped unless a template says otherwise, and none
 * does): names, reasons and comments typed by users or operators are shown as text, never markup.
 */
export class Views {
  private readonly env = new nunjucks.Environment(new nunjucks.FileSystemLoader(VIEWS_DIR, { noCache: false }), {
    autoescape: true,
    throwOnUndefined: false,
  });

  constructor() {
    this.env.addFilter('time', (iso: unknown) => (typeof iso === 'string' ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : ''));
    this.env.addFilter('json', (value: unknown) => JSON.stringify(value));
    // The users page's method filter offers what users.list takes.
    this.env.addGlobal('usersListMethods', UsersListMethod.options);
  }

  render(view: string, context: Record<string, unknown>): string {
    return this.env.render(view, context);
  }

  send(res: Response, view: string, context: Record<string, unknown>, status = 200): void {
    res.status(status).type('text/html; charset=utf-8').send(this.render(view, context));
  }

  /** A contract error as a page: its code decides the status, its message is shown. */
  error(res: Response, error: unknown, context: Record<string, unknown>): void {
    if (error instanceof ContractError) {
      this.send(res, 'error.njk', { ...context, code: error.code, message: error.message }, STATUS[error.code] ?? 500);
      return;
    }
    this.send(res, 'error.njk', { ...context, code: 'internal', message: 'something went wrong; the console logged it' }, 500);
  }
}
