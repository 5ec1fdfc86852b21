import { cpuBetween, processSnapshot } from './cpu.js';
import { Samples } from './stats.js';

export interface ScenarioResult {
  name: string;
  targetRate: number;
  durationSeconds: number;
  pairsCompleted: number;
  pairsPerSecond: number;
  errors: number;
  errorSamples: string[];
  latency: Record<string, Samples>;
  /** CPU seconds each process group used during the run (bench/src/cpu.ts). */
  cpu: Map<string, number>;
  /** Resident memory (MiB) by process group, at the start and then every minute of the run. */
  rss: Array<{ atSeconds: number; mib: Map<string, number> }>;
}

export type Pair = (index: number, intendedStartMs: number, record: (type: string, ms: number) => void) => Promise<void>;

/**
 * Open-loop load at a fixed arrival rate: pair i is due at t0 + i/rate, whether or not earlier
 * pairs have finished, and its first request's latency is measured from when it was due, so a
 * stall shows up in the percentiles instead of silently lowering the offered load (no
 * coordinated omission).
 */
export async function runAtFixedRate(name: string, rate: number, durationSeconds: number, pair: Pair): Promise<ScenarioResult> {
  const latency: Record<string, Samples> = {};
  const record = (type: string, ms: number) => (latency[type] ??= new Samples()).add(ms);
  const total = Math.round(rate * durationSeconds);
  const errorSamples: string[] = [];
  let errors = 0;
  let completed = 0;
  const inflight = new Set<Promise<void>>();
  const before = processSnapshot();
  const t0 = performance.now() + 50;
  const rss = [{ atSeconds: 0, mib: before.rss }];
  const rssTimer = setInterval(() => rss.push({ atSeconds: Math.round((performance.now() - t0) / 1000), mib: processSnapshot().rss }), 60_000);
  let next = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total && t0 + (next * 1000) / rate <= now) {
        const due = t0 + (next * 1000) / rate;
        const p = pair(next, due, record).then(
          () => {
            completed++;
          },
          (error: unknown) => {
            errors++;
            if (errorSamples.length < 5) errorSamples.push(String((error as Error)?.message ?? error));
          },
        );
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        next++;
      }
      if (next >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(inflight);
  clearInterval(rssTimer);
  const after = processSnapshot();
  rss.push({ atSeconds: Math.round((performance.now() - t0) / 1000), mib: after.rss });
  const cpu = cpuBetween(before.cpu, after.cpu);
  const elapsed = (performance.now() - t0) / 1000;
  return {
    name,
    targetRate: rate,
    durationSeconds: elapsed,
    pairsCompleted: completed,
    pairsPerSecond: completed / elapsed,
    errors,
    errorSamples,
    latency,
    cpu,
    rss,
  };
}
