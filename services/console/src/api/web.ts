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
 * other sites, pages never cached.
 */
export function securityHeaders(_req: Request, res: Response, next: NextFunction): void {
  res.setHeader(
    'Content-Security-Policy',
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  );
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'same-origin');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cache-Control', 'no-store');
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

/** Loads the session named by the cookie (and the operator's access) into the request. */
export function sessionLoader(sessions: Sessions, names: ReturnType<typeof cookieNames>) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const web = req as WebRequest;
    web.cookiesParsed = parseCookies(req.headers.cookie ?? '');
    const id = web.cookiesParsed[names.session];
    sessions
      .load(id, Date.now())
      .then((session) => {
        if (session && id) {
          web.session = { ...session, id };
          web.access = accessFromRoles(session.roles);
        }
        next();
      })
      .catch(next);
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
    // Forms carry it in a field; the page scripts that post files, in a header.
    const header = req.headers['x-csrf-token'];
    const token = typeof req.body?._csrf === 'string' ? req.body._csrf : typeof header === 'string' ? header : '';
    const expected = web.session?.csrf ?? '';
    const ok = token.length > 0 && token.length === expected.length && timingSafeEqual(Buffer.from(token), Buffer.from(expected));
    if (!ok) {
      res.status(403).type('text/plain').send('forbidden: missing or wrong CSRF token; reload the page and try again');
      return;
    }
    next();
  };
}
