import client from 'prom-client';

/**
 * One Prometheus registry per process, served at /metrics. Default Node metrics (event loop lag,
 * heap, GC) are on; every metric carries the `service` label.
 */
export const registry = new client.Registry();
let started = false;

export function startMetrics(serviceName: string): void {
  if (started) return;
  started = true;
  registry.setDefaultLabels({ service: serviceName });
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
}

export function counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []) {
  return new client.Counter<L>({ name, help, labelNames, registers: [registry] });
}

export function gauge<L extends string>(name: string, help: string, labelNames: readonly L[] = []) {
  return new client.Gauge<L>({ name, help, labelNames, registers: [registry] });
}

export function histogram<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  buckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
) {
  return new client.Histogram<L>({ name, help, labelNames, buckets, registers: [registry] });
}
