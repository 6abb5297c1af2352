/** Small statistics for benchmark samples: percentiles of latencies, median and spread of runs. */

/** The q-quantile (0..1) of the values, by nearest rank; NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Latency summary in milliseconds. */
export interface LatencySummary {
  p50: number;
  p99: number;
  max: number;
  count: number;
}

export function summarizeLatencies(ms: readonly number[]): LatencySummary {
  let max = Number.NaN;
  for (const v of ms) if (!(v <= max)) max = v; // a loop: spreading 100k+ samples into Math.max overflows the stack
  return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), max, count: ms.length };
}

/**
 * Latencies recorded as they come, in a flat array of numbers: millions of samples stay cheap.
 * `record(startNs)` takes a process.hrtime.bigint() start.
 */
export class LatencyRecorder {
  #samples: number[] = [];
  record(startNs: bigint): void {
    this.#samples.push(Number(process.hrtime.bigint() - startNs) / 1e6);
  }
  add(ms: number): void {
    this.#samples.push(ms);
  }
  get count(): number {
    return this.#samples.length;
  }
  summary(): LatencySummary {
    return summarizeLatencies(this.#samples);
  }
}
