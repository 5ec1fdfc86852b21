import { cpuBetween, machineBusySeconds, processSnapshot } from './cpu.js';
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
  /** CPU seconds the whole machine was busy during the run, the stack's included. */
  machineBusy: number;
  /** Resident memory (MiB) by process group, at the start and then every minute of the run. */
  rss: Array<{ atSeconds: number; mib: Map<string, number> }>;
  /**
   * Each minute of a long run: pairs completed in it and the CPU seconds each process group used
   * in it, so that a cost growing with the run's length shows which process it is in.
   */
  minutes: Array<{ atSeconds: number; pairs: number; cpu: Map<string, number> }>;
  /**
   * Ten-second windows of a long run in which a pair failed or a request took over a second: when,
   * how many failed, the slowest request, and what the probe saw then (each service's longest
   * event loop delay in the window), so that a stall can be told from a slow run and placed.
   */
  stalls: Array<{ atSeconds: number; failed: number; maxMs: number; probe: Record<string, number> }>;
}

/** Samples taken every ten seconds of a long run (e.g. each service's longest event loop delay since the last). */
export type Probe = () => Promise<Record<string, number>>;

const STALL_WINDOW_MS = 10_000;
const STALL_LATENCY_MS = 1_000;

export type Pair = (index: number, intendedStartMs: number, record: (type: string, ms: number) => void) => Promise<void>;

/**
 * Open-loop load at a fixed arrival rate: pair i is due at t0 + i/rate, whether or not earlier
 * pairs have finished, and its first request's latency is measured from when it was due, so a
 * stall shows up in the percentiles instead of silently lowering the offered load (no
 * coordinated omission).
 */
export async function runAtFixedRate(name: string, rate: number, durationSeconds: number, pair: Pair, probe?: Probe): Promise<ScenarioResult> {
  const latency: Record<string, Samples> = {};
  let window = { failed: 0, maxMs: 0 };
  const record = (type: string, ms: number) => {
    (latency[type] ??= new Samples()).add(ms);
    if (ms > window.maxMs) window.maxMs = ms;
  };
  const total = Math.round(rate * durationSeconds);
  const errorSamples: string[] = [];
  let errors = 0;
  let completed = 0;
  const inflight = new Set<Promise<void>>();
  const before = processSnapshot();
  const busyBefore = machineBusySeconds();
  const t0 = performance.now() + 50;
  const rss = [{ atSeconds: 0, mib: before.rss }];
  const minutes: ScenarioResult['minutes'] = [];
  let minuteStart = { cpu: before.cpu, completed: 0 };
  const rssTimer = setInterval(() => {
    const atSeconds = Math.round((performance.now() - t0) / 1000);
    const now = processSnapshot();
    rss.push({ atSeconds, mib: now.rss });
    minutes.push({ atSeconds, pairs: completed - minuteStart.completed, cpu: cpuBetween(minuteStart.cpu, now.cpu) });
    minuteStart = { cpu: now.cpu, completed };
  }, 60_000);
  const stalls: ScenarioResult['stalls'] = [];
  // Only long runs: a probe's scrape is work the machine does, left out of short measurements.
  const stallTimer =
    probe && durationSeconds >= 120
      ? setInterval(() => {
          const seen = window;
          window = { failed: 0, maxMs: 0 };
          const atSeconds = Math.round((performance.now() - t0) / 1000);
          // A probe that fails (a service not answering its /metrics) still leaves the window's record.
          void probe()
            .catch(() => ({}))
            .then((sample) => {
              if (seen.failed > 0 || seen.maxMs > STALL_LATENCY_MS) stalls.push({ atSeconds, ...seen, probe: sample });
            });
        }, STALL_WINDOW_MS)
      : undefined;
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
            window.failed++;
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
  clearInterval(stallTimer);
  const after = processSnapshot();
  const machineBusy = machineBusySeconds() - busyBefore;
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
    machineBusy,
    rss,
    minutes,
    stalls,
  };
}
