import { LatencyRecorder, type LatencySummary } from "./stats.js";

export interface ClosedLoopResult {
  ops: number;
  opsPerSecond: number;
  latency: LatencySummary;
  errors: number;
  firstError?: unknown;
}

/**
 * `workers` loops, each running `op(worker)` back to back (a closed loop: the next request goes
 * when the last one is answered), for `phaseMs` or until `maxOps` operations in all, whichever
 * comes first. A short warm-up (connections, JIT) runs before the timed phase and is not counted.
 * `opSize` is how many items one op carries (100 for a batch of 100), for items/s.
 */
export async function closedLoop(
  o: { workers: number; phaseMs: number; maxOps: number; warmupMs?: number; opSize?: number },
  op: (worker: number) => Promise<unknown>,
): Promise<ClosedLoopResult> {
  const warmupMs = o.warmupMs ?? Math.min(1_000, o.phaseMs / 4);
  await phase(o.workers, warmupMs, Math.ceil(o.maxOps / 4), op, undefined);
  const recorder = new LatencyRecorder();
  const started = process.hrtime.bigint();
  const counted = await phase(o.workers, o.phaseMs, o.maxOps, op, recorder);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const ops = counted.ops * (o.opSize ?? 1);
  return { ops, opsPerSecond: ops / seconds, latency: recorder.summary(), errors: counted.errors, firstError: counted.firstError };
}

async function phase(
  workers: number,
  ms: number,
  maxOps: number,
  op: (worker: number) => Promise<unknown>,
  recorder: LatencyRecorder | undefined,
): Promise<{ ops: number; errors: number; firstError?: unknown }> {
  const deadline = Date.now() + ms;
  let started = 0;
  let ops = 0;
  let errors = 0;
  let firstError: unknown;
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      while (Date.now() < deadline && started < maxOps) {
        started++;
        const t0 = process.hrtime.bigint();
        try {
          await op(worker);
          recorder?.record(t0);
          ops++;
        } catch (err) {
          errors++;
          firstError ??= err;
          // A failing target must not turn into a hot loop of errors.
          if (errors > 100) return;
        }
      }
    }),
  );
  return { ops, errors, firstError };
}
