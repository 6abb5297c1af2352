import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { postgresVersion } from "./lib/database.js";
import { limitsFor } from "./lib/limits.js";
import { type BenchReport, machineInfo, scenarioTable, writeReport } from "./lib/report.js";
import type { BenchContext } from "./lib/scenario.js";
import { scenarios } from "./scenarios/index.js";

const usage = `npm run bench [-- --quick] [-- --only publish,latency] [-- --runs 5]

Runs every scenario with its peers beside it and prints a table per scenario; writes
bench/results/<date>.json and a chart (.svg). --quick is a smoke run of about two minutes.
Scenarios: ${scenarios.map((s) => s.id).join(", ")}`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { quick: { type: "boolean" }, only: { type: "string" }, runs: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const limits = limitsFor(values.quick ?? false);
  if (values.runs !== undefined) {
    const runs = Number(values.runs);
    if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error("--runs must be an integer from 1 to 20");
    limits.runs = runs;
  }
  const only = values.only?.split(",").map((s) => s.trim()).filter(Boolean);
  const unknown = only?.filter((id) => !scenarios.some((s) => s.id === id)) ?? [];
  if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(", ")}; there are ${scenarios.map((s) => s.id).join(", ")}`);
  const chosen = only ? scenarios.filter((s) => only.includes(s.id)) : scenarios;

  const started = Date.now();
  const log = (message: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${message}\n`);
  const ctx: BenchContext = { limits, log };
  const partial = only !== undefined || values.runs !== undefined;
  const report: BenchReport = { date: new Date().toISOString(), quick: limits.quick, partial, machine: machineInfo(await postgresVersion()), scenarios: [], failures: [] };
  log(`bench: ${chosen.length} scenarios, ${limits.runs} run(s) each${limits.quick ? " (quick)" : ""}`);
  for (const scenario of chosen) {
    log(`${scenario.id}: ${scenario.title}`);
    try {
      const result = await scenario.run(ctx);
      report.scenarios.push(result);
      process.stdout.write(`\n${scenarioTable(result)}\n`);
    } catch (err) {
      log(`${scenario.id} failed: ${(err as Error).stack ?? err}`);
      report.failures.push({ id: scenario.id, error: String((err as Error).message ?? err) });
    }
  }
  const out = await writeReport(fileURLToPath(new URL("./results/", import.meta.url)), report);
  const goals = report.scenarios.flatMap((s) => s.goals);
  log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s: ${goals.filter((g) => g.pass).length}/${goals.length} goals met; ${out.json}, ${out.svg}`);
  // Speed is reported, not enforced: only a crash fails the run.
  return report.failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exit(2);
  },
);
