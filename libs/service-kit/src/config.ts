import { z } from 'zod';
import { hostname, networkInterfaces } from 'node:os';
import { loadKeyring, type Keyring } from '@mfa/crypto';
import { natsUrlProblems, readNatsSecurity } from '@mfa/messaging';
import { tracingConfigProblems } from '@mfa/telemetry';
import { redisConnectionOf, type RedisConfig, type RedisConnection } from './redis-connection.js';

/** Environment shared by every service; names are part of the contract (docs/operations.md, "Configuration"). */
export const BaseConfig = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  NATS_URL: z.string().min(1).default('nats://127.0.0.1:4222'),
  // Credentials, TLS and inbox prefix of the NATS connection (docs/operations.md, "NATS
  // credentials and permissions"). Checked together, files included, by loadConfig.
  NATS_USER: z.string().optional(),
  NATS_PASSWORD: z.string().optional(),
  NATS_TOKEN: z.string().optional(),
  NATS_CREDS: z.string().optional(),
  NATS_TLS_CA: z.string().optional(),
  NATS_TLS_CERT: z.string().optional(),
  NATS_TLS_KEY: z.string().optional(),
  NATS_INBOX_PREFIX: z.string().optional(),
  HTTP_HOST: z.string().default('127.0.0.1'),
  /** 0 picks a free port (two instances on one host); the chosen one is printed. */
  HTTP_PORT: z.coerce.number().int().min(0).max(65535),
  INSTANCE_NAME: z.string().min(1).default(hostname()),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
});
export type BaseConfig = z.infer<typeof BaseConfig>;

/** docker-compose passes `${VAR:-}`: an empty variable is an unset one. */
export const unsetWhenEmpty = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema);

/** What MessagingModule needs of the configuration to connect. */
export type NatsConfig = Pick<BaseConfig, 'NATS_URL'> &
  Partial<Pick<BaseConfig, 'NATS_USER' | 'NATS_PASSWORD' | 'NATS_TOKEN' | 'NATS_CREDS' | 'NATS_TLS_CA' | 'NATS_TLS_CERT' | 'NATS_TLS_KEY' | 'NATS_INBOX_PREFIX'>>;

export const DatabaseConfig = z.object({
  /** The primary: the projection writers and migrations. */
  DATABASE_URL: z.string().min(1).default('postgres://postgres@127.0.0.1:5432/mfa'),
  /** A streaming replica that report queries read from (docs/operations.md, "Scale-out"); unset: the primary. */
  DATABASE_READ_URL: unsetWhenEmpty(z.string().min(1).optional()),
});

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Validates the environment at boot: a bad value stops the process with a clear message. */
export function loadConfig<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'env'}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  // The NATS_* settings depend on each other and on files, so they are checked here rather than in
  // BaseConfig: a refined object schema could no longer be extended with a service's own defaults.
  // A schema without them (not built on BaseConfig) has stripped them and passes.
  // The Redis variables likewise depend on REDIS_MODE.
  if (typeof parsed.data === 'object' && parsed.data !== null) {
    const data = parsed.data as Record<string, string | undefined>;
    const { problems } = readNatsSecurity(data);
    if (typeof data.NATS_URL === 'string') problems.push(...natsUrlProblems(data.NATS_URL));
    if (typeof data.REDIS_MODE === 'string') problems.push(...redisConnectionOf(data as unknown as RedisConfig).problems);
    for (const name of ['DATABASE_URL', 'DATABASE_READ_URL'] as const) {
      if (typeof data[name] === 'string' && !/^postgres(ql)?:\/\//.test(data[name])) problems.push(`${name}: must start with postgres:// or postgresql://`);
    }
    // Tracing is started before the configuration is read (main.ts): its variables are checked here.
    problems.push(...tracingConfigProblems(env));
    if (problems.length > 0) throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** The keyring of the services that seal or hash secrets, loaded with their configuration. */
export interface KeyringConfig {
  keyring: Keyring;
  /** True when no MFA_ENCRYPTION_KEY was given and the public development key is in use. */
  developmentKey: boolean;
}

export function loadKeyringConfig(env: NodeJS.ProcessEnv = process.env): KeyringConfig {
  try {
    const { keyring, development } = loadKeyring(env);
    return { keyring, developmentKey: development };
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${(error as Error).message}`, { cause: error });
  }
}

/** The first non-internal IPv4 address of this host (the server IP that reports show), else loopback. */
export function serverIp(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (i.family === 'IPv4' && !i.internal) return i.address;
  }
  return '127.0.0.1';
}

/** The Redis connection a validated configuration names (loadConfig has checked it). */
export function redisConnectionFrom(config: RedisConfig): RedisConnection {
  const { connection, problems } = redisConnectionOf(config);
  if (!connection) throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  return connection;
}
