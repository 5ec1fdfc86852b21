import { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, RedisConfig, unsetWhenEmpty, type AuthConfig, type KeyringConfig } from '@mfa/service-kit';
import { PasswordMode, RadiusClients } from './domain/clients.js';

const RadiusEnv = BaseConfig.extend(RedisConfig.shape).extend({
  HTTP_PORT: BaseConfig.shape.HTTP_PORT.default(3006),
  /** The UDP port RADIUS requests arrive on (RFC 2865: 1812). */
  RADIUS_PORT: unsetWhenEmpty(z.coerce.number().int().min(0).max(65535).default(1812)),
  /** The address to listen on: 127.0.0.1 unless the VPNs are elsewhere (0.0.0.0 or :: for every interface). */
  RADIUS_BIND: unsetWhenEmpty(z.union([z.ipv4(), z.ipv6()], { error: 'must be an IPv4 or IPv6 address such as 0.0.0.0' }).default('127.0.0.1')),
  /** Who may ask: a JSON array of {cidr, secret (≥ 16 characters), tenantId, name?, apiKey?, passwordMode?}. */
  RADIUS_CLIENTS: RadiusClients,
  /**
   * The UDP socket's receive buffer (SO_RCVBUF), bytes: what a burst of datagrams can queue while
   * the process is busy or not scheduled, before the kernel drops the rest. The kernel caps it at
   * net.core.rmem_max (the service warns at boot when it got less).
   */
  RADIUS_RECEIVE_BUFFER_BYTES: unsetWhenEmpty(z.coerce.number().int().min(65_536).max(268_435_456).default(4_194_304)),
  /** How long a push or a call is waited for before the answer is Access-Reject. */
  RADIUS_WAIT_SECONDS: unsetWhenEmpty(z.coerce.number().int().min(1).max(120).default(25)),
  /** challenge: the code answers an Access-Challenge; otp: the first request's password is the code. */
  RADIUS_PASSWORD_MODE: unsetWhenEmpty(PasswordMode.default('challenge')),
});

export type RadiusConfig = z.infer<typeof RadiusEnv> & KeyringConfig & { auth: AuthConfig };

export const loadRadiusConfig = (env: NodeJS.ProcessEnv = process.env): RadiusConfig => ({
  ...loadConfig(RadiusEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});
