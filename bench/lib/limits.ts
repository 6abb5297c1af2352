/** How long and how much every bench loop may run: a full run and a `--quick` smoke run. */
export interface BenchLimits {
  quick: boolean;
  /** Repetitions of each case, alternated between Tidings and its peers. */
  runs: number;
  /** Wall time of one timed phase of a case. */
  phaseMs: number;
  /** Upper bound on operations of one timed phase (whichever ends first). */
  maxOps: number;
  /** Events sent to webhooks per case (scenario 3). */
  webhookEvents: number;
  /** Stored-log sizes for the growth scenario. */
  growthSizes: number[];
  /** Idle streams opened for the memory scenario. */
  idleStreams: number;
}

export function limitsFor(quick: boolean): BenchLimits {
  return quick
    ? { quick, runs: 1, phaseMs: 1_500, maxOps: 50_000, webhookEvents: 1_000, growthSizes: [0, 100_000], idleStreams: 200 }
    : { quick, runs: 3, phaseMs: 5_000, maxOps: 1_000_000, webhookEvents: 20_000, growthSizes: [0, 1_000_000, 10_000_000], idleStreams: 1_000 };
}

/** Rejects if `work` has not settled within `ms`: no bench step may hang the suite. */
export async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
