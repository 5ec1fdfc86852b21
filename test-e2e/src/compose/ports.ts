import type { ClusterPorts, ComposePorts } from './derive.js';

/** The compose test's ports (24301-24340): clear of the machine's own servers, of npm start's, and of the ephemeral range. */
export const PORTS: ComposePorts = {
  nats: 24301,
  natsMonitor: 24302,
  redis: 24303,
  postgres: 24304,
  otlp: 24305,
  jaegerUi: 24306,
  jaegerAdmin: 24307,
  services: { console: 24310, 'auth-challenge': 24311, dispatch: 24312, fraud: 24313, 'user-settings': 24314, reporting: 24315, radius: 24316 },
  radius: 24317,
};
/** docker-compose.cluster.yml's nodes; nats and redis keep the single servers' client ports. */
export const CLUSTER: ClusterPorts = {
  nats: {
    nats: { client: PORTS.nats, monitor: PORTS.natsMonitor, route: 24320 },
    'nats-2': { client: 24321, monitor: 24322, route: 24323 },
    'nats-3': { client: 24324, monitor: 24325, route: 24326 },
  },
  redis: {
    redis: { port: PORTS.redis, bus: 24330 },
    'redis-2': { port: 24331, bus: 24332 },
    'redis-3': { port: 24333, bus: 24334 },
    'redis-4': { port: 24335, bus: 24336 },
    'redis-5': { port: 24337, bus: 24338 },
    'redis-6': { port: 24339, bus: 24340 },
  },
};
