import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** One fault scenario's line in the report printed at the end of `npm run test:faults`. */
export interface FaultReport {
  scenario: string;
  /** The load it held while the fault hit. */
  load: string;
  /** What was done to it. */
  faults: string;
  /** Inputs tried (fuzzing), if any. */
  inputs?: number;
  /** Acknowledged events that were missing afterwards: must be 0. */
  lost: number;
  /** Anything else worth a line. */
  notes?: string;
}

const envKey = "TIDINGS_FAULT_REPORT";

/** Records a scenario's outcome for the report (test files run in their own processes). */
export function reportFault(r: FaultReport): void {
  const file = process.env[envKey];
  if (file) appendFileSync(file, `${JSON.stringify(r)}\n`);
}

/** vitest globalSetup: a report file for the run, printed once every file has run. */
export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), "tidings-faults-"));
  const file = join(dir, "report.jsonl");
  process.env[envKey] = file;
  return () => {
    const rows: FaultReport[] = existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as FaultReport) : [];
    const lost = rows.reduce((n, r) => n + r.lost, 0);
    const inputs = rows.reduce((n, r) => n + (r.inputs ?? 0), 0);
    const lines = [
      "",
      "Fault suite report",
      ...rows.map((r) => `- ${r.scenario}: load ${r.load}; faults ${r.faults}${r.inputs ? `; ${r.inputs} inputs tried` : ""}; events lost ${r.lost}${r.notes ? `; ${r.notes}` : ""}`),
      `Total: ${rows.length} scenarios, ${inputs} inputs tried, ${lost} events lost${lost === 0 ? "" : " — MUST BE 0"}.`,
      "",
    ];
    process.stdout.write(lines.join("\n"));
    rmSync(dir, { recursive: true, force: true });
  };
}
