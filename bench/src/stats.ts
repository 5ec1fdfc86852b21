/** Latency samples in milliseconds and their percentiles (exact: every sample is kept). */
export class Samples {
  private values: number[] = [];
  add(ms: number): void {
    this.values.push(ms);
  }
  get count(): number {
    return this.values.length;
  }
  percentile(p: number): number {
    if (this.values.length === 0) return Number.NaN;
    const sorted = Float64Array.from(this.values).sort();
    const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[rank]!;
  }
  summary(): { count: number; p50: number; p99: number; p999: number; max: number } {
    return {
      count: this.count,
      p50: this.percentile(50),
      p99: this.percentile(99),
      p999: this.percentile(99.9),
      max: this.percentile(100),
    };
  }
}

export const fmt = (ms: number) => (Number.isNaN(ms) ? '   -  ' : ms < 10 ? ms.toFixed(2) : ms.toFixed(1));
