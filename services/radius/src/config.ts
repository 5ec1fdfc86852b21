import { z } from 'zod';
import { BaseConfig, loadAuthConfig, loadConfig, loadKeyringConfig, RedisConfig, redisConnectionFrom, unsetWhenEmpty, type AuthConfig, type KeyringConfig, type RedisConnection } from '@mfa/service-kit';
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
  /**
   * How long an Access-Request is remembered, across instances, so that a copy sent again (a
   * captured packet replayed from another port, to another instance, or later) starts no second
   * challenge. Longer than the in-memory retransmission window (an answer's longest wait and
   * 30 s); each request costs a small Redis key this long.
   */
  RADIUS_REPLAY_WINDOW_SECONDS: unsetWhenEmpty(z.coerce.number().int().min(300).max(86_400).default(600)),
  /** challenge: the code answers an Access-Challenge; otp: the first request's password is the code. */
  RADIUS_PASSWORD_MODE: unsetWhenEmpty(PasswordMode.default('challenge')),
});

export type RadiusConfig = z.infer<typeof RadiusEnv> & KeyringConfig & { auth: AuthConfig };

export const loadRadiusConfig = (env: NodeJS.ProcessEnv = process.env): RadiusConfig => ({
  ...loadConfig(RadiusEnv, env),
  ...loadKeyringConfig(env),
  auth: loadAuthConfig(env),
});

/**
 * The front's Redis connection (RedisModule): every command fails after the services' general
 * command timeout (REDIS_COMMAND_TIMEOUT_MS, 2 s; 5 s on a cluster), and the request then gets
 * no answer (drops{reason="internal"}), early enough for the NAS to try its next server within
 * its own timeout (3–5 s). Not auth-challenge's longer timeout for decisions: a command of the
 * front that timed out may still run (a request recorded, a State taken), but what follows is
 * silence, never a reply that invites the same request again: its retransmissions find the
 * silence in memory or the request recorded (SeenRequests), and an answer to a State taken
 * meanwhile is refused as expired.
 */
export const redisOf = (config: RadiusConfig): { connection: RedisConnection; connectionName: string } => ({ connection: redisConnectionFrom(config), connectionName: 'radius' });
