import { z } from 'zod';

const unset = (v: unknown) => (v === '' ? undefined : v);

/**
 * Where Redis is (MISSION.md part 3, "Running on clusters"): `REDIS_MODE` standalone (REDIS_URL),
 * cluster (REDIS_NODES, seeds of a Redis Cluster) or sentinel (REDIS_SENTINELS and
 * REDIS_SENTINEL_NAME). REDIS_PASSWORD is the data nodes' password in every mode (it overrides a
 * password in REDIS_URL), REDIS_SENTINEL_PASSWORD the sentinels'. Empty variables are unset.
 */
export const RedisConfig = z.object({
  REDIS_MODE: z.preprocess(unset, z.enum(['standalone', 'cluster', 'sentinel']).default('standalone')),
  REDIS_URL: z.preprocess(unset, z.string().min(1).default('redis://127.0.0.1:6379')),
  REDIS_NODES: z.preprocess(unset, z.string().optional()),
  REDIS_SENTINELS: z.preprocess(unset, z.string().optional()),
  REDIS_SENTINEL_NAME: z.preprocess(unset, z.string().min(1).default('mymaster')),
  REDIS_PASSWORD: z.preprocess(unset, z.string().optional()),
  REDIS_SENTINEL_PASSWORD: z.preprocess(unset, z.string().optional()),
});
export type RedisConfig = z.infer<typeof RedisConfig>;

export interface HostPort {
  host: string;
  port: number;
}

/** What the Redis adapter connects to, checked: one of the three modes with all it needs. */
export type RedisConnection =
  | { mode: 'standalone'; url: string; password?: string }
  | { mode: 'cluster'; nodes: HostPort[]; password?: string }
  | { mode: 'sentinel'; sentinels: HostPort[]; name: string; password?: string; sentinelPassword?: string };

/**
 * A comma-separated list of `host:port` (IPv6 in brackets: `[::1]:6379`). Problems name the
 * variable and the entry at fault, never a password (none can be in these lists).
 */
export function parseHostPorts(variable: string, list: string | undefined): { addresses: HostPort[]; problems: string[] } {
  const problems: string[] = [];
  const addresses: HostPort[] = [];
  const entries = (list ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0) return { addresses, problems: [`${variable}: required, a comma-separated list of host:port`] };
  for (const entry of entries) {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(entry);
    const port = match ? Number(match[3]) : NaN;
    if (!match || !(port >= 1 && port <= 65535)) {
      problems.push(`${variable}: ${JSON.stringify(entry.slice(0, 100))} is not host:port`);
      continue;
    }
    addresses.push({ host: match[1] ?? match[2]!, port });
  }
  return { addresses, problems };
}

/** The connection the configuration describes, or the problems that stop the boot. */
export function redisConnectionOf(config: RedisConfig): { connection?: RedisConnection; problems: string[] } {
  const password = config.REDIS_PASSWORD ? { password: config.REDIS_PASSWORD } : {};
  switch (config.REDIS_MODE) {
    case 'standalone': {
      let url: URL;
      try {
        url = new URL(config.REDIS_URL);
      } catch {
        return { problems: ['REDIS_URL: not a URL (redis://host:port or rediss://host:port)'] };
      }
      if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') return { problems: ['REDIS_URL: must start with redis:// or rediss://'] };
      return { connection: { mode: 'standalone', url: config.REDIS_URL, ...password }, problems: [] };
    }
    case 'cluster': {
      const { addresses, problems } = parseHostPorts('REDIS_NODES', config.REDIS_NODES);
      return problems.length > 0 ? { problems } : { connection: { mode: 'cluster', nodes: addresses, ...password }, problems };
    }
    case 'sentinel': {
      const { addresses, problems } = parseHostPorts('REDIS_SENTINELS', config.REDIS_SENTINELS);
      if (problems.length > 0) return { problems };
      return {
        connection: {
          mode: 'sentinel',
          sentinels: addresses,
          name: config.REDIS_SENTINEL_NAME,
          ...password,
          ...(config.REDIS_SENTINEL_PASSWORD ? { sentinelPassword: config.REDIS_SENTINEL_PASSWORD } : {}),
        },
        problems,
      };
    }
  }
}

/** What the configuration's Redis variables name, for a log line (no password). */
export function describeRedis(connection: RedisConnection): string {
  const list = (a: HostPort[]) => a.map((h) => (h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`)).join(',');
  switch (connection.mode) {
    case 'standalone': {
      const url = new URL(connection.url);
      return `standalone ${url.protocol}//${url.host}`;
    }
    case 'cluster':
      return `cluster ${list(connection.nodes)}`;
    case 'sentinel':
      return `sentinel ${connection.name} via ${list(connection.sentinels)}`;
  }
}
