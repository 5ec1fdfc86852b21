import type { Keyring } from '@mfa/crypto';
import type { AuthConfig } from './auth.config.js';

export const AUTH_OPTIONS = Symbol('AUTH_OPTIONS');

/** What AuthModule.forRoot takes: the service's auth configuration and its keyring (API key hashes). */
export interface AuthOptions {
  auth: AuthConfig;
  keyring: Keyring;
}
