export const CONSOLE_CONFIG = Symbol('CONSOLE_CONFIG');
export const SESSIONS = Symbol('SESSIONS');
export const VIEWS = Symbol('VIEWS');
export const OIDC = Symbol('OIDC');
export const PENDING_LOGINS = Symbol('PENDING_LOGINS');
export const MFA_API = Symbol('MFA_API');
export const UPLOAD_SLOTS = Symbol('UPLOAD_SLOTS');
export const LOGGER_TOKEN = Symbol('LOGGER');

/** What the handlers need of the configuration. */
export interface ConsoleRuntime {
  publicUrl: URL;
  /** Cookies are Secure (and __Host- prefixed) when the console is reached over https. */
  secure: boolean;
  devLogin: boolean;
  /** OIDC_END_SESSION_POST: the sign-out at the identity provider is posted, not a link. */
  endSessionPost: boolean;
}
