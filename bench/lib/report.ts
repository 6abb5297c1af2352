import { mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { formatNumber, type ScenarioResult } from "./scenario.js";

export interface BenchReport {
  date: string;
  quick: boolean;
  /** Only some scenarios, or another number of runs than the full run's: kept out of git. */
  partial?: boolean;
  machine: { cpus: number; cpuModel: string; memoryGb: number; node: string; postgres: string; platform: string };
  scenarios: ScenarioResult[];
  /** Scenarios that failed to run, with why: a crash fails the bench. */
  failures: Array<{ id: string; error: string }>;
}

export function machineInfo(postgres: string): BenchReport["machine"] {
  const cpu = cpus();
  return { cpus: cpu.length, cpuModel: cpu[0]?.model ?? "unknown", memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version, postgres, platform: `${process.platform} ${process.arch}` };
}

/** One scenario as text tables: every case with "median (min–max)" per metric, then the goals. */
export function scenarioTable(s: ScenarioResult): string {
  const metrics = [...new Set(s.cases.flatMap((c) => Object.keys(c.metrics)))];
  const rows = s.cases.map((c) => [c.name, c.role, ...metrics.map((m) => {
    const v = c.metrics[m];
    if (!v) return "";
    return v.runs.length > 1 ? `${formatNumber(v.median)} (${formatNumber(v.min)}–${formatNumber(v.max)})` : formatNumber(v.median);
  })]);
  const lines = [`## ${s.id}: ${s.title}`, "", ...markdownTable(["case", "role", ...metrics], rows)];
  if (s.goals.length > 0) {
    lines.push("", ...markdownTable(["goal", "measured", "target", ""], s.goals.map((g) => [g.goal, g.measured, g.target, g.pass ? "pass" : "FAIL"])));
  }
  if (s.notes.length > 0) lines.push("", ...s.notes.map((n) => `- ${n}`));
  return lines.join("\n");
}

function markdownTable(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)];
}

/**
 * A bar chart per scenario of each case's first metric (its headline number), coloured by
 * role, as one SVG: no chart library, so the suite has no rendering dependency.
 */
export function chartSvg(report: BenchReport): string {
  const colours = { tidings: "#2563eb", peer: "#f59e0b", limit: "#6b7280" } as const;
  const width = 900;
  const barHeight = 18;
  const labelWidth = 380;
  let y = 40;
  const parts: string[] = [];
  for (const s of report.scenarios) {
    parts.push(`<text x="10" y="${y}" font-size="15" font-weight="bold">${escape(`${s.id}: ${s.title}`)}</text>`);
    y += 10;
    // Cases grouped by metric: each group shares a scale.
    const byMetric = new Map<string, Array<{ name: string; role: keyof typeof colours; value: number }>>();
    for (const c of s.cases) {
      const metric = Object.keys(c.metrics)[0];
      if (!metric) continue;
      const list = byMetric.get(metric) ?? [];
      list.push({ name: c.name, role: c.role, value: c.metrics[metric]!.median });
      byMetric.set(metric, list);
    }
    for (const [metric, bars] of byMetric) {
      y += 20;
      parts.push(`<text x="10" y="${y}" font-size="12" fill="#374151">${escape(metric)}</text>`);
      const max = Math.max(...bars.map((b) => b.value).filter(Number.isFinite), 1e-9);
      for (const b of bars) {
        y += barHeight + 4;
        const w = Number.isFinite(b.value) ? Math.max(1, ((width - labelWidth - 90) * b.value) / max) : 0;
        parts.push(`<text x="10" y="${y - 5}" font-size="11">${escape(b.name)}</text>`);
        parts.push(`<rect x="${labelWidth}" y="${y - barHeight + 2}" width="${w.toFixed(1)}" height="${barHeight - 4}" fill="${colours[b.role]}"/>`);
        parts.push(`<text x="${labelWidth + w + 6}" y="${y - 5}" font-size="11">${escape(formatNumber(b.value))}</text>`);
      }
    }
    y += 30;
  }
  const legend = Object.entries(colours).map(([role, colour], i) => `<rect x="${10 + i * 110}" y="8" width="12" height="12" fill="${colour}"/><text x="${26 + i * 110}" y="18" font-size="12">${role}</text>`).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 10}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>${legend}${parts.join("")}</svg>\n`;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Writes bench/results/<date>.json and .svg; returns their paths. */
export async function writeReport(dir: string, report: BenchReport): Promise<{ json: string; svg: string }> {
  await mkdir(dir, { recursive: true });
  const stamp = report.date.replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
  const base = join(dir, `${stamp}${report.quick ? "-quick" : report.partial ? "-partial" : ""}`);
  await writeFile(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(`${base}.svg`, chartSvg(report));
  return { json: `${base}.json`, svg: `${base}.svg` };
}
