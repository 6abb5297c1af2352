// Rewrites docs/PERFORMANCE.md's "## Results (latest full run)" section from a full run's JSON, with the
// tables the suite printed for it (scenarioTable), under the section's usual headings.
// Usage: npx tsx bench/docs-results.ts bench/results/<date>.json
import { readFileSync, writeFileSync } from "node:fs";
import { scenarioTable, type BenchReport } from "./lib/report.js";

const file = process.argv[2];
if (!file) {
  process.stderr.write("usage: npx tsx bench/docs-results.ts bench/results/<date>.json (a full run)\n");
  process.exit(2);
}
const report = JSON.parse(readFileSync(file, "utf8")) as BenchReport;
if (report.quick || report.partial) {
  process.stderr.write(`${file} is a ${report.quick ? "quick" : "partial"} run; the results section shows full runs only\n`);
  process.exit(1);
}
const headings: Record<string, string> = {
  publish: "### 1. Publish throughput",
  latency: "### 2. Publish → subscriber latency (1,000 events/s)",
  webhooks: "### 3. Webhook throughput and latency",
  growth: "### 4. Cost as the log grows (empty, 1M, 10M stored events)",
  memory: "### 5. Memory",
};
const parts = ["## Results (latest full run)", ""];
for (const s of report.scenarios) {
  parts.push(headings[s.id] ?? `### ${s.title}`, "", ...scenarioTable(s).split("\n").slice(2), "");
}
const doc = readFileSync("docs/PERFORMANCE.md", "utf8");
const start = doc.indexOf("## Results (latest full run)");
const end = doc.indexOf("\n## ", start + 10) + 1;
if (start < 0 || end <= 0) {
  process.stderr.write('docs/PERFORMANCE.md has no "## Results (latest full run)" section followed by another "## " section\n');
  process.exit(1);
}
writeFileSync("docs/PERFORMANCE.md", `${doc.slice(0, start)}${parts.join("\n")}\n${doc.slice(end)}`);
console.log(`docs/PERFORMANCE.md: results section rewritten from ${file} (${report.scenarios.length} scenarios); update the status paragraph and the chart (docs/performance.svg) by hand`);
