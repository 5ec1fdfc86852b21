import { hostname } from 'node:os';
import { z } from 'zod';
import { BaseConfig, ConfigError, loadAuthConfig, loadConfig, RedisConfig, unsetWhenEmpty, type AuthConfig } from '@mfa/service-kit';

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/** A switch: `true`/`1` or `false`/`0` exactly (empty is unset: the default). */
const onOff = (byDefault: 'true' | 'false') =>
  unsetWhenEmpty(
    z
      .enum(['true', 'false', '1', '0'])
      .default(byDefault)
      .transform((v) => v === 'true' || v === '1'),
  );

/** Every console setting (docs/operations.md, "Console"); the names are the contract's. */
const ConsoleEnv = BaseConfig.omit({ HTTP_PORT: true, STREAM_REPLICAS: true })
  .extend(RedisConfig.shape)
  .extend({
    /** Pages, their HTTP API, /health and /metrics, on one origin. */
    CONSOLE_PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    /** The origin people reach (behind a proxy it differs): redirect URI and cookie security follow it. */
    CONSOLE_PUBLIC_URL: unsetWhenEmpty(z.url({ protocol: /^https?$/ }).optional()),
    OIDC_ISSUER_URL: unsetWhenEmpty(z.url({ protocol: /^https?$/ }).optional()),
    OIDC_CLIENT_ID: unsetWhenEmpty(z.string().min(1).optional()),
    OIDC_CLIENT_SECRET: unsetWhenEmpty(z.string().min(1).optional()),
    /** The ID token claim holding the operator's roles (platform-operator, tenant-admin:<t>, tenant-reader:<t>). */
    OIDC_ROLES_CLAIM: z.string().min(1).default('roles'),
    /**
     * Signing out of the console also ends the operator's session at the identity provider
     * (OpenID Connect RP-initiated logout, when it names an end_session_endpoint), which then
     * sends the browser to <console origin>/auth/signed-out.
     */
    OIDC_END_SESSION: onOff('true'),
    /**
     * The sign-out at the identity provider is a form posted to its end_session_endpoint, not a
     * link: the ID token (the hint) then stays out of the browser's history and the provider's
     * access log. Off by default: the provider must take the POST with its own session cookie,
     * which a cross-site POST carries only when that cookie is SameSite=None.
     */
    OIDC_END_SESSION_POST: onOff('false'),
    /**
     * A sign-in form that takes any roles, for a first run without an identity provider.
     * Refused in production; off whenever an identity provider is configured.
     */
    CONSOLE_DEV_LOGIN: onOff('false'),
    /** An operator's session ends after this long idle, and after 12 hours in any case. */
    CONSOLE_SESSION_IDLE_MINUTES: z.coerce.number().int().min(5).max(720).default(60),
  });

export type ConsoleConfig = z.infer<typeof ConsoleEnv> & {
  auth: AuthConfig;
  /** CONSOLE_DEV_LOGIN was on but an identity provider is configured: the form stays off. */
  devLoginIgnored: boolean;
  publicUrl: URL;
  oidc?: { issuer: URL; clientId: string; clientSecret: string };
};

export function loadConsoleConfig(env: NodeJS.ProcessEnv = process.env): ConsoleConfig {
  const config = loadConfig(ConsoleEnv, { ...env, INSTANCE_NAME: env.INSTANCE_NAME || hostname() });
  const auth = loadAuthConfig(env);
  const production = config.NODE_ENV === 'production';
  const publicUrl = new URL(config.CONSOLE_PUBLIC_URL ?? `http://127.0.0.1:${config.CONSOLE_PORT}`);
  const problems: string[] = [];
  const oidcSet = [config.OIDC_ISSUER_URL, config.OIDC_CLIENT_ID, config.OIDC_CLIENT_SECRET].filter((v) => v !== undefined).length;
  if (oidcSet !== 0 && oidcSet !== 3) problems.push('OIDC_ISSUER_URL, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET go together');
  if (config.OIDC_ISSUER_URL) {
    const issuer = new URL(config.OIDC_ISSUER_URL);
    if (issuer.protocol !== 'https:' && !LOOPBACK.test(issuer.hostname)) problems.push('OIDC_ISSUER_URL must be https (plain http only on a loopback address)');
  }
  if (publicUrl.protocol !== 'https:' && publicUrl.protocol !== 'http:') problems.push('CONSOLE_PUBLIC_URL must be an http(s) URL');
  // Over plain http the session cookie is not Secure and no Strict-Transport-Security is sent.
  if (production && publicUrl.protocol !== 'https:' && !LOOPBACK.test(publicUrl.hostname)) {
    problems.push('CONSOLE_PUBLIC_URL must be https when NODE_ENV=production (plain http only on a loopback address)');
  }
  if (production && config.CONSOLE_DEV_LOGIN) problems.push('CONSOLE_DEV_LOGIN is refused when NODE_ENV=production');
  if (production && oidcSet === 0) problems.push('OIDC_ISSUER_URL, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are required when NODE_ENV=production');
  if (problems.length > 0) throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  // The development form is for a first run "until OIDC is set" (docker-compose.yml turns it on by
  // default): once an identity provider is configured it would be a way in around it.
  const devLoginIgnored = config.CONSOLE_DEV_LOGIN && oidcSet === 3;
  return {
    ...config,
    CONSOLE_DEV_LOGIN: config.CONSOLE_DEV_LOGIN && !devLoginIgnored,
    devLoginIgnored,
    auth,
    publicUrl,
    ...(config.OIDC_ISSUER_URL
      ? { oidc: { issuer: new URL(config.OIDC_ISSUER_URL), clientId: config.OIDC_CLIENT_ID!, clientSecret: config.OIDC_CLIENT_SECRET! } }
      : {}),
  };
}
