import { Subjects } from '@mfa/contracts';
import { runService, serviceLogger, type RunningService } from '@mfa/service-kit';
import { DeviceApiErrors } from './api/device-api.errors.js';
import { AppModule } from './app.module.js';
import type { AuthChallengeConfig } from './config.js';

/**
 * Saturated, auth-challenge serves the requests that finish a sign-in (its code, or the IdP's poll
 * of a push) before new sign-ins: under overload new starts are shed untouched, not the second
 * half of sign-ins already paid for (docs/api.md, Deadline).
 */
const FIRST_SERVED = [Subjects.challengeVerify, Subjects.challengeStatus];

/** Replaced by the tenant setting `lockout` (threshold, counterResetMinutes, autoUnblockMinutes). */
const RETIRED_LOCKOUT_VARIABLES = ['MFA_LOCKOUT_THRESHOLD', 'MFA_LOCKOUT_COUNTER_RESET_SECONDS', 'MFA_LOCKOUT_SECONDS'];

export async function boot(config: AuthChallengeConfig): Promise<RunningService> {
  const log = serviceLogger('auth-challenge', config);
  if (config.developmentKey) log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key (never in production)');
  const retired = RETIRED_LOCKOUT_VARIABLES.filter((name) => process.env[name] !== undefined);
  if (retired.length > 0) log.warn('lockout is a tenant setting now (tenants.configure `lockout`); these variables are ignored', { variables: retired });
  return runService({
    name: 'auth-challenge',
    module: AppModule.forRoot(config, log),
    config,
    log,
    firstServed: FIRST_SERVED,
    httpFilters: (adapter) => [new DeviceApiErrors(adapter)],
  });
}
