import { timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { parse as parseCookies, serialize } from 'cookie';
import type { Sessions, Session } from '../adapters/sessions.js';
import { accessFromRoles, type Access } from '../domain/roles.js';

/** What every page handler gets of the request: the operator's session and access, if signed in. */
export interface WebRequest extends Request {
  session?: Session & { id: string };
  access?: Access;
  cookiesParsed: Record<string, string | undefined>;
}

/**
 * Headers of every answer: a strict Content Security Policy (no inline script or style, nothing
 * from another origin, no framing, forms only to this origin), no MIME sniffing, no referrer to
 * other sites, pages never cached; over https, Strict-Transport-Security. Installed before the body
 * parsers, so an answer to a body they refuse has them too.
 */
export function securityHeaders(secure: boolean) {
  return (_req: Request, res: Response, next: NextFunction): void => {
    setSecurityHeaders(res, secure);
    next();
  };
}

/**
 * The pages' Content Security Policy. `formTargets`: origins besides this one a form of the page
 * may post to (only the sign-out page's, to the identity provider).
 */
export function contentSecurityPolicy(formTargets: readonly string[] = []): string {
  const forms = ["'self'", ...formTargets].join(' ');
  return `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; font-src 'self'; form-action ${forms}; frame-ancestors 'none'; base-uri 'none'`;
}

function setSecurityHeaders(res: Response, secure: boolean): void {
  if (secure) res.setHeader('Strict-Transport-Security', 'max-age=31536000');
  res.setHeader('Content-Security-Policy', contentSecurityPolicy());
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'same-origin');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cache-Control', 'no-store');
}

/**
 * A form route reads fields of the body: a POST without one (no body, or a content type no parser
 * takes) reads as an empty form, which the route refuses field by field, rather than failing.
 */
export function emptyBodyAsForm(req: Request, _res: Response, next: NextFunction): void {
  req.body ??= {};
  next();
}

/** Cookie names: `__Host-` (https only, this origin's path /, no Domain) when the console is served over https. */
export function cookieNames(secure: boolean) {
  const prefix = secure ? '__Host-' : '';
  return { session: `${prefix}mfa-console`, login: `${prefix}mfa-console-login` };
}

export function setCookie(res: Response, name: string, value: string, secure: boolean, maxAgeSeconds?: number): void {
  res.append(
    'Set-Cookie',
    serialize(name, value, { httpOnly: true, secure, sameSite: 'lax', path: '/', ...(maxAgeSeconds !== undefined ? { maxAge: maxAgeSeconds } : {}) }),
  );
}

/** Paths that answer without a session: the probes must tell the truth when Redis is down. */
const SESSIONLESS = /^\/(?:health(?:\/live)?|metrics)\/?$/;

/**
 * Loads the session named by the cookie (and the operator's access) into the request. When the
 * session store (Redis) fails, the request is answered 503 and nothing else runs: no page is shown
 * to someone whose session cannot be read, and the failure is not logged once per request (the
 * health check reports Redis).
 */
export function sessionLoader(sessions: Sessions, names: ReturnType<typeof cookieNames>, onUnavailable: (res: Response) => void) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const web = req as WebRequest;
    web.cookiesParsed = parseCookies(req.headers.cookie ?? '');
    const id = web.cookiesParsed[names.session];
    if (id === undefined || SESSIONLESS.test(req.path)) return next();
    sessions.load(id, Date.now()).then(
      (session) => {
        if (session) {
          web.session = { ...session, id };
          web.access = accessFromRoles(session.roles);
        }
        next();
      },
      () => onUnavailable(res),
    );
  };
}

/**
 * Every change (any method but GET and HEAD) needs the session's CSRF token in the form (`_csrf`)
 * and, when the browser says where the request comes from, this origin. SameSite=Lax cookies are a
 * second line, not the only one.
 */
export function csrfCheck(origin: string) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    const web = req as WebRequest;
    const sent = req.headers.origin;
    if (sent !== undefined && sent !== origin) {
      res.status(403).type('text/plain').send('forbidden: cross-origin request');
      return;
    }
    // The sign-in forms have no session yet: the development form is guarded by its own origin check above.
    if (req.path === '/auth/dev') return next();
    // A sign-out without a session (it ended while the page was open) has nothing to protect; it
    // still ends the identity provider's session, which asks the operator when it has no hint.
    if (req.path === '/auth/logout' && web.session === undefined) return next();
    // Forms carry it in a field; the page scripts that post files, in a header.
    const header = req.headers['x-csrf-token'];
    const token = typeof req.body?._csrf === 'string' ? req.body._csrf : typeof header === 'string' ? header : '';
    // Compared as UTF-8 bytes: a token of the right length in characters but not in bytes (an `é`
    // in it) is a wrong token like any other, never a failed comparison.
    const sentBytes = Buffer.from(token, 'utf8');
    const expectedBytes = Buffer.from(web.session?.csrf ?? '', 'utf8');
    const ok = expectedBytes.length > 0 && sentBytes.length === expectedBytes.length && timingSafeEqual(sentBytes, expectedBytes);
    if (!ok) {
      res.status(403).type('text/plain').send('forbidden: missing or wrong CSRF token; reload the page and try again');
      return;
    }
    next();
  };
}
