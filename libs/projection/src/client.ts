import type { Cluster, Redis } from 'ioredis';

/**
 * The Redis client every service holds (REDIS_MODE): one server or its sentinel-chosen master
 * (Redis), or a Redis Cluster (Cluster). Both take the same commands; every script and multi-key
 * command keeps its keys in one hash slot (keys.ts), so either runs them.
 */
export type RedisClient = Redis | Cluster;
