import { Body, Controller, Get, Inject, Post, Query, Req, Res } from '@nestjs/common';
import type { Response } from 'express';
import { DisplayName, Email } from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';
import type { EndSessionForm, OidcProvider } from '../adapters/oidc.js';
import { PENDING_LOGIN_SECONDS, type PendingLogin, type PendingLogins } from '../adapters/pending-login.js';
import type { Sessions } from '../adapters/sessions.js';
import { accessFromRoles, rolesOf } from '../domain/roles.js';
import { CONSOLE_CONFIG, LOGGER_TOKEN, OIDC, PENDING_LOGINS, SESSIONS, VIEWS, type ConsoleRuntime } from '../tokens.js';
import { contentSecurityPolicy, cookieNames, setCookie, type WebRequest } from './web.js';
import type { Views } from './views.js';

/** Only paths of this console may follow a sign-in (no open redirect). */
const safeReturn = (value: unknown) => (typeof value === 'string' && /^\/[A-Za-z0-9/_.:?=&%-]{0,1023}$/.test(value) && !value.startsWith('//') ? value : '/');

/** The operator as sessions and the audit trail name them: fields the contract would refuse are left out. */
function operatorOf(identity: { sub: string; email?: string; name?: string }) {
  const sub = DisplayName.safeParse(identity.sub);
  if (!sub.success) return undefined;
  const email = identity.email !== undefined && Email.safeParse(identity.email).success ? { email: identity.email } : {};
  const name = identity.name !== undefined && DisplayName.safeParse(identity.name).success ? { name: identity.name } : {};
  return { sub: sub.data, ...email, ...name };
}

/**
 * Operator sign-in: OpenID Connect (authorization code with PKCE) against the operator's identity
 * provider, or the development form when CONSOLE_DEV_LOGIN is on (never in production).
 */
@Controller('auth')
export class AuthController {
  private readonly names: ReturnType<typeof cookieNames>;

  constructor(
    @Inject(CONSOLE_CONFIG) private readonly runtime: ConsoleRuntime,
    @Inject(SESSIONS) private readonly sessions: Sessions,
    @Inject(VIEWS) private readonly views: Views,
    @Inject(LOGGER_TOKEN) private readonly log: Logger,
    @Inject(OIDC) private readonly oidc: OidcProvider | undefined,
    @Inject(PENDING_LOGINS) private readonly pendingLogins: PendingLogins | undefined,
  ) {
    this.names = cookieNames(runtime.secure);
  }

  @Get('login')
  async login(@Req() req: WebRequest, @Res() res: Response, @Query('returnTo') returnTo?: string): Promise<void> {
    // Signed in already: no new sign-in begins. A link from any site could otherwise replace the
    // operator's session through the identity provider's own (open forms would then fail their
    // CSRF check). Signing in as someone else is signing out first.
    if (req.access) {
      res.redirect(303, safeReturn(returnTo));
      return;
    }
    if (!this.oidc || !this.pendingLogins) {
      this.views.send(res, 'login.njk', { devLogin: this.runtime.devLogin, returnTo: safeReturn(returnTo) });
      return;
    }
    try {
      const start = await this.oidc.begin();
      // Kept by the browser, sealed: beginning a sign-in stores nothing on the server.
      const sealed = await this.pendingLogins.seal({ state: start.state, nonce: start.nonce, verifier: start.verifier, returnTo: safeReturn(returnTo) }, Date.now());
      setCookie(res, this.names.login, sealed, this.runtime.secure, PENDING_LOGIN_SECONDS);
      res.redirect(303, start.url.href);
    } catch (error) {
      this.log.error('a sign-in cannot begin: the identity provider or Redis cannot be reached', { error });
      this.views.send(res, 'error.njk', { code: 'unavailable', message: 'the sign-in cannot begin now; try again' }, 503);
    }
  }

  @Get('callback')
  async callback(@Req() req: WebRequest, @Res() res: Response): Promise<void> {
    let pending: PendingLogin | undefined;
    try {
      pending = await this.pendingLogins?.open(req.cookiesParsed[this.names.login], Date.now());
    } catch (error) {
      this.log.error('a sign-in cannot be completed: Redis cannot be reached', { error });
      this.views.send(res, 'error.njk', { code: 'unavailable', message: 'the sign-in cannot be completed now; try again' }, 503);
      return;
    }
    setCookie(res, this.names.login, '', this.runtime.secure, 0);
    if (!this.oidc || !pending) {
      this.views.send(res, 'error.njk', { code: 'forbidden', message: 'this sign-in is unknown or expired; sign in again' }, 403);
      return;
    }
    let identity;
    try {
      identity = await this.oidc.complete(new URL(req.originalUrl, this.runtime.publicUrl), pending);
    } catch (error) {
      this.log.warn('an operator sign-in failed', { error: (error as Error).message });
      this.views.send(res, 'error.njk', { code: 'forbidden', message: 'the sign-in could not be completed; sign in again' }, 403);
      return;
    }
    // The path was checked when the sign-in began; checked again, so that no cookie can redirect elsewhere.
    await this.signIn(req, res, identity, identity.roles, 'oidc', safeReturn(pending.returnTo), identity.idToken);
  }

