import type { BenchLimits } from "./limits.js";
import { median } from "./stats.js";

/** Who a measured case is: Tidings itself, a peer product, or the raw limit of the machine. */
export type Role = "tidings" | "peer" | "limit";

/** Metrics of one run of a case, by name with the unit in it: "events/s", "p99 ms", "rss MB". */
export type Metrics = Record<string, number>;

export interface Case {
  name: string;
  role: Role;
  run(): Promise<Metrics>;
}

/** A metric of a case over every run: the median is what ratios use; min and max show the spread. */
export interface MetricSummary {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export interface CaseResult {
  name: string;
  role: Role;
  metrics: Record<string, MetricSummary>;
}

/** A goal of the issue, evaluated on the medians of one bench run. */
export interface GoalResult {
  goal: string;
  /** "1.42×", "0.8 ms", "74 MB": the measured value as the goal states it. */
  measured: string;
  target: string;
  pass: boolean;
}

export interface ScenarioResult {
  id: string;
  title: string;
  cases: CaseResult[];
  goals: GoalResult[];
  /** Anything else worth keeping: query plans, settings, what a peer could not do. */
  notes: string[];
}

export interface BenchContext {
  limits: BenchLimits;
  log(message: string): void;
}

export interface Scenario {
  id: string;
  title: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}

/**
 * Runs every case `runs` times, alternating the order (A B C, then C B A, ...) so that drift in
 * the machine's speed lands on every case alike, and summarizes each metric.
 */
export async function runCases(ctx: BenchContext, cases: readonly Case[]): Promise<CaseResult[]> {
  const samples = new Map<string, Metrics[]>(cases.map((c) => [c.name, []]));
  for (let r = 0; r < ctx.limits.runs; r++) {
    const order = r % 2 === 0 ? cases : [...cases].reverse();
    for (const c of order) {
      ctx.log(`  run ${r + 1}/${ctx.limits.runs}: ${c.name}`);
      const metrics = await c.run();
      samples.get(c.name)!.push(metrics);
      ctx.log(`    ${Object.entries(metrics).map(([k, v]) => `${k} ${formatNumber(v)}`).join(", ")}`);
    }
  }
  return cases.map((c) => ({ name: c.name, role: c.role, metrics: summarize(samples.get(c.name)!) }));
}

function summarize(runs: readonly Metrics[]): Record<string, MetricSummary> {
  const out: Record<string, MetricSummary> = {};
  for (const key of Object.keys(runs[0] ?? {})) {
    const values = runs.map((m) => m[key]!).filter((v) => Number.isFinite(v));
    out[key] = { median: median(values), min: Math.min(...values), max: Math.max(...values), runs: values };
  }
  return out;
}

/** The median of a case's metric; throws if the case or metric is missing (a goal on nothing). */
export function medianOf(results: readonly CaseResult[], caseName: string, metric: string): number {
  const value = results.find((c) => c.name === caseName)?.metrics[metric]?.median;
  if (value === undefined) throw new Error(`no ${metric} for ${caseName}`);
  return value;
}

/** `measured ≥ target × reference`, as a ratio goal. */
export function ratioGoal(goal: string, value: number, reference: number, target: number): GoalResult {
  const ratio = value / reference;
  return { goal, measured: `${ratio.toFixed(2)}×`, target: `≥ ${target}×`, pass: ratio >= target };
}

/** `measured ≤ limit`, for latencies and memory. */
export function atMostGoal(goal: string, value: number, limit: number, unit: string): GoalResult {
  return { goal, measured: `${formatNumber(value)} ${unit}`, target: `≤ ${formatNumber(limit)} ${unit}`, pass: value <= limit };
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
