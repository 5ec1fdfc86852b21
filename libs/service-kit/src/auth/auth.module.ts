import { Global, Module, type DynamicModule } from '@nestjs/common';
import { ApiClientDirectory } from './api-client.directory.js';
import { ApiKeyGuard } from './api-key.guard.js';
import { AuditTrail } from './audit-trail.js';
import { AUTH_OPTIONS, type AuthOptions } from './auth.options.js';
import { Authenticator } from './authenticator.js';

/**
 * Callers, keys and scopes for a service (docs/api.md): the in-memory API client directory, the
 * authenticator, the guard that `@NatsController()` applies to every handler, and the audit trail
 * the transport writes for admin requests. Every service imports it, after MessagingModule.
 */
@Global()
@Module({})
export class AuthModule {
  static forRoot(options: AuthOptions): DynamicModule {
    return {
      module: AuthModule,
      providers: [{ provide: AUTH_OPTIONS, useValue: options }, ApiClientDirectory, Authenticator, ApiKeyGuard, AuditTrail],
      exports: [AUTH_OPTIONS, ApiClientDirectory, Authenticator, ApiKeyGuard, AuditTrail],
    };
  }
}