  /** Development only: sign in as anyone with any roles (refused at boot in production). */
  @Post('dev')
  async dev(@Req() req: WebRequest, @Res() res: Response, @Body() body: Record<string, unknown> | undefined): Promise<void> {
    if (!this.runtime.devLogin) {
      this.views.send(res, 'error.njk', { code: 'forbidden', message: 'the development sign-in is off (CONSOLE_DEV_LOGIN)' }, 403);
      return;
    }
    const roles = String(body?.roles ?? '')
      .split(/[\s,]+/)
      .filter(Boolean);
    await this.signIn(req, res, { sub: String(body?.sub ?? '') || 'developer' }, roles, 'dev', safeReturn(body?.returnTo));
  }

  /**
   * Ends the console's session, then the identity provider's too when it can (OIDC_END_SESSION):
   * otherwise the next visit would be signed in again by it without a question. Never back to the
   * sign-in, which would begin one at once.
   */
  @Post('logout')
  async logout(@Req() req: WebRequest, @Res() res: Response): Promise<void> {
    await this.sessions.destroy(req.cookiesParsed[this.names.session]);
    setCookie(res, this.names.session, '', this.runtime.secure, 0);
    // A session of the development form has nothing at the provider; one that has ended may have.
    let atProvider: EndSessionForm | undefined;
    if (this.oidc && req.session?.via !== 'dev') {
      atProvider = await this.oidc.endSession(req.session?.idToken).catch((error: unknown) => {
        this.log.warn("signed out of the console only: the identity provider's sign-out could not be reached", { error: (error as Error).message });
        return undefined;
      });
    }
    this.log.info('operator signed out', { sub: req.session?.operator.sub ?? null, atProvider: atProvider !== undefined });
    if (!atProvider) {
      res.redirect(303, '/auth/signed-out');
      return;
    }
    // A page that moves on to the provider, not a redirect: the pages' CSP (form-action 'self')
    // stops a form submission that redirects to another origin, and the provider's sign-out may
    // be on any. Not cached (no-store, as every page).
    if (!this.runtime.endSessionPost) {
      const url = new URL(atProvider.action);
      for (const [name, value] of Object.entries(atProvider.fields)) url.searchParams.set(name, value);
      this.views.send(res, 'signing-out.njk', { url: url.href });
      return;
    }
    // OIDC_END_SESSION_POST: a form posted to the provider (its script submits it; without
    // scripts, the operator's click), so that the ID token travels in the body, never in a URL
    // the browser keeps in its history. This page's forms may post to the provider's origin.
    res.setHeader('Content-Security-Policy', contentSecurityPolicy([atProvider.action.origin]));
    this.views.send(res, 'signing-out.njk', { action: atProvider.action.href, fields: Object.entries(atProvider.fields) });
  }

  /** Where a sign-out ends (the identity provider sends the browser back here). */
  @Get('signed-out')
  signedOut(@Req() req: WebRequest, @Res() res: Response): void {
    if (req.access) {
      res.redirect(303, '/');
      return;
    }
    this.views.send(res, 'signed-out.njk', {});
  }

  private async signIn(
    req: WebRequest,
    res: Response,
    identity: { sub: string; email?: string; name?: string },
    roles: unknown,
    via: 'oidc' | 'dev',
    returnTo: string,
    idToken?: string,
  ): Promise<void> {
    const access = accessFromRoles(roles);
    const operator = operatorOf(identity);
    if (!access || !operator) {
      this.log.warn('an operator without a console role was refused', { sub: identity.sub.slice(0, 256) });
      this.views.send(res, 'error.njk', { code: 'forbidden', message: 'your account has no role in this console (platform-operator, tenant-admin:<tenant> or tenant-reader:<tenant>)' }, 403);
      return;
    }
    // A session this browser held before ends: one sign-in, one session.
    await this.sessions.destroy(req.cookiesParsed[this.names.session]);
    const id = await this.sessions.create({ operator, roles: rolesOf(access), via, ...(idToken ? { idToken } : {}) }, Date.now());
    setCookie(res, this.names.session, id, this.runtime.secure);
    this.log.info('operator signed in', { sub: operator.sub, via, roles: rolesOf(access) });
    res.redirect(303, returnTo);
  }
}
